"""End-to-end runs of experiments/paper2_attention_unet3d.py on tiny synthetic data (32³ crops, 2 filters)
with an external BraTS 2021-layout cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    REPO, TINY_SHAPE, export_tolerance, history_epochs, predict_and_evaluate, run_experiment, save_nifti,
)

SCRIPT = REPO / "experiments" / "paper2_attention_unet3d.py"
TINY = ["--epochs", "1", "--crop", "8:40,8:40,4:36", "--filters", "2", "--jit-compile", "off"]  # XLA compiles slowly
MODELS = ("unet3d_simple", "unet3d_modified", "unet3d_spatial_attention")


@pytest.fixture(scope="module")
def cohort_2021(tmp_path_factory) -> Path:
    """Three tiny synthetic cases in the BraTS 2021 layout (another seed: the external cohort)."""
    from brats_keras.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("external") / "brats2021"
    write_dataset(root, dataset="brats2021", cases=3, seed=11, shape=TINY_SHAPE, progress=False)
    return root


def run_script(*args, cache, timeout=900):
    return run_experiment(SCRIPT, *args, cache=cache, timeout=timeout)


@pytest.mark.slow
def test_tiny_run_with_external_cohort_writes_every_output(synthetic_brats, cohort_2021, tmp_path):
    out = tmp_path / "run"
    proc = run_script("--data-dir", str(synthetic_brats), "--test-dir", str(cohort_2021), "--out", str(out), *TINY,
                      "--batch-size", "2", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SYNTHETIC" in proc.stdout

    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    for model in MODELS:
        for name in ("curves", "overlay"):
            png = out / "plots" / f"{model}_{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
        sub = out / model
        assert (sub / "model.keras").is_file() and (sub / "saved_model" / "saved_model.pb").is_file()
        assert (sub / "checkpoints" / "state.json").is_file() and any((sub / "logs").iterdir())
        assert history_epochs(sub / "history.csv") == [0]

    split = json.loads((out / "split.json").read_text())
    results = json.loads((out / "results.json").read_text())
    kept = sorted(split["train"] + split["val"])
    assert not set(split["train"]) & set(split["val"]) and split["test"] == []
    assert len(split["val"]) == round(0.25 * len(kept))  # the paper's 75:25
    assert len(kept) + len(split["skipped"]) == 6  # every case is either kept or skipped with a reason
    config = json.loads((out / "config.json").read_text())
    assert config["synthetic"] is True and config["train"]["batch_size"] == 2
    assert config["data"]["preprocess"]["crop"] == [[8, 40], [8, 40], [4, 36]]
    assert config["train"]["learning_rate"] == 1e-4 and config["train"]["optimizer"] == "adam"
    assert config["train"]["jit_compile"] is False  # --jit-compile off (the paper profile's XLA: test_configs)

    assert results["synthetic"] is True and set(results["models"]) == set(MODELS)
    for entry in results["models"].values():
        cohorts = entry["cohorts"]
        assert set(cohorts) == {"train-2020", "val-2020", "test-2021"}
        assert cohorts["test-2021"]["cases"] == 3  # the external cohort is never filtered by its labels
        assert cohorts["val-2020"]["cases"] == len(split["val"])
        for scores in cohorts.values():
            per_case = [case["WT"]["dice"] for case in scores["per_case"].values()]
            assert len(per_case) == scores["cases"]
            assert scores["summary"]["WT"]["dice"]["mean"] == pytest.approx(np.mean(per_case), abs=1e-12)
            assert set(scores["summary"]) == {"ET", "TC", "WT"}
            for region in scores["summary"].values():
                assert set(region) == {"dice", "hd95", "sensitivity", "specificity"}
        assert {"accuracy", "val_accuracy", "iou", "val_iou", "loss"} <= set(entry["last_epoch"])
        assert entry["export_max_abs_diff"]["saved_model"] < export_tolerance(entry)
        assert entry["peak_host_memory_mb"] > 0

    table = (out / "table.md").read_text()
    assert "Table III" in table and "Table IV" in table and "HD95" in table
    assert "0.9942" in table and "0.9067" in table  # paper values in their paper columns
    assert "| Spatial-attention U-Net | test-2021 |" in table
    assert "synthetic" in table.lower()

    # the trained attention U-Net predicts the external cohort's whole volumes in 32³ windows
    spec = json.loads((out / "unet3d_spatial_attention" / "inference.json").read_text())
    assert spec["kind"] == "volume3d" and spec["volume"]["crop"] == [[8, 40], [8, 40], [4, 36]]
    pred = tmp_path / "pred"
    rows = predict_and_evaluate(out / "unet3d_spatial_attention" / "model.keras", cohort_2021, pred,
                                tmp_path / "scores.csv")
    assert {r["case"] for r in rows} == {p.name for p in cohort_2021.iterdir() if p.is_dir()}
    record = json.loads((pred / "predictions.json").read_text())
    assert {c["windows"] for c in record["cases"].values()} == {8}  # 48×48×40 in 32³ windows at overlap 0.5


@pytest.mark.slow
def test_one_model_and_resume_continue_the_same_run(synthetic_brats, cohort_2021, tmp_path):
    out = tmp_path / "run"
    common = ["--data-dir", str(synthetic_brats), "--test-dir", str(cohort_2021), "--model", "unet3d_simple",
              "--crop", "8:40,8:40,4:36", "--filters", "2", "--max-eval-cases", "1", "--jit-compile", "auto"]
    first = run_script(*common, "--out", str(out), "--epochs", "1", cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-4000:]
    assert not (out / "unet3d_modified").exists()
    # "auto": Keras decides (no XLA on CPU)
    assert json.loads((out / "config.json").read_text())["train"]["jit_compile"] == "auto"
    split_before = (out / "split.json").read_text()
    resumed = run_script(*common, "--resume", str(out), "--epochs", "2", cache=tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert history_epochs(out / "unet3d_simple" / "history.csv") == [0, 1]
    assert (out / "split.json").read_text() == split_before
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["unet3d_simple"]["epochs_run"] == 2
    assert all(s["cases"] == 1 for s in results["models"]["unet3d_simple"]["cohorts"].values())
    table = (out / "table.md").read_text()
    assert "| Modified U-Net | not run |" in table  # rows of models not trained are marked, never filled


def test_bad_label_in_external_cohort_is_one_line_error(synthetic_brats, cohort_2021, tmp_path):
    bad = tmp_path / "brats2021"
    bad.mkdir()
    case = sorted(p for p in cohort_2021.iterdir() if p.is_dir())[0]
    (bad / case.name).mkdir()
    for src in case.iterdir():
        (bad / case.name / src.name).write_bytes(src.read_bytes())
    seg = bad / case.name / f"{case.name}_seg.nii.gz"
    label = np.zeros(TINY_SHAPE, np.uint8)
    label[10:20, 10:20, 10:20] = 3  # BraTS 2023 convention: must be reported, not trained on
    save_nifti(seg, label)
    proc = run_script("--data-dir", str(synthetic_brats), "--test-dir", str(bad), "--out", str(tmp_path / "run"),
                      *TINY, cache=tmp_path / "cache")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and seg.name in last and "3" in last
    assert not (tmp_path / "run" / "unet3d_simple").exists()  # nothing trained on a cohort that failed validation


def test_help_documents_the_contract_and_paper_defaults(tmp_path):
    proc = run_script("--help", cache=tmp_path)
    assert proc.returncode == 0
    for flag in ("--data-dir", "--test-dir", "--out", "--epochs", "--batch-size", "--seed", "--resume", "--quick",
                 "--model", "--crop", "--scaling", "--attention-activation", "--max-eval-cases"):
        assert flag in proc.stdout
    words = " ".join(proc.stdout.split())  # argparse wraps the help text
    assert "paper profile: 100 — paper §VIII: 100 epochs; quick profile: 50" in words
    assert "paper profile: 2 — paper §VIII / Table II" in words
    assert "paper profile: 56:184,56:184,13:141 — reference code; quick profile: 14:46,14:46,3:35" in words


def test_attention_in_decoder_reaches_the_spatial_attention_model_only():
    from types import SimpleNamespace

    from brats_keras.runner import build_parser, resolve_config
    from experiments.paper2_attention_unet3d import Paper2

    experiment = Paper2()
    args = build_parser(experiment).parse_args(["--attention-in-decoder", "--crop", "0:16,0:16,0:16", "--filters", "2"])
    config = resolve_config(experiment, args, quick=True)
    assert config.models["unet3d_spatial_attention"].options.attention_in_decoder is True
    ctx = SimpleNamespace(config=config)

    def attention_layers(name):
        return [layer.name for layer in experiment.build(ctx, name).layers if layer.name.endswith("_attention")]

    assert [n for n in attention_layers("unet3d_spatial_attention") if "_dec" in n] == [
        f"unet3d_spatial_attention_dec{j}_attention" for j in range(1, 5)]
    assert attention_layers("unet3d_simple") == []  # the option is the proposed model's, dropped for the others
    default = resolve_config(experiment, build_parser(experiment).parse_args(["--crop", "0:16,0:16,0:16"]), quick=True)
    assert default.models["unet3d_spatial_attention"].options.attention_in_decoder is False  # the published reading: encoder only
