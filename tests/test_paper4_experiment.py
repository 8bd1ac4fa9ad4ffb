"""Paper 4 end to end on a tiny SYNTHETIC figshare set (64² slices): a baseline, the ablation and the
proposed model, every output file, the stratified patient split, the JI ≤ DSC audit on the
measured numbers, resume, and a corrupt .mat file stopping the run with one line naming it."""

from __future__ import annotations

import json

import pytest

from brats_keras.data.figshare import FIGSHARE_LABELS, read_figshare_metas, write_figshare_dataset
from brats_keras.papers import paper4
from tests.helpers import REPO, export_tolerance, history_epochs, run_experiment

SCRIPT = REPO / "experiments" / "paper4_lstm_effunet.py"
SMALL = ["--batch-size", "4", "--image-size", "64", "--pretrain-epochs", "1", "--encoder-weights", "none"]
TINY = ["--epochs", "2", *SMALL]
RUNS = ("unet", "effunet", "proposed")
"""The tiny run's models: a baseline, the ablation and the proposed model (the other two baselines are
the same builder with attention / residual blocks, tested at 64² in test_models_paper4.py; leaving
them out keeps the suite inside its time budget)."""
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def figshare_set(tmp_path_factory):
    """Nine synthetic patients (three of each tumour type) of two 128² slices, as the release lays them out."""
    root = tmp_path_factory.mktemp("figshare") / "brainTumorDataPublic"
    write_figshare_dataset(root, patients=9, slices_per_patient=2, seed=5, size=128, progress=False)
    return root


@pytest.mark.slow
def test_tiny_run_of_three_models_writes_every_output(figshare_set, tmp_path):
    out = tmp_path / "run"
    proc = run_experiment(SCRIPT, "--data-dir", str(figshare_set), "--out", str(out), "--models", *RUNS, *TINY,
                          cache=tmp_path / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SYNTHETIC" in proc.stdout and "random initialisation (--encoder-weights none)" in proc.stdout

    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    for png in ("training_curves.png", "table2_segmentations.png", "enhancer_denoising.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, png

    # the split is by patient and stratified by tumour type: every type is in every part
    split = json.loads((out / "split.json").read_text())
    types = {m.pid: m.label for m in read_figshare_metas(sorted(figshare_set.glob("*.mat")))}
    assert sorted(p for part in ("train", "val", "test") for p in split[part]) == sorted(types)
    for part in ("train", "val", "test"):
        assert {types[p] for p in split[part]} == set(FIGSHARE_LABELS), part

    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True and results["encoder_weights"] == "random"
    assert set(results["models"]) == set(RUNS)
    for key, entry in results["models"].items():
        sub = out / key
        assert (sub / "model.keras").is_file() and (sub / "saved_model" / "saved_model.pb").is_file(), key
        assert history_epochs(sub / "history.csv") == [0, 1] and entry["epochs_run"] == 2
        assert entry["export_max_abs_diff"]["saved_model"] < export_tolerance(entry)
        test = entry["test"]
        assert test["images"] == 2 * len(split["test"])
        assert set(test["mean"]) == {"dice", "iou", "precision", "sensitivity", "accuracy", "f1"}
        pooled = test["pooled"]
        # the audit's identities on the measured numbers: JI = DSC / (2 − DSC) ≤ DSC, F1 = DSC
        assert pooled["iou"] == pytest.approx(pooled["dice"] / (2 - pooled["dice"]), abs=1e-9)
        assert pooled["f1"] == pytest.approx(pooled["dice"], abs=1e-9)
        assert all(s["iou"] <= s["dice"] + 1e-12 for s in test["per_image"])
        # scored at the source resolution (128²), the model ran at 64²
        assert sum(test["pooled_counts"].values()) == test["images"] * 128 * 128
    # the LSTM stage: pre-trained denoiser, copied into the proposed model, reported
    enhancer = results["enhancer"]
    assert (out / "enhancer" / "model.keras").is_file() and len(enhancer["history"]["loss"]) == 1
    assert enhancer["report"]["images"] == 2 * len(split["test"])

    table = (out / "table.md").read_text()
    assert "Table 3" in table and "synthetic" in table.lower()
    for paper_value in ("83.45", "84.20", "92.25", "97.03"):  # the paper column
        assert paper_value in table
    assert "LSTM ablation" in table and "Audit: JI ≤ DSC" in table and "DSC by tumour type" in table
    assert "random initialisation" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| Attention U-Net")
            or line.startswith("| Res Attention U-Net")}
    assert len(rows) == 2 and all("not run" in line for line in rows.values())  # paper rows kept, marked


@pytest.mark.slow
def test_resume_continues_the_same_run(figshare_set, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--data-dir", str(figshare_set), "--out", str(out), "--models", "unet", *SMALL]
    first = run_experiment(SCRIPT, *args, "--epochs", "1", cache=cache)
    assert first.returncode == 0, first.stderr[-4000:]
    assert history_epochs(out / "unet" / "history.csv") == [0]
    split = (out / "split.json").read_text()
    resumed = run_experiment(SCRIPT, *args, "--epochs", "2", "--resume", str(out), cache=cache)  # on to epoch 2
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert history_epochs(out / "unet" / "history.csv") == [0, 1]
    assert (out / "split.json").read_text() == split
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"unet"} and results["models"]["unet"]["epochs_run"] == 2
    assert "enhancer" not in results  # the LSTM stage is only trained for the proposed model


def test_a_corrupt_mat_file_is_one_line_error_naming_it(figshare_set, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for k in range(1, 7):
        (broken / f"{k}.mat").write_bytes((figshare_set / f"{k}.mat").read_bytes())
    (broken / "4.mat").write_bytes((broken / "4.mat").read_bytes()[:2000])  # a truncated download
    proc = run_experiment(SCRIPT, "--data-dir", str(broken), "--out", str(tmp_path / "run"), *TINY,
                          cache=tmp_path / "cache", timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "4.mat" in errors[0], proc.stderr[-2000:]


def test_an_image_size_the_networks_cannot_take_is_one_line_error(tmp_path):
    proc = run_experiment(SCRIPT, "--image-size", "100", "--out", str(tmp_path / "run"), cache=tmp_path / "cache",
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: invalid setting: size: must be a multiple of 32 (EfficientNet's stride), got 100")


def test_help_documents_the_paper_defaults():
    proc = run_experiment(SCRIPT, "--help", cache=REPO / ".no-cache", timeout=120)
    assert proc.returncode == 0
    words = " ".join(proc.stdout.split())  # argparse wraps the help text
    for text in ("paper profile: 500 — Table 1; quick profile:", "paper profile: 8 — Table 1", "--models",
                 "--encoder-weights", "--pretrain-epochs"):
        assert text in words, text


def test_test_slices_are_scored_at_their_source_resolution():
    import numpy as np

    experiment = paper4
    probabilities = np.zeros((2, 4, 4), np.float32)
    probabilities[:, :2, :2] = 0.9  # the top-left quarter at the model's 4²
    truths = [np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8)]  # a 512²-like and a 256²-like source
    truths[0][:4, :4] = 1
    truths[1][:2, :2] = 1
    mask = experiment.at_source_size(probabilities[0], 8)
    assert mask.shape == (8, 8) and mask[:3, :3].all() and not mask[5:, :].any()
    scores = experiment.score_test(probabilities, truths, labels=[1, 3])
    assert sum(scores["pooled_counts"].values()) == 64 + 16  # every source pixel, once
    assert scores["per_image"][1]["dice"] == 1.0 and scores["by_type"]["pituitary"] == {"dice": 1.0, "images": 1}
    assert scores["by_type"]["glioma"] == {"dice": None, "images": 0}


def test_figure_slices_are_one_per_patient_tumour_types_in_turn():
    import numpy as np

    experiment = paper4
    sizes = [1, 5, 2, 9, 3, 3, 7]
    masks = [np.ones((2, 2)) * k for k in sizes]
    pids = ["a", "a", "b", "c", "d", "d", "e"]
    labels = [1, 1, 2, 3, 1, 1, 1]
    # a → slice 1 (largest of a), b → 2, c → 3, d → 4, e → 6; meningiomas a, e, d by tumour size
    assert experiment.showcase_slices(masks, pids, labels, 4) == [6, 2, 3, 1]
    assert experiment.showcase_slices(masks, pids, labels, 10) == [6, 2, 3, 1, 4]
