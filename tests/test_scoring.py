"""``python -m brats_keras evaluate``: per-case, per-region scores of a prediction folder, as CSV."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from brats_keras.cli import main
from brats_keras.data.brats import read_label
from brats_keras.evaluation import HD95_EMPTY
from brats_keras.scoring import SUMMARY_ROWS, reference_labels
from tests.helpers import blob_case, save_nifti, write_case


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def labelled(tmp_path):
    """Four BraTS 2020 cases; case 4 has no enhancing tumour."""
    root = tmp_path / "labels"
    for k in range(1, 5):
        images, label = blob_case(seed=k)
        if k == 4:
            label[label == 4] = 1
        write_case(root, f"BraTS20_Training_{k:03d}", images, label)
    return root


def _copy_labels_as_predictions(label_root, pred_dir, cases=None):
    pred_dir.mkdir(parents=True, exist_ok=True)
    for case_dir in sorted(label_root.iterdir()):
        if case_dir.is_dir() and (cases is None or case_dir.name in cases):
            shutil.copy(next(case_dir.glob("*_seg.nii*")), pred_dir / f"{case_dir.name}.nii.gz")


def test_a_perfect_prediction_scores_dice_1_and_hd95_0(labelled, tmp_path):
    pred = tmp_path / "pred"
    _copy_labels_as_predictions(labelled, pred)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(labelled), "--out", str(out)]) == 0
    rows = _rows(out)
    per_case = [r for r in rows if r["case"].startswith("BraTS")]
    assert len(per_case) == 4 * 3 and {r["region"] for r in per_case} == {"ET", "TC", "WT"}
    for row in per_case:
        assert (float(row["dice"]), float(row["hd95"])) == (1.0, 0.0)
        assert float(row["sensitivity"]) == 1.0 and float(row["specificity"]) == 1.0 and row["status"] == "ok"
    summary = {(r["case"], r["region"]): r for r in rows if not r["case"].startswith("BraTS")}
    assert set(summary) == {(name, region) for name in SUMMARY_ROWS for region in ("ET", "TC", "WT")}
    assert float(summary[("Mean", "WT")]["dice"]) == 1.0 and float(summary[("StdDev", "ET")]["hd95"]) == 0.0
    assert {r["synthetic"] for r in rows} == {"no"}  # hand-made test labels, not the synthetic generator's


def test_scores_on_synthetic_labels_say_so(synthetic_brats, tmp_path, capsys):
    pred = tmp_path / "pred"
    _copy_labels_as_predictions(synthetic_brats, pred)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(synthetic_brats), "--out", str(out)]) == 0
    assert {r["synthetic"] for r in _rows(out)} == {"yes"}
    assert "SYNTHETIC" in capsys.readouterr().out


def test_missing_predictions_get_the_empty_penalty_and_summary_matches_numpy(labelled, tmp_path, capsys):
    pred = tmp_path / "pred"
    _copy_labels_as_predictions(labelled, pred, cases={"BraTS20_Training_001", "BraTS20_Training_004"})
    # case 2: the core predicted as edema (WT right, TC and ET wrong)
    label = read_label(labelled / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz")
    save_nifti(pred / "BraTS20_Training_002.nii.gz", np.where(label > 0, 2, 0).astype(np.uint8))
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(labelled), "--out", str(out)]) == 0
    rows = _rows(out)
    by = {(r["case"], r["region"]): r for r in rows}
    missing = [r for r in rows if r["case"] == "BraTS20_Training_003"]
    assert {r["status"] for r in missing} == {"missing"}
    for r in missing:  # the reference has every region: Dice 0, HD95 373.13, sensitivity 0
        assert (float(r["dice"]), float(r["hd95"]), float(r["sensitivity"])) == (0.0, HD95_EMPTY, 0.0)
    assert float(by[("BraTS20_Training_004", "ET")]["dice"]) == 1.0  # both empty: no penalty
    assert float(by[("BraTS20_Training_002", "WT")]["dice"]) == 1.0
    assert float(by[("BraTS20_Training_002", "TC")]["dice"]) == 0.0
    assert "BraTS20_Training_003: missing" in capsys.readouterr().err

    for region in ("ET", "TC", "WT"):
        for metric in ("dice", "hd95", "sensitivity", "specificity"):
            values = np.array([float(by[(f"BraTS20_Training_00{k}", region)][metric]) for k in range(1, 5)])
            expected = {"Mean": values.mean(), "StdDev": values.std(ddof=1), "Median": np.median(values),
                        "25quantile": np.percentile(values, 25), "75quantile": np.percentile(values, 75)}
            for name, value in expected.items():
                assert float(by[(name, region)][metric]) == pytest.approx(value, rel=1e-5, abs=1e-6), (name, region)


def test_invalid_predictions_are_penalised_and_fail_the_exit_status(labelled, tmp_path, capsys):
    pred = tmp_path / "pred"
    _copy_labels_as_predictions(labelled, pred)
    label = read_label(labelled / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz")
    save_nifti(pred / "BraTS20_Training_001.nii.gz", np.where(label == 4, 3, label).astype(np.uint8))  # BraTS 2023
    save_nifti(pred / "BraTS20_Training_002.nii.gz", np.zeros((10, 10, 10), np.uint8))  # wrong grid
    save_nifti(pred / "BraTS20_Training_099.nii.gz", np.zeros((10, 10, 10), np.uint8))  # no such reference
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(labelled), "--out", str(out)]) == 1
    by = {(r["case"], r["region"]): r for r in _rows(out)}
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        assert by[(case, "WT")]["status"] == "invalid" and float(by[(case, "WT")]["dice"]) == 0.0
    assert ("BraTS20_Training_099", "WT") not in by
    err = capsys.readouterr().err
    assert "BraTS 2023 convention" in err and "differs from the label's" in err
    assert "without a reference label (not scored): BraTS20_Training_099" in err


def test_a_flat_label_folder_and_the_misnamed_brats2020_label_are_found(tmp_path):
    images, label = blob_case(seed=5)
    write_case(tmp_path / "brats", "BraTS20_Training_355", images, None)
    save_nifti(tmp_path / "brats" / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii", label)
    labels, problems = reference_labels(tmp_path / "brats")
    assert labels["BraTS20_Training_355"].name == "W39_1998.09.19_Segm.nii" and not problems

    flat = tmp_path / "flat"
    save_nifti(flat / "BraTS2021_00007_seg.nii.gz", label)
    save_nifti(flat / "BraTS2021_00008.nii", label)
    labels, _ = reference_labels(flat)
    assert sorted(labels) == ["BraTS2021_00007", "BraTS2021_00008"]
    pred = tmp_path / "pred"
    save_nifti(pred / "BraTS2021_00007.nii.gz", label)
    out = tmp_path / "s.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(flat), "--out", str(out)]) == 0
    by = {(r["case"], r["region"]): r["status"] for r in _rows(out)}
    assert by[("BraTS2021_00007", "ET")] == "ok" and by[("BraTS2021_00008", "ET")] == "missing"


def test_an_unusable_label_is_reported_and_the_rest_scored(labelled, tmp_path, capsys):
    pred = tmp_path / "pred"
    _copy_labels_as_predictions(labelled, pred)
    seg = labelled / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz"
    seg.write_bytes(seg.read_bytes()[:500])
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred-dir", str(pred), "--label-dir", str(labelled), "--out", str(out)]) == 1
    cases = {r["case"] for r in _rows(out) if r["case"].startswith("BraTS")}
    assert cases == {"BraTS20_Training_001", "BraTS20_Training_003", "BraTS20_Training_004"}
    assert "BraTS20_Training_002: FAILED" in capsys.readouterr().err


def test_no_labels_at_all_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred-dir", str(tmp_path / "pred"), "--label-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "no label files found" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
