"""Runs every ``backend_agnostic`` test again with ``KERAS_BACKEND=jax``, in subprocesses.

The JAX run is split into shards of test files (one subprocess each) so that the suite's pytest-xdist
workers share it instead of one worker running all of it at the end; every file holding a
``backend_agnostic`` test is in exactly one shard (files not named below go to the last one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARDS = (
    ("test_models_paper4.py",),
    ("test_models_paper1.py", "test_enhancer.py"),
    ("test_models_paper2.py", "test_layers.py"),
)
"""Files by shard, sized by their JAX run time on 2 cores (paper 4's models ~75 s; 1 + enhancer ~85 s;
2 + layers ~75 s; the rest ~85 s)."""


def agnostic_files() -> list[str]:
    """Test files that hold a ``backend_agnostic`` test (a marker on a test or on the module)."""
    return sorted(p.name for p in (REPO / "tests").glob("test_*.py")
                  if p.name != Path(__file__).name and "backend_agnostic" in p.read_text(encoding="utf-8"))


def shard_files(i: int) -> list[str]:
    files = agnostic_files()
    named = {f for shard in SHARDS for f in shard}
    return [f for f in SHARDS[i] if f in files] if i < len(SHARDS) else [f for f in files if f not in named]


def test_every_agnostic_file_is_in_one_shard():
    shards = [shard_files(i) for i in range(len(SHARDS) + 1)]
    flat = [f for shard in shards for f in shard]
    assert sorted(flat) == agnostic_files() and len(flat) == len(set(flat)) and all(shards)
    assert "test_metrics.py" in shards[-1]  # a file not named in SHARDS is still run


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(len(SHARDS) + 1))
def test_backend_agnostic_tests_pass_on_jax(shard):
    pytest.importorskip("jax", reason="jax is part of the [test] extra")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    files = [f"tests/{name}" for name in shard_files(shard)]
    proc = subprocess.run(
        # -n 0: one process (the suite's own pytest-xdist workers already share the cores)
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "backend_agnostic", "-p", "no:cacheprovider", *files],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout
    if shard == 0:  # the subprocesses really ran Keras on JAX
        assert "jax" in subprocess.run([sys.executable, "-c", "import keras; print(keras.backend.backend())"],
                                       env=env, capture_output=True, text=True).stdout
