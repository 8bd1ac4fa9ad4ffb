"""The benchmark CLI runs and reports its figures (figures themselves are never asserted on timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brats_keras import bench
from brats_keras.precision import resolve_precision

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


TRAIN_FIELDS = {"model", "batch_size", "size", "input_shape", "sample", "backend", "device", "precision",
                "precision_requested", "precision_reason", "compute_dtype", "jit_compile_used", "loss",
                "step_s", "samples_per_s", "forward_flop_per_sample", "train_flop_per_step",
                "achieved_gflops", "matmul_gflops", "matmul_dtype", "fraction_of_matmul", "peak_host_mb",
                "peak_device_mb", "uncounted_layers"}


def _train(args, tmp_path, env=None):
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, "-m", "brats_keras.bench", "train", *args, "--steps", "1", "--warmup", "1",
         "--filters", "2", "--json", str(out)],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")] == data["train"]
    assert "training step = 3 x forward" in data["flop_convention"] and data["flop_convention"] in proc.stdout
    return data["train"], proc.stdout


def test_train_one_reports_step_time_flops_and_the_matmul_ceiling():
    """One configuration in this process (the CLI's children run this; the JAX test below runs the CLI)."""
    import keras

    row = bench.bench_train_one("unet2d", 2, 32, "auto", steps=1, warmup=1, filters=2)
    assert TRAIN_FIELDS <= set(row) and keras.config.dtype_policy().name == "float32"  # policy restored
    assert row["model"] == "unet2d" and row["batch_size"] == 2 and row["input_shape"] == [32, 32, 2]
    assert row["backend"] == keras.backend.backend() and row["sample"] == "slice"
    assert row["loss"] == "categorical_crossentropy"  # paper 1's loss
    assert row["step_s"] > 0 and row["samples_per_s"] > 0 and row["peak_host_mb"] > 100
    assert row["train_flop_per_step"] == 3 * 2 * row["forward_flop_per_sample"] > 0
    assert row["matmul_gflops"] > 0 and row["uncounted_layers"] == []
    assert abs(row["fraction_of_matmul"] - row["achieved_gflops"] / row["matmul_gflops"]) < 0.01
    assert row["matmul_dtype"] == row["compute_dtype"]
    expected = resolve_precision("auto")
    assert (row["precision_requested"], row["precision"], row["precision_reason"]) == (
        "auto", expected.policy, expected.reason)
    assert row["compute_dtype"] == ("bfloat16" if row["precision"] == "mixed_bfloat16" else "float32")


def test_train_runs_on_jax_without_tensorflow_one_row_per_precision(tmp_path):
    """The GPU machine has JAX and no TensorFlow: every process of the benchmark must do without it."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None  # import fails\n")
    path = os.pathsep.join([str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")])
    # XLA's CPU optimisation passes cost ~1 s per initializer shape under load; timings are not asserted here
    env = {"KERAS_BACKEND": "jax", "PYTHONPATH": path, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    rows, stdout = _train(["--models", "unet3d_simple", "--batch-sizes", "1", "--size", "16", "--precision",
                      "auto,mixed_bfloat16"], tmp_path, env)
    auto, bf16 = rows
    for row in rows:
        assert TRAIN_FIELDS <= set(row)
        assert row["backend"] == "jax" and row["jit_compile_used"] is True and row["input_shape"] == [16, 16, 16, 3]
        assert row["sample"] == "volume" and row["loss"] == "dice_focal"  # paper 2's loss
        assert row["train_flop_per_step"] == 3 * row["forward_flop_per_sample"] > 0
        assert row["matmul_engine"] == "jax.jit" and row["matmul_dtype"] == row["compute_dtype"]
    assert auto["precision_requested"] == "auto"
    assert f"precision: {auto['precision']} (auto: {auto['precision_reason']})" in stdout
    assert "precision: mixed_bfloat16 (asked for: --precision)" in stdout
    if auto["device"].startswith("cpu"):  # JAX's CPU kernels have no native bfloat16: auto is float32 there
        assert auto["precision"] == "float32" and auto["peak_device_mb"] is None
    assert bf16["precision"] == bf16["precision_requested"] == "mixed_bfloat16" and bf16["compute_dtype"] == "bfloat16"
    assert auto["forward_flop_per_sample"] == bf16["forward_flop_per_sample"]


@pytest.mark.parametrize("args, message", [
    (["--models", "unet2d,no_such_model"], "--models: 'no_such_model' is not a model bench train knows"),
    (["--precision", "float32,float64"], "--precision: 'float64' is not one of auto, float32, mixed_bfloat16"),
    (["--batch-sizes", "2,0"], "--batch-sizes: '0' is not a positive integer"),
    (["--size", "40"], "--size: 40 is not a multiple of 16"),
    (["--steps", "0"], "--steps: 0 must be at least 1"),
])
def test_train_checks_its_flags_before_building_any_model(args, message, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the flags were checked")

    monkeypatch.setattr(bench, "bench_train", no_model)
    monkeypatch.setattr(bench, "make_model", no_model)
    assert bench.main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
