"""BraTS case discovery and every validation error the readers promise."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_keras.data.brats import discover_cases, load_case, validate_labels
from brats_keras.errors import DataError
from tests.helpers import TINY_SHAPE, blob_case, save_nifti, write_case

REPO = Path(__file__).resolve().parents[1]


def test_discovers_2020_cases_with_files_in_order(blob_dataset):
    cases = discover_cases(blob_dataset)
    assert [c.case_id for c in cases] == [f"BraTS20_Training_{k:03d}" for k in (1, 2, 3)]
    case = cases[0]
    assert case.layout == "brats2020"
    assert set(case.images) == {"flair", "t1", "t1ce", "t2"}
    assert case.label.name == "BraTS20_Training_001_seg.nii.gz"


def test_discovers_2021_layout_and_plain_nii(tmp_path):
    images, label = blob_case()
    write_case(tmp_path, "BraTS2021_00000", images, label, suffix=".nii")
    write_case(tmp_path, "BraTS2021_00002", images, label)
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS2021_00000", "BraTS2021_00002"]
    assert cases[0].layout == "brats2021"
    assert cases[0].images["flair"].name == "BraTS2021_00000_flair.nii"
    assert cases[1].images["flair"].name == "BraTS2021_00002_flair.nii.gz"


def test_finds_misnamed_label_of_case_355(tmp_path):
    images, label = blob_case()
    write_case(tmp_path, "BraTS20_Training_355", images, label, label_name="W39_1998.09.19_Segm.nii")
    (case,) = discover_cases(tmp_path)
    assert case.label.name == "W39_1998.09.19_Segm.nii"
    loaded = load_case(case, ["flair"])
    np.testing.assert_array_equal(loaded.label, label)


def test_finds_cases_in_nested_kaggle_folder(tmp_path):
    images, label = blob_case()
    nested = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    write_case(nested, "BraTS20_Training_001", images, label)
    (nested / "name_mapping.csv").write_text("Grade\n")
    assert [c.case_id for c in discover_cases(tmp_path)] == ["BraTS20_Training_001"]


def test_load_case_returns_requested_channels_in_order(blob_dataset):
    case = discover_cases(blob_dataset)[0]
    loaded = load_case(case, ["t1ce", "flair"])
    assert loaded.image.shape == (*TINY_SHAPE, 2) and loaded.image.dtype == np.float32
    images, label = blob_case(seed=1)
    np.testing.assert_array_equal(loaded.image[..., 0], images["t1ce"].astype(np.float32))
    np.testing.assert_array_equal(loaded.image[..., 1], images["flair"].astype(np.float32))
    assert loaded.label.dtype == np.uint8 and set(np.unique(loaded.label)) == {0, 1, 2, 4}
    assert loaded.spacing == (1.0, 1.0, 1.0)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_empty_or_missing_root(tmp_path):
    assert "does not exist" in _error(discover_cases, tmp_path / "nope")
    assert "no BraTS case folders" in _error(discover_cases, tmp_path)


def test_missing_modality_names_case_and_modality(blob_dataset):
    (blob_dataset / "BraTS20_Training_002" / "BraTS20_Training_002_t1ce.nii.gz").unlink()
    msg = _error(discover_cases, blob_dataset)
    assert "BraTS20_Training_002" in msg and "missing t1ce" in msg


def test_missing_label(blob_dataset):
    (blob_dataset / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz").unlink()
    msg = _error(discover_cases, blob_dataset)
    assert "BraTS20_Training_003" in msg and "missing label" in msg
    assert len(discover_cases(blob_dataset, require_label=False)) == 3


def test_shape_mismatch_between_modalities(blob_dataset):
    path = blob_dataset / "BraTS20_Training_001" / "BraTS20_Training_001_t2.nii.gz"
    save_nifti(path, np.zeros((48, 48, 39), np.int16))
    msg = _error(load_case, discover_cases(blob_dataset)[0])
    assert "BraTS20_Training_001_t2.nii.gz" in msg and "(48, 48, 39)" in msg and "flair" in msg


def test_label_shape_mismatch(blob_dataset):
    path = blob_dataset / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz"
    save_nifti(path, np.zeros((40, 48, 40), np.uint8))
    msg = _error(load_case, discover_cases(blob_dataset)[0], ["flair"])
    assert "BraTS20_Training_001_seg.nii.gz" in msg and "differs" in msg


def test_non_finite_voxels(blob_dataset):
    data = np.ones(TINY_SHAPE, np.float32)
    data[3, 4, 5] = np.nan
    data[1, 1, 1] = np.inf
    path = save_nifti(blob_dataset / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz", data)
    msg = _error(load_case, discover_cases(blob_dataset)[0])
    assert str(path) in msg and "2 non-finite voxels" in msg


def test_truncated_gzip_file(blob_dataset):
    path = blob_dataset / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    msg = _error(load_case, discover_cases(blob_dataset)[1])
    assert "BraTS20_Training_002" in msg and str(path) in msg and "truncated" in msg


def test_not_a_nifti_file(blob_dataset):
    path = blob_dataset / "BraTS20_Training_002" / "BraTS20_Training_002_t1.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    msg = _error(load_case, discover_cases(blob_dataset)[1])
    assert str(path) in msg and "unreadable" in msg


@pytest.mark.parametrize("bad,expected", [(5, "labels [5]"), (3, "BraTS 2023")])
def test_bad_labels(blob_dataset, bad, expected):
    _, label = blob_case()
    label = label.copy()
    label[label == 4] = bad
    path = save_nifti(blob_dataset / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz", label)
    msg = _error(load_case, discover_cases(blob_dataset)[0], ["flair"])
    assert str(path) in msg and expected in msg and "BraTS20_Training_001" in msg


def test_label_three_with_four_is_plain_out_of_range():
    label = np.array([0, 1, 2, 3, 4])
    assert "labels [3] outside" in _error(validate_labels, label, case_id="c")


def test_float_and_negative_labels():
    assert "non-integer" in _error(validate_labels, np.array([0.0, 1.5]))
    assert "outside" in _error(validate_labels, np.array([0, -1]))
    np.testing.assert_array_equal(validate_labels(np.array([0.0, 4.0, 2.0])), [0, 4, 2])


def test_cli_reports_bad_data_in_one_line(blob_dataset, tmp_path):
    _, label = blob_case()
    label = label.copy()
    label[label == 4] = 3
    save_nifti(blob_dataset / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz", label)
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_prep" / "preprocess_3d.py"), "--data-dir", str(blob_dataset),
         "--out", str(tmp_path / "out"), "--crop", "0:48,0:48,0:40", "--no-progress"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "BraTS20_Training_002" in lines[0] and "BraTS 2023" in lines[0]
    # the case processed before the bad one is kept, and the manifest says so
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert "BraTS20_Training_001" in manifest and (tmp_path / "out" / "images" / "BraTS20_Training_001.npy").exists()
