"""Tests of the synthetic BraTS-like data generator (``brats_keras.data.synthetic``) and its CLI."""

from __future__ import annotations

import csv
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats_keras.data.layout import BRATS_AFFINE, BRATS_SHAPE, LABEL_KEY, MISNAMED_LABELS, MODALITIES
from brats_keras.data.synthetic import (
    NAME_MAPPING_HEADER,
    grid_affine,
    is_synthetic_dataset,
    nifti_bytes,
    save_case_figure,
    synthesize_case,
    template_tissue_maps,
    write_dataset,
)
from brats_keras.errors import BratsKerasError

REPO = Path(__file__).resolve().parents[1]
SHAPE = (48, 48, 40)
KEYS = (*MODALITIES, LABEL_KEY)


def case(seed: int, number: int = 0, **kwargs) -> dict[str, np.ndarray]:
    return synthesize_case(np.random.default_rng([seed, number]), SHAPE, **kwargs)


def digest(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for k, a in arrays.items()}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def enhancing_case() -> dict[str, np.ndarray]:
    return case(11, enhancing=True)


# ------------------------------------------------------------------------------------------ layout
def test_brats2020_layout_and_name_mapping(tmp_path):
    folders = write_dataset(tmp_path, dataset="brats2020", cases=3, seed=0, shape=SHAPE, progress=False)
    ids = [f"BraTS20_Training_{n:03d}" for n in (1, 2, 3)]
    assert folders == [tmp_path / i for i in ids]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*ids, "SYNTHETIC_DATA.json", "name_mapping.csv"]
    assert is_synthetic_dataset(tmp_path) and is_synthetic_dataset(tmp_path.parent)  # found one level down too
    (tmp_path / "real").mkdir()
    assert not is_synthetic_dataset(tmp_path / "real")
    assert is_synthetic_dataset(tmp_path / ids[0])  # one synthetic case folder on its own
    for case_id in ids:
        assert sorted(p.name for p in (tmp_path / case_id).iterdir()) == sorted(
            f"{case_id}_{k}.nii.gz" for k in KEYS
        )
    with open(tmp_path / "name_mapping.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == NAME_MAPPING_HEADER
    assert [r[-1] for r in rows[1:]] == ids
    for row in rows[1:]:
        seg = np.asarray(nib.load(tmp_path / row[-1] / f"{row[-1]}_seg.nii.gz").dataobj)
        assert row[0] == ("HGG" if (seg == 4).any() else "LGG")


def test_brats2021_layout(tmp_path):
    folders = write_dataset(tmp_path, dataset="brats2021", cases=2, seed=0, shape=SHAPE, progress=False)
    assert [f.name for f in folders] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS2021_00000", "BraTS2021_00001", "SYNTHETIC_DATA.json"]
    assert sorted(p.name for p in folders[1].iterdir()) == sorted(f"BraTS2021_00001_{k}.nii.gz" for k in KEYS)


def test_case_355_label_is_misnamed_plain_nifti(tmp_path):
    write_dataset(tmp_path, dataset="brats2020", cases=2, seed=0, shape=SHAPE, first_id=354, progress=False)
    folder = tmp_path / "BraTS20_Training_355"
    label = folder / MISNAMED_LABELS["BraTS20_Training_355"]
    assert label.name == "W39_1998.09.19_Segm.nii"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [label.name, *(f"BraTS20_Training_355_{m}.nii.gz" for m in MODALITIES)]
    )
    assert label.read_bytes()[344:348] == b"n+1\x00"  # uncompressed single-file NIfTI-1
    assert (tmp_path / "BraTS20_Training_354" / "BraTS20_Training_354_seg.nii.gz").exists()
    with open(tmp_path / "name_mapping.csv", newline="") as fh:
        assert [r[-1] for r in list(csv.reader(fh))[1:]] == ["BraTS20_Training_354", "BraTS20_Training_355"]


def test_rerun_overwrites_and_keeps_earlier_name_mapping_rows(tmp_path):
    write_dataset(tmp_path, cases=2, seed=0, shape=SHAPE, progress=False)
    write_dataset(tmp_path, cases=2, seed=1, shape=SHAPE, first_id=2, progress=False)
    fresh = tmp_path / "fresh"
    write_dataset(fresh, cases=2, seed=1, shape=SHAPE, first_id=2, progress=False)
    assert file_bytes(tmp_path / "BraTS20_Training_002") == file_bytes(fresh / "BraTS20_Training_002")
    with open(tmp_path / "name_mapping.csv", newline="") as fh:
        assert [r[-1] for r in list(csv.reader(fh))[1:]] == [f"BraTS20_Training_{n:03d}" for n in (1, 2, 3)]
    assert not list(tmp_path.rglob("*.part"))


# ------------------------------------------------------------------------------------------- files
def test_dtypes_affine_and_zooms(tmp_path):
    (folder,) = write_dataset(tmp_path, cases=1, seed=0, shape=SHAPE, progress=False)
    for key in KEYS:
        img = nib.load(folder / f"{folder.name}_{key}.nii.gz")
        assert img.shape == SHAPE
        assert img.get_data_dtype() == (np.uint8 if key == LABEL_KEY else np.int16)
        assert np.asarray(img.dataobj).dtype == (np.uint8 if key == LABEL_KEY else np.int16)
        # a reduced grid spans the same field of view as 240x240x155 at 1 mm, with larger voxels
        np.testing.assert_allclose(img.header.get_zooms(), np.divide(BRATS_SHAPE, SHAPE), rtol=1e-6)
        np.testing.assert_allclose(np.abs(img.affine[:3, :3]), np.diag(np.divide(BRATS_SHAPE, SHAPE)), atol=1e-12)
        assert int(img.header["qform_code"]) in (1, 2) and int(img.header["sform_code"]) in (1, 2)
        np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-5)
        np.testing.assert_allclose(img.get_sform(), img.affine, atol=1e-5)
        # world coordinates of the grid's centre are those of the full-size grid's centre
        centre = img.affine @ np.append((np.asarray(SHAPE) - 1) / 2, 1.0)
        full_centre = BRATS_AFFINE @ np.append((np.asarray(BRATS_SHAPE) - 1) / 2, 1.0)
        np.testing.assert_allclose(centre, full_centre, atol=1e-9)


def test_full_size_grid_has_the_brats_affine():
    np.testing.assert_array_equal(grid_affine(BRATS_SHAPE), BRATS_AFFINE)
    header = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(np.zeros((240, 240, 155), np.uint8)))).header
    assert header.get_zooms() == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(header.get_best_affine(), BRATS_AFFINE)


def test_arrays_dtypes_and_label_values(enhancing_case):
    assert set(enhancing_case) == set(KEYS)
    for key in MODALITIES:
        assert enhancing_case[key].dtype == np.int16 and enhancing_case[key].shape == SHAPE
        assert enhancing_case[key].min() >= 0
    assert enhancing_case[LABEL_KEY].dtype == np.uint8
    assert set(np.unique(enhancing_case[LABEL_KEY]).tolist()) <= {0, 1, 2, 4}


# ---------------------------------------------------------------------------------------- tumour
def test_enhancing_case_has_all_three_subregions(enhancing_case):
    assert set(np.unique(enhancing_case[LABEL_KEY]).tolist()) == {0, 1, 2, 4}


def test_non_enhancing_case_has_no_label_4():
    seg = case(11, enhancing=False)[LABEL_KEY]
    assert set(np.unique(seg).tolist()) == {0, 1, 2}


def test_forcing_enhancement_keeps_the_anatomy():
    forced, natural = case(11, enhancing=False), case(11, enhancing=True)
    for key in MODALITIES:
        outside = (forced[LABEL_KEY] == 0) & (natural[LABEL_KEY] == 0)
        assert (forced[key] > 0).sum() == (natural[key] > 0).sum()
        assert np.abs(forced[key][outside].astype(float) - natural[key][outside]).max() == 0


def test_about_15_percent_of_drawn_cases_lack_enhancing_tumour():
    empty = sum(not (case(5, n)[LABEL_KEY] == 4).any() for n in range(40))
    assert 1 <= empty <= 14


def test_tumour_size_scales_with_the_grid():
    small = synthesize_case(np.random.default_rng([2, 1]), SHAPE)[LABEL_KEY]
    large = synthesize_case(np.random.default_rng([2, 1]), tuple(2 * n for n in SHAPE))[LABEL_KEY]
    ratio = (large > 0).sum() / max((small > 0).sum(), 1)
    assert 4 < ratio < 16  # 8 × more voxels per mm³ (discretisation and the brain edge vary it)


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_arrays_different_seed_different():
    assert digest(case(3, 7)) == digest(case(3, 7))
    other = digest(case(4, 7))
    assert all(other[k] != v for k, v in digest(case(3, 7)).items() if k != LABEL_KEY)


def test_first_cases_unchanged_when_more_are_requested(tmp_path):
    write_dataset(tmp_path / "a", dataset="brats2021", cases=2, seed=9, shape=SHAPE, progress=False)
    write_dataset(tmp_path / "b", dataset="brats2021", cases=4, seed=9, shape=SHAPE, progress=False)
    for case_id in ("BraTS2021_00000", "BraTS2021_00001"):
        assert file_bytes(tmp_path / "a" / case_id) == file_bytes(tmp_path / "b" / case_id)
    assert file_bytes(tmp_path / "b" / "BraTS2021_00002") != file_bytes(tmp_path / "b" / "BraTS2021_00001")


# ------------------------------------------------------------------------------------- anatomy
def test_zero_outside_brain_and_tumour_inside_brain(enhancing_case):
    support = enhancing_case["flair"] > 0
    for key in MODALITIES:
        np.testing.assert_array_equal(enhancing_case[key] > 0, support)
    assert support[enhancing_case[LABEL_KEY] > 0].all()
    template = template_tissue_maps(SHAPE)["brain"]
    far_outside = ~ndimage.binary_dilation(template > 0, iterations=3)
    deep_inside = ndimage.binary_erosion(template > 0.5, iterations=3)
    assert not support[far_outside].any()
    assert support[deep_inside].all()
    assert 0.2 < support.mean() < 0.6


def test_anatomy_is_not_mirrored_or_upside_down():
    """BRATS_AFFINE: j → y = 239 − j (anterior at low j), k → z (superior at high k)."""
    brain = template_tissue_maps(SHAPE)["brain"] > 0.5
    nx, ny, nz = SHAPE
    area = brain.sum(axis=(0, 1))
    assert np.flatnonzero(area)[-1] >= 0.85 * nz  # the top of the head is at high k
    assert area[: nz // 10].max() < 0.5 * area.max()  # only brainstem / cerebellum at the bottom
    # The cerebellum (below the temporal lobes) lies posterior: at low slices, high j.
    assert np.argwhere(brain[:, :, nz // 10])[:, 1].mean() > 0.55 * ny
    # Left and right hemispheres are mirror images about the grid's centre.
    assert abs(np.argwhere(brain)[:, 0].mean() - (nx - 1) / 2) < 1.5


def test_contrast_ordering(enhancing_case):
    seg = enhancing_case[LABEL_KEY]
    tissues = template_tissue_maps(SHAPE)
    healthy = seg == 0
    wm = healthy & (tissues["wm"] > 0.9)
    csf = healthy & (tissues["csf"] > 0.6) & (enhancing_case["t1"] > 0)
    flair, t1, t1ce, t2 = (enhancing_case[m].astype(float) for m in ("flair", "t1", "t1ce", "t2"))
    assert wm.sum() > 50 and csf.sum() > 10
    assert flair[seg == 2].mean() > 1.3 * flair[wm].mean()
    assert t1ce[seg == 4].mean() > 1.5 * t1ce[seg == 1].mean()
    assert t1ce[seg == 4].mean() > t1ce[wm].mean()
    assert t1[wm].mean() > 1.5 * t1[csf].mean()
    assert t2[csf].mean() > t2[wm].mean()
    assert flair[csf].mean() < flair[wm].mean()


# ----------------------------------------------------------------------------------------- misc
@pytest.mark.parametrize(
    "kwargs",
    [{"dataset": "brats2019"}, {"cases": 0}, {"shape": (48, 15, 40)}, {"shape": (48, 48)}, {"seed": -1},
     {"first_id": 999, "cases": 2}],
)
def test_write_dataset_rejects_bad_arguments(tmp_path, kwargs):
    args = {"cases": 1, "seed": 0, "shape": SHAPE, "progress": False, **kwargs}
    with pytest.raises(BratsKerasError):
        write_dataset(tmp_path, **args)


def test_save_case_figure(tmp_path):
    (folder,) = write_dataset(tmp_path, cases=1, seed=0, shape=SHAPE, progress=False)
    png = save_case_figure(folder, tmp_path / "img" / "case.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "data_prep" / "synthesize.py"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_cli_writes_cases(tmp_path):
    out = tmp_path / "cli"
    result = run_cli("--dataset", "brats2021", "--out", str(out), "--cases", "2", "--seed", "0",
                     "--shape", "32", "32", "24", "--first-id", "7", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stdout and str(out.resolve()) in result.stdout
    for case_id in ("BraTS2021_00007", "BraTS2021_00008"):
        for key in KEYS:
            assert (out / case_id / f"{case_id}_{key}.nii.gz").is_file()
    assert nib.load(out / "BraTS2021_00008" / "BraTS2021_00008_t1.nii.gz").shape == (32, 32, 24)


@pytest.mark.parametrize(
    "args",
    [
        ("--dataset", "brats2020", "--cases", "0", "--seed", "0"),
        ("--dataset", "brats2020", "--cases", "1", "--seed", "0", "--shape", "48", "8", "48"),
        ("--dataset", "brats2020", "--cases", "2", "--seed", "0", "--first-id", "999", "--shape", "16", "16", "16"),
    ],
)
def test_cli_bad_arguments_fail_without_traceback(tmp_path, args):
    result = run_cli(*args, "--out", str(tmp_path / "bad"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr
