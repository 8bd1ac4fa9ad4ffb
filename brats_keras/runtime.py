"""Quiet TensorFlow start-up on a machine without an NVIDIA GPU (this module imports no TensorFlow).

On a CPU-only machine ``import tensorflow`` writes C++ start-up lines to standard error before
Python gets control back, and the first device query adds a CUDA error:

* ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``,
  oneDNN's ``port.cc`` "custom operations are on" and ``cudart_stub.cc`` "Could not find cuda
  drivers" — each twice (two shared libraries log them as they load);
* ``cpu_feature_guard.cc`` "This TensorFlow binary is optimized ..." and its ``To enable ...`` line;
* ``E0000 ... cuda_platform.cc] failed call to cuInit: ... CUDA error ... (303)``.

No environment variable removes them all (measured with TensorFlow 2.21): the first three are
logged by static initialisers before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so even level 3
keeps them; ``CUDA_VISIBLE_DEVICES=-1`` does not stop ``cuInit`` being called and failing; level 3
hides the ``cuInit`` line, but also every other C++ error. So :func:`quiet_tensorflow_startup`
filters instead: when there is no NVIDIA GPU it installs an import hook that, while the
``tensorflow`` package is first imported and its physical devices are first listed, sends file
descriptor 2 to a temporary file and then writes back every line except exactly those above
(:data:`STARTUP_NOISE`). Nothing else is hidden, no variable is set or changed, and the device
list is the one TensorFlow would give anyway. One limit: a hard crash inside ``import
tensorflow`` on such a machine loses what it printed — rerun with ``TF_CPP_MIN_LOG_LEVEL=0``.

The rule for "no NVIDIA GPU" (:func:`nvidia_gpu_present`) errs towards "present", where nothing is
filtered: a GPU is present when ``/dev`` holds ``nvidia0``, ``nvidia1`` ... or ``nvidiactl`` (Linux,
containers started with GPUs), or ``dxg`` (WSL 2), or ``nvidia-smi`` is on ``PATH``; a user who set
``CUDA_VISIBLE_DEVICES`` to ``""`` or ``-1`` has hidden the GPUs, and then the CUDA lines are the
expected noise of that choice and are filtered too.

It does nothing when ``tensorflow`` is already imported, when a GPU is present, or when the user
set ``TF_CPP_MIN_LOG_LEVEL=0`` (asking for every C++ log line). ``import brats_keras`` calls it,
so every entry point that imports the package before TensorFlow (``python -m brats_keras``, the
benchmark, ``data_prep/*.py``) starts quietly; a script that imports ``keras`` or ``tensorflow``
first must import ``brats_keras`` (or call this function) before them.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import os
import re
import shutil
import sys
import tempfile
from typing import Iterator

STARTUP_NOISE = (
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(rb"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. "),
    re.compile(rb"^I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, "
               rb"GPU will not be used\.$"),
    re.compile(rb"^I\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized "),
    re.compile(rb"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: "),
)
"""The start-up lines filtered on a machine without an NVIDIA GPU (whole lines, bytes)."""
_FEATURE_GUARD_TAIL = re.compile(rb"^To enable the following instructions: .*rebuild TensorFlow with the appropriate "
                                 rb"compiler flags\.$")
"""The second line of the ``cpu_feature_guard`` message; filtered only right after its first."""


def nvidia_gpu_present(dev: str = "/dev", path: str | None = None) -> bool:
    """True when this machine may have a usable NVIDIA GPU (the rule in the module docstring).

    ``dev`` and ``path`` (default ``$PATH``) are there for tests. ``CUDA_VISIBLE_DEVICES`` set to
    ``""`` or ``-1`` counts as no GPU (the user hid them).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    devices = glob.glob(os.path.join(dev, "nvidia[0-9]*")) + [
        p for p in (os.path.join(dev, "nvidiactl"), os.path.join(dev, "dxg")) if os.path.exists(p)]
    return bool(devices) or shutil.which("nvidia-smi", path=path) is not None


def filter_startup_noise(data: bytes) -> bytes:
    """``data`` (what was written to standard error) without the lines of :data:`STARTUP_NOISE`;
    every other line, and any unterminated last line, is kept byte for byte."""
    kept: list[bytes] = []
    after_guard = False
    for line in data.splitlines(keepends=True):
        text = line.rstrip(b"\r\n")
        if after_guard and _FEATURE_GUARD_TAIL.match(text):
            after_guard = False
            continue
        after_guard = bool(STARTUP_NOISE[3].match(text))
        if not any(pattern.match(text) for pattern in STARTUP_NOISE):
            kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then write back what was written
    to it without the start-up noise (:func:`filter_startup_noise`). Python's ``sys.stdout`` and
    ``sys.stderr`` are flushed at both ends so their lines keep their order. Without a usable
    descriptor 2 the block runs unfiltered."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = memoryview(filter_startup_noise(tmp.read()))
            while kept:
                kept = kept[os.write(2, kept):]


class _QuietLoader(importlib.abc.Loader):
    """Runs the ``tensorflow`` package's loader, then lists the physical devices once (the first
    ``cuInit``), inside :func:`filtered_stderr`; everything else is the wrapped loader's."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            with contextlib.suppress(Exception):  # the same query (and result) any later call gets
                module.config.list_physical_devices("GPU")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` entry that wraps the loader of the first ``import tensorflow`` in a
    :class:`_QuietLoader` and then removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow_startup() -> bool:
    """Hide TensorFlow's CUDA / oneDNN / absl start-up lines on a machine without an NVIDIA GPU.

    Installs the import hook of the module docstring when ``tensorflow`` is not imported yet, no
    GPU is present (:func:`nvidia_gpu_present`) and ``TF_CPP_MIN_LOG_LEVEL`` is not ``0``. Returns
    whether the hook is installed (now or by an earlier call). Sets no environment variable.
    """
    if any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        return True
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0":
        return False
    if nvidia_gpu_present():
        return False
    sys.meta_path.insert(0, _QuietTensorFlowImport())
    return True


def tensorflow_import_error() -> str | None:
    """``None`` when ``import tensorflow`` works here (it is then imported: the caller uses it next), else
    why not, as one line (``"ModuleNotFoundError: No module named 'tensorflow'"``).

    For what needs TensorFlow on any backend (SavedModel export, TensorBoard logs): on JAX without
    TensorFlow installed it is skipped with this reason, not failed (docs/dependencies.md)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
