"""Runs every ``backend_agnostic`` test again with ``KERAS_BACKEND=jax`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_backend_agnostic_tests_pass_on_jax():
    pytest.importorskip("jax", reason="jax is part of the [test] extra")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        # -n 0: one process (the suite's own pytest-xdist workers already share the cores)
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "backend_agnostic", "-p", "no:cacheprovider", "tests"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "jax" in subprocess.run(
        [sys.executable, "-c", "import keras; print(keras.backend.backend())"], env=env, capture_output=True,
        text=True).stdout
