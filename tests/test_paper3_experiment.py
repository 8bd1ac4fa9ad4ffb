"""Paper 3 end to end on tiny synthetic data (32² slices, 4 filters): both runs of the ablation,
every output file, prediction of new patients with the recorded pre-processing, and a run in which
a forced worse epoch makes the dwell callback put the best weights back."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from experiments import paper3_unet_dwell
from tests.helpers import REPO, export_tolerance, history_epochs, predict_and_evaluate, run_experiment

SCRIPT = REPO / "experiments" / "paper3_unet_dwell.py"
TINY = ["--epochs", "2", "--batch-size", "8", "--slice-start", "5", "--slice-count", "30", "--image-size", "32",
        "--filters", "4", "--shrink-factor", "2", "--correction-workers", "1"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_run_trains_both_variants_and_writes_every_output(synthetic_brats, tmp_path):
    out, corrected = tmp_path / "run", tmp_path / "corrected"
    proc = run_experiment(SCRIPT, "--data-dir", str(synthetic_brats), "--out", str(out), "--corrected-dir",
                          str(corrected), *TINY, cache=tmp_path / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SYNTHETIC" in proc.stdout and "6 corrected" in proc.stdout

    # the pre-processing cache: BraTS layout, manifest, z-scored float32 volumes
    manifest = json.loads((corrected / "correction_manifest.json").read_text())
    assert len(manifest["cases"]) == 6 and manifest["settings"]["shrink_factor"] == 2
    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    for png in ["fig5_1_curves.png"] + [f"{v}_{k}.png" for v in ("preprocessed", "raw")
                                        for k in ("lr_schedule", "overlay")]:
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, png
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"preprocessed", "raw"} and results["skipped_cases"] == {}
    split = json.loads((out / "split.json").read_text())
    for variant, entry in results["models"].items():
        sub = out / variant
        assert (sub / "model.keras").is_file() and (sub / "saved_model" / "saved_model.pb").is_file()
        assert history_epochs(sub / "history.csv") == [0, 1]
        assert entry["epochs_run"] == 2 and len(entry["dwell_rows"]) == 2
        assert [row["epoch"] for row in entry["dwell_rows"]] == [1, 2]
        assert entry["export_max_abs_diff"]["saved_model"] < export_tolerance(entry)
        summary = entry["whole_volume"]["summary"]
        assert set(summary) == {"ET", "TC", "WT"} and summary["WT"]["dice"]["count"] == len(split["test"])
        spec = json.loads((sub / "inference.json").read_text())
        assert spec["slices"]["modalities"] == ["t1", "t1ce", "t2", "flair"] and spec["slices"]["size"] == 32
        assert (spec["correction"] is not None) == (variant == "preprocessed")
    assert results["models"]["raw"]["dwell_rows"][0]["val_loss"] != results["models"]["preprocessed"]["dwell_rows"][0]["val_loss"]

    table = (out / "table.md").read_text()
    assert "Ablation" in table and "with pre-processing" in table and "without pre-processing" in table
    assert table.count("Dwell callback, per epoch") == 2 and "synthetic" in table.lower()
    assert "— paper" not in table  # the paper reports no numbers: nothing may look like one

    # the pre-processed model corrects new patients itself (its inference.json carries the settings)
    pred, scores = tmp_path / "pred", tmp_path / "scores.csv"
    predicted = predict_and_evaluate(out / "preprocessed" / "model.keras", synthetic_brats, pred, scores)
    assert len(predicted) == 6 * 3 and all(r["status"] == "ok" for r in predicted)


@pytest.mark.slow
def test_a_forced_worse_epoch_restores_the_best_weights(synthetic_brats, tmp_path, monkeypatch):
    """Epoch 2 is made to end worse than epoch 1 (its logged accuracy and validation loss are
    overwritten before the callback reads them); the callback must put epoch 1's weights back, halve
    the learning rate, and the exported model must hold the best epoch's weights."""
    experiment = paper3_unet_dwell  # the script, imported (it is a module of the experiments package)
    weights_after: dict[int, list[np.ndarray]] = {}

    class ForcedWorseEpoch(experiment.DwellLearningRate):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                logs["accuracy"], logs["val_loss"] = 0.0, 1e9  # worse than anything before
            super().on_epoch_end(epoch, logs)
            weights_after[epoch + 1] = self.model.get_weights()

    monkeypatch.setattr(experiment, "DwellLearningRate", ForcedWorseEpoch)
    monkeypatch.setenv("BRATS_KERAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [a if a != "2" else "3" for a in TINY]  # --epochs 3
    assert experiment.main(["--data-dir", str(synthetic_brats), "--out", str(out), "--corrected-dir",
                            str(tmp_path / "corrected"), "--preprocess-only", *args]) == 0

    entry = json.loads((out / "results.json").read_text())["models"]["preprocessed"]
    rows = entry["dwell_rows"]
    assert [row["restored"] for row in rows][:2] == [False, True] and 2 in entry["restored_epochs"]
    assert rows[1]["next_lr"] == pytest.approx(rows[1]["lr"] * 0.5) and rows[2]["lr"] == pytest.approx(rows[1]["next_lr"])
    for before, after in zip(weights_after[1], weights_after[2]):  # epoch 2 ended on epoch 1's weights
        np.testing.assert_array_equal(before, after)
    best = entry["best_epoch"]
    assert best in (1, 3)
    exported = keras.models.load_model(out / "preprocessed" / "model.keras")
    for kept, saved in zip(weights_after[best], exported.get_weights()):
        np.testing.assert_array_equal(kept, saved)
    history = (out / "preprocessed" / "history.csv").read_text().splitlines()
    assert "weights_restored" in history[0] and "lr" in history[0].split(",")
    table = (out / "table.md").read_text()
    assert "| 2 | val_loss | yes |" in table  # the restore is in the per-epoch table
