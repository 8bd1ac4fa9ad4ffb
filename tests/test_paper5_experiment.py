"""Paper 5 end to end on tiny SYNTHETIC sets: both halves and every output file, a corrupt image counted
in the results, one half alone, resume, and the data-folder rules of the command line."""

from __future__ import annotations

import json

import pytest

from brats_keras.data.brain_mri import write_brain_mri_dataset
from brats_keras.data.lgg import write_lgg_dataset
from tests.helpers import REPO, export_tolerance, history_epochs, run_experiment

SCRIPT = REPO / "experiments" / "paper5_effnet_classify_segment.py"
TINY = ["--epochs", "2", "--batch-size", "8", "--image-size", "64", "--seg-size", "32", "--seg-epochs", "2",
        "--seg-filters", "4", "--seg-batch-size", "8", "--encoder-weights", "none"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper5")
    images = root / "brain-tumor-mri"
    write_brain_mri_dataset(images, per_class=6, test_per_class=2, seed=4, max_size=96, progress=False)
    (images / "Training" / "glioma" / "Tr-gl_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lgg = root / "lgg-mri-segmentation"
    write_lgg_dataset(lgg, patients=6, slices=6, seed=4, size=64, progress=False)
    return images, lgg


@pytest.mark.slow
def test_tiny_run_of_both_halves_writes_every_output(datasets, tmp_path):
    images, lgg = datasets
    out = tmp_path / "run"
    proc = run_experiment(SCRIPT, "--data-dir", str(images), "--lgg-dir", str(lgg), "--out", str(out), *TINY,
                          cache=tmp_path / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SYNTHETIC" in proc.stdout and "Tr-gl_broken.jpg" in proc.stdout
    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    for png in ("classifier_curves.png", "confusion_matrix.png", "misclassified.png", "segmenter_curves.png",
                "segmentation_overlay.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == PNG and len(data) > 3000, png
    for half in ("classifier", "segmenter"):
        assert (out / half / "model.keras").is_file() and (out / half / "saved_model" / "saved_model.pb").is_file()
        assert history_epochs(out / half / "history.csv") == [0, 1]

    results = json.loads((out / "results.json").read_text())
    c, s = results["models"]["classifier"], results["models"]["segmenter"]
    assert results["synthetic"] is True and c["skipped_count"] == 1 and c["base_frozen"] is False
    assert c["skipped_files"][0]["path"].endswith("Tr-gl_broken.jpg")
    cm = c["confusion_matrix"]
    assert len(cm) == 4 and sum(map(sum, cm)) == sum(c["report"][k]["support"] for k in
                                                      ("glioma", "meningioma", "notumor", "pituitary"))
    assert abs(c["accuracy"] - sum(cm[i][i] for i in range(4)) / sum(map(sum, cm))) < 1e-9
    assert all(e["export_max_abs_diff"]["saved_model"] < export_tolerance(e) for e in (c, s))
    assert s["structure"]["residual_blocks"] == 9 and s["skipped_count"] == 0
    t = s["test"]
    assert t["slices"] == len(s["test"]["per_slice"]) and 0 < t["tumour_slices"] <= t["slices"]
    for row in t["per_slice"]:
        assert row["iou"] <= row["dice"] + 1e-12  # the audit's inequality on every measured slice
    split = json.loads((out / "split.json").read_text())
    assert set(split["segment"]["test"]).isdisjoint(split["segment"]["train"])
    # every file found is in the split (the broken one too: it is skipped when decoded, and counted)
    assert len(split["classify"]["train"]) + len(split["classify"]["val"]) + len(split["classify"]["test"]) == 4 * 8 + 1

    # Table 1: the release folders as read (the broken file excluded) and this run's split, by class
    release = c["release_counts"]
    assert sum(release["Training"].values()) + sum(release["Testing"].values()) == 4 * 8
    assert {part: sum(v.values()) for part, v in c["class_counts"].items()} == {
        part: len(split["classify"][part]) - sum(p.endswith("Tr-gl_broken.jpg") for p in split["classify"][part])
        for part in ("train", "val", "test")}
    tumour = s["tumour_counts"]
    assert sum(tumour["test"].values()) == t["slices"] and tumour["test"]["tumour present"] == t["tumour_slices"]

    table = (out / "table.md").read_text()
    g = release["Training"]["glioma"]
    assert f"| classification | glioma | {g} | 1321 |" in table  # measured beside the paper's Table 1
    for text in ("Table 1 — images per class and split", "Classification report", "0.9939", "Confusion matrix", "0.9977", "0.9981", "Audit: IoU ≤ Dice",
                 "23 convolutional layers, 10 residual blocks", "random initialisation", "1 unreadable image files"):
        assert text in table, text


@pytest.mark.slow
def test_one_half_alone_and_resume(datasets, tmp_path):
    _, lgg = datasets
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--task", "segment", "--lgg-dir", str(lgg), "--out", str(out), *TINY]
    first = run_experiment(SCRIPT, *args, "--seg-epochs", "1", cache=cache)
    assert first.returncode == 0, first.stderr[-4000:]
    assert history_epochs(out / "segmenter" / "history.csv") == [0] and not (out / "classifier").exists()
    split = json.loads((out / "split.json").read_text())["segment"]
    resumed = run_experiment(SCRIPT, *args, "--resume", str(out), cache=cache)  # --seg-epochs 2 from TINY
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert history_epochs(out / "segmenter" / "history.csv") == [0, 1]
    assert json.loads((out / "split.json").read_text())["segment"] == split
    assert set(json.loads((out / "results.json").read_text())["models"]) == {"segmenter"}


def test_real_data_for_one_half_only_is_refused(datasets, tmp_path):
    images, _ = datasets
    proc = run_experiment(SCRIPT, "--data-dir", str(images), "--out", str(tmp_path / "run"), cache=tmp_path / "c",
                          timeout=120)
    assert proc.returncode == 2
    assert "--lgg-dir" in proc.stderr.strip().splitlines()[-1]


def test_help_documents_the_paper_defaults():
    proc = run_experiment(SCRIPT, "--help", cache=REPO / ".no-cache", timeout=120)
    words = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    for text in ("paper profile: 50 — Table 2 (classifier)", "paper profile: 32 — Table 2 (classifier)", "--task", "--lgg-dir",
                 "--split", "--encoder-weights"):
        assert text in words, text
