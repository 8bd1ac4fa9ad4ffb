"""The benchmark CLI runs and reports its figures (figures themselves are never asserted on timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train3d_reports_step_time_and_peak_memory_per_configuration(tmp_path):
    out = tmp_path / "train3d.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "brats_keras.bench", "train3d", "--models", "unet3d_simple,no_such_model",
         "--batch-sizes", "1", "--size", "16", "--steps", "1", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    rows = json.loads(out.read_text())["train3d"]
    assert proc.returncode == 1  # one configuration failed, and the exit status says so
    ok, failed = rows
    assert ok["model"] == "unet3d_simple" and ok["size"] == 16 and ok["batch_size"] == 1
    assert ok["step_s"] > 0 and ok["forward_s"] > 0 and ok["peak_host_mb"] > 100 and ok["peak_device_mb"] is None
    assert failed["model"] == "no_such_model" and "no_such_model" in failed["error"]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert printed == rows


def test_inference_reports_seconds_per_case_and_peak_memory_per_model_kind(synthetic_brats, tmp_path):
    out = tmp_path / "inference.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "brats_keras.bench", "inference", "--data-dir", str(synthetic_brats),
         "--image-size", "32", "--filters", "2", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["inference"]
    assert [r["kind"] for r in rows] == ["2d", "3d"]
    two_d, three_d = rows
    assert two_d["model"] == "u_resunet" and three_d["model"] == "unet3d_modified"
    assert two_d["cases"] == three_d["cases"] == 6
    assert three_d["items_per_case"] == 8 and three_d["overlap"] == 0.5  # 48×48×40 in 32³ windows
    for row in rows:
        assert row["s_per_case"] >= row["predict_s_per_case"] > 0 and row["first_case_s"] > 0
        assert row["peak_host_mb"] > 100 and row["peak_device_mb"] is None
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert printed == rows
