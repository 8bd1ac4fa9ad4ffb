"""TensorFlow's start-up noise on a machine without an NVIDIA GPU: filtered, and nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brats_keras.runtime import filter_startup_noise, filtered_stderr, nvidia_gpu_present
from tests.helpers import REPO

# what TensorFlow 2.21 printed on this CPU machine (one of each; the first three come twice)
NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796622260.178760   22603 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. To "
    b"turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
    b"I0000 00:00:1796622260.179058   22603 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    b"will not be used.\n"
    b"I0000 00:00:1796622260.223025   22603 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.\n"
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n"
    b"E0000 00:00:1796622264.358160   22603 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    b"Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
REAL = (b"E0000 00:00:1796622264.4   22603 op_kernel.cc:1] a real error\n"
        b"To enable the following instructions: not after the feature guard, so kept\n")
NOISY_MARKERS = ("cuInit", "CUDA error", "E0000", "absl::InitializeLog", "cudart_stub", "cpu_feature_guard")


def test_filter_removes_exactly_the_startup_lines():
    assert filter_startup_noise(NOISE) == b""
    assert filter_startup_noise(NOISE + REAL + b"unterminated") == REAL + b"unterminated"
    for line in NOISE.splitlines(keepends=True):
        assert filter_startup_noise(b"x " + line) == b"x " + line  # not at a line start: kept


def test_filtered_stderr_keeps_order_and_other_lines(capfd):
    print("before", file=sys.stderr, flush=True)
    with filtered_stderr():
        os.write(2, NOISE[:200] + NOISE[200:])
        print("python line", file=sys.stderr)  # buffered Python output is flushed into the filter
        os.write(2, REAL)
    print("after", file=sys.stderr, flush=True)
    assert capfd.readouterr().err == "before\npython line\n" + REAL.decode() + "after\n"


def test_gpu_rule(tmp_path, monkeypatch):
    dev, path = tmp_path / "dev", tmp_path / "bin"
    dev.mkdir()
    path.mkdir()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not nvidia_gpu_present(str(dev), str(path))
    (dev / "nvidia-caps").mkdir()  # not a GPU node
    assert not nvidia_gpu_present(str(dev), str(path))
    for node in ("nvidia0", "nvidiactl", "dxg"):
        (dev / node).touch()
        assert nvidia_gpu_present(str(dev), str(path)), node
        (dev / node).unlink()
    smi = path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert nvidia_gpu_present(str(dev), str(path))
    (dev / "nvidia0").touch()
    for hidden in ("-1", "", " -1 "):  # the user hid the GPUs
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not nvidia_gpu_present(str(dev), str(path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert nvidia_gpu_present(str(dev), str(path))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """``python -c code`` with a clean environment (PATH, HOME, the repository on PYTHONPATH)."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(REPO),
             **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, cwd=REPO,
                          timeout=300)


needs_no_gpu = pytest.mark.skipif(nvidia_gpu_present(), reason="checks the start-up of a machine without a GPU")
PROBE = ("import os, brats_keras; "
         "env = os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'); "
         "import tensorflow as tf; print(tf.config.list_physical_devices('GPU')); print(*env)")
"""Lists the GPUs and prints the two variables as ``import brats_keras`` left them (TensorFlow's own
import sets ``TF_CPP_MIN_LOG_LEVEL=1`` when it is unset)."""


@needs_no_gpu
def test_no_cuda_startup_noise_without_a_gpu():
    proc = _python(PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["[]", "None None"]  # no GPU listed, no variable set
    bad = [line for line in proc.stderr.splitlines() if any(m in line for m in NOISY_MARKERS)]
    assert not bad, proc.stderr[-3000:]


@needs_no_gpu
def test_user_settings_are_respected():
    # TF_CPP_MIN_LOG_LEVEL=0: the user asked for every C++ line, so nothing is filtered
    proc = _python(PROBE, TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["[]", "None 0"]
    assert "cudart_stub" in proc.stderr and "cuInit" in proc.stderr
    # a CUDA_VISIBLE_DEVICES the user set is left as it is (and still no noise on this machine)
    proc = _python(PROBE, CUDA_VISIBLE_DEVICES="0")
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["[]", "0 None"], proc.stderr[-3000:]
    assert not [line for line in proc.stderr.splitlines() if any(m in line for m in NOISY_MARKERS)]
