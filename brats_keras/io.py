"""Shared file helpers: atomic writes, the cache folder, JSON reading and the history CSV.

Atomic writes (:func:`atomic_path`, :func:`atomic_dir`, :func:`atomic_write_text`,
:func:`atomic_write_json`, :func:`atomic_save_npy`): a reader never sees a half-written file under its
final name. :func:`default_cache_dir` is the root of every decode-once cache. :func:`write_history_csv`
/ :func:`read_history_csv` read and write a history in the ``keras.callbacks.CSVLogger`` format (an
``epoch`` column counted from 0, then the logged metrics in sorted order). NumPy and the standard
library only: every layer of the package may import this module.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the destination folder; on success move it over ``path``.

    ``suffix`` ends the temporary name, for writers that insist on an extension (``.keras``,
    ``.nii.gz``); temporary names always contain ``.tmp`` and start with a dot. On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp creates 0600; give the file the usual umask mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NumPy scalars and arrays, paths as plain values) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` (C-contiguous) as a ``.npy`` file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (a manifest to rebuild)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (any old folder is
    removed only once the new one is complete)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def default_cache_dir() -> Path:
    """``$BRATS_KERAS_CACHE`` or ``~/.cache/brats_keras``."""
    env = os.environ.get("BRATS_KERAS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "brats_keras"


# --------------------------------------------------------------------------------------------
# History (Keras History.history, CSVLogger files)
# --------------------------------------------------------------------------------------------


def history_dict(history: Any) -> dict[str, list[float]]:
    """Accept a ``keras.callbacks.History`` or its ``.history`` dict; check equal lengths."""
    history = getattr(history, "history", history)
    if not isinstance(history, Mapping):
        raise ValueError(f"history: expected a mapping metric -> list of values, got {type(history).__name__}")
    out = {}
    for name, values in history.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"history[{name!r}]: expected a list of per-epoch values, got {values!r}")
        out[str(name)] = [float(v) for v in values]
    lengths = {name: len(v) for name, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history: metrics have different numbers of epochs: {lengths}")
    return out


def write_history_csv(history: Any, path: str | os.PathLike, *, sep: str = ",") -> Path:
    """Write a history in ``keras.callbacks.CSVLogger``'s format (atomically) and return the path.

    Columns: ``epoch`` (counted from 0, as CSVLogger writes it), then the metrics in sorted order.
    """
    hist = history_dict(history)
    names = sorted(hist)
    n = len(hist[names[0]]) if names else 0
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=sep)
            writer.writerow(["epoch"] + names)
            for epoch in range(n):
                writer.writerow([epoch] + [repr(hist[name][epoch]) for name in names])
    return path


def read_history_csv(path: str | os.PathLike, *, sep: str = ",") -> dict[str, list[float]]:
    """Read a ``keras.callbacks.CSVLogger`` file back into a ``History.history``-style dict.

    - The ``epoch`` column (0-based) orders the rows and is not returned; use
      :func:`brats_keras.reporting.history_to_epoch_dict` for 1-based epochs.
    - A run resumed with ``CSVLogger(append=True)`` may log an epoch twice; the last line wins.
      A gap in the epochs (e.g. 0, 1, 4) cannot be a history and raises ``ValueError``.
    - CSVLogger writes ``NA`` for a metric missing at an epoch; it is read as NaN. A column that
      is ``NA`` throughout (CSVLogger adds ``val_*`` columns even to a run without validation) is
      dropped, so "never measured" stays distinguishable from a measured value.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=sep)
        if not reader.fieldnames or "epoch" not in reader.fieldnames:
            raise ValueError(f"{path}: not a CSVLogger history (no 'epoch' column in {reader.fieldnames})")
        names = [n for n in reader.fieldnames if n != "epoch"]
        by_epoch: dict[int, dict[str, float]] = {}
        for line_no, row in enumerate(reader, start=2):
            try:
                epoch = int(row["epoch"])
                values = {n: (math.nan if row[n] in ("NA", "", None) else float(row[n])) for n in names}
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: unreadable history row {row!r} ({exc})") from None
            by_epoch[epoch] = values
    epochs = sorted(by_epoch)
    if epochs and epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        missing = sorted(set(range(epochs[0], epochs[-1] + 1)) - set(epochs))
        raise ValueError(f"{path}: epochs {missing} are missing from the history")
    history = {n: [by_epoch[e][n] for e in epochs] for n in names}
    return {n: v for n, v in history.items() if not all(math.isnan(x) for x in v) or not v}
