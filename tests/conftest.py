"""Shared fixtures: tiny BraTS-layout folders, written exactly as the real releases name them."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# precision "auto" on a CPU follows a measured bfloat16 speed-up; the suite pins it below the 1.2x threshold
# (float32), so that its results do not depend on which CPU it runs on (test_precision tests the rule itself)
os.environ.setdefault("BRATS_KERAS_CPU_BF16_SPEEDUP", "1.0")

import pytest  # noqa: E402

from tests.helpers import TINY_SHAPE, blob_case, write_case  # noqa: E402


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker more than the cores (at most 4, setup.cfg's ``--maxprocesses``). Many tests
    wait on a subprocess's start-up or on files for part of their time; on 2 cores the suite used 1.57 of
    them on average with 2 workers (22.6 min user over 15.3 min wall, measured)."""
    from brats_keras.precision import cpu_cores

    return min(4, cpu_cores() + 1)


@pytest.fixture
def blob_dataset(tmp_path) -> Path:
    """Three hand-made BraTS 2020 cases (fast to write, easy to corrupt)."""
    root = tmp_path / "brats2020"
    for k in range(1, 4):
        images, label = blob_case(seed=k)
        write_case(root, f"BraTS20_Training_{k:03d}", images, label)
    return root


@pytest.fixture(scope="session")
def synthetic_brats(tmp_path_factory) -> Path:
    """Six tiny synthetic BraTS 2020 cases from the project's synthesizer (written once per session)."""
    from brats_keras.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synthetic") / "brats2020"
    write_dataset(root, dataset="brats2020", cases=6, seed=3, shape=TINY_SHAPE, progress=False)
    return root
