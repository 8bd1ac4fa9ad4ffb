"""Paper 2's 3D pre-processing against a plain re-statement of the reference steps, and its loader."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler

from brats_keras.data.pipeline import make_dataset
from brats_keras.data.volumes3d import (
    Preprocess3DSettings,
    VolumeIndex,
    minmax_per_slice,
    parse_crop,
    preprocess_dataset_3d,
)
from brats_keras.errors import DataError

CROP = ((8, 40), (8, 40), (4, 36))  # a 32³ window of the tiny 48×48×40 grid
SETTINGS = Preprocess3DSettings(crop=CROP)


def reference_case(case_dir, crop=CROP):
    """The reference notebook's steps, written out literally (float64, sklearn, per modality)."""
    cid = case_dir.name
    load = lambda m: nib.load(str(case_dir / f"{cid}_{m}.nii.gz")).get_fdata()  # noqa: E731
    scaler = MinMaxScaler()
    chans = []
    for m in ("flair", "t1ce", "t2"):
        v = load(m)
        chans.append(scaler.fit_transform(v.reshape(-1, v.shape[-1])).reshape(v.shape))
    mask = load("seg").astype(np.uint8)
    mask[mask == 4] = 3
    image = np.stack(chans, axis=3)
    (x0, x1), (y0, y1), (z0, z1) = crop
    image, mask = image[x0:x1, y0:y1, z0:z1], mask[x0:x1, y0:y1, z0:z1]
    _, counts = np.unique(mask, return_counts=True)
    keep = (1 - (counts[0] / counts.sum())) > 0.01
    return image, mask, keep


def test_minmax_per_slice_equals_sklearn_on_reshape():
    v = np.random.default_rng(0).normal(size=(10, 12, 7)) * 100
    v[:, :, 3] = 5.0  # a constant slice → 0, as sklearn's zero-range rule
    ref = MinMaxScaler().fit_transform(v.reshape(-1, 7)).reshape(v.shape)
    np.testing.assert_allclose(minmax_per_slice(v), ref, atol=1e-6)
    assert (minmax_per_slice(v)[:, :, 3] == 0).all()


def test_preprocessing_matches_reference_steps(synthetic_brats, tmp_path):
    manifest = preprocess_dataset_3d(synthetic_brats, tmp_path, SETTINGS, progress=False)
    assert len(manifest["kept"]) + len(manifest["skipped"]) == 6
    for entry in manifest["kept"] + manifest["skipped"]:
        ref_image, ref_mask, keep = reference_case(synthetic_brats / entry["case_id"])
        assert entry["kept"] == keep
        assert entry["tumour_fraction"] == pytest.approx(np.count_nonzero(ref_mask) / ref_mask.size, abs=1e-6)
        if keep:
            image = np.load(tmp_path / entry["image"])
            mask = np.load(tmp_path / entry["mask"])
            assert image.shape == (32, 32, 32, 3) and image.dtype == np.float32
            assert mask.dtype == np.uint8
            np.testing.assert_allclose(image, ref_image, atol=1e-6)
            np.testing.assert_array_equal(mask, ref_mask)
    assert manifest["kept"], "the synthetic fixture must have tumour in the crop"


def test_skips_cases_without_enough_tumour_and_says_why(synthetic_brats, tmp_path):
    corner = Preprocess3DSettings(crop=((0, 8), (0, 8), (0, 8)))  # outside the head: no tumour
    manifest = preprocess_dataset_3d(synthetic_brats, tmp_path, corner, progress=False)
    assert manifest["kept"] == [] and len(manifest["skipped"]) == 6
    assert all("tumour fraction" in e["reason"] for e in manifest["skipped"])
    assert not (tmp_path / "images").exists()


def test_no_tumour_filter_keeps_every_case(synthetic_brats, tmp_path):
    """``min_tumour_fraction=None``: an external test cohort is never selected by its labels."""
    corner = Preprocess3DSettings(crop=((0, 8), (0, 8), (0, 8)), min_tumour_fraction=None)
    manifest = preprocess_dataset_3d(synthetic_brats, tmp_path, corner, progress=False)
    assert len(manifest["kept"]) == 6 and manifest["skipped"] == []
    assert all(e["tumour_fraction"] == 0.0 for e in manifest["kept"])
    assert len(list((tmp_path / "masks").glob("*.npy"))) == 6


def test_per_volume_scaling_option(synthetic_brats, tmp_path):
    settings = Preprocess3DSettings(crop=CROP, scaling="per_volume")
    manifest = preprocess_dataset_3d(synthetic_brats, tmp_path, settings, progress=False)
    entry = manifest["kept"][0]
    flair = nib.load(str(synthetic_brats / entry["case_id"] / f"{entry['case_id']}_flair.nii.gz")).get_fdata()
    expected = ((flair - flair.min()) / (flair.max() - flair.min()))[8:40, 8:40, 4:36]
    np.testing.assert_allclose(np.load(tmp_path / entry["image"])[..., 0], expected, atol=1e-6)


def test_rerun_resumes_and_settings_change_recomputes(synthetic_brats, tmp_path, monkeypatch):
    import brats_keras.data.volumes3d as v3

    preprocess_dataset_3d(synthetic_brats, tmp_path, SETTINGS, progress=False)
    calls = []
    original = v3._process_one
    monkeypatch.setattr(v3, "_process_one", lambda *a: calls.append(a[0].case_id) or original(*a))
    preprocess_dataset_3d(synthetic_brats, tmp_path, SETTINGS, progress=False)
    assert calls == []
    kept = json.loads((tmp_path / "manifest.json").read_text())["kept"]
    (tmp_path / kept[0]["image"]).unlink()  # a lost output is recomputed
    preprocess_dataset_3d(synthetic_brats, tmp_path, SETTINGS, progress=False)
    assert calls == [kept[0]["case_id"]]
    preprocess_dataset_3d(synthetic_brats, tmp_path, Preprocess3DSettings(crop=CROP, scaling="per_volume"),
                          progress=False)
    assert len(calls) == 7


def test_crop_that_does_not_fit_is_a_data_error(synthetic_brats, tmp_path):
    with pytest.raises(DataError, match=r"does not fit the volume shape \(48, 48, 40\)") as info:
        preprocess_dataset_3d(synthetic_brats, tmp_path, Preprocess3DSettings(), progress=False)
    assert "BraTS20_Training_001" in str(info.value)


def test_parse_crop_and_settings_validation():
    assert parse_crop("56:184,56:184,13:141") == ((56, 184), (56, 184), (13, 141))
    for bad in ("56:184,56:184", "a:b,1:2,3:4", "1:2:3,1:2,1:2"):
        with pytest.raises(ValueError, match="crop"):
            parse_crop(bad)
    with pytest.raises(ValueError, match="crop"):
        Preprocess3DSettings(crop=((10, 5), (0, 1), (0, 1)))
    with pytest.raises(ValueError, match="scaling"):
        Preprocess3DSettings(scaling="robust")


def test_volume_loader_batches(synthetic_brats, tmp_path):
    manifest = preprocess_dataset_3d(synthetic_brats, tmp_path, SETTINGS, progress=False)
    index = VolumeIndex(tmp_path)
    assert len(index) == len(manifest["kept"]) and index.x_shape == (32, 32, 32, 3)
    x, y = next(iter(make_dataset(index, batch_size=2)))
    assert x.shape == (2, 32, 32, 32, 3) and y.shape == (2, 32, 32, 32, 4)
    np.testing.assert_array_equal(x.numpy()[0], np.load(tmp_path / manifest["kept"][0]["image"]))
    np.testing.assert_array_equal(y.numpy()[1].argmax(-1), np.load(tmp_path / manifest["kept"][1]["mask"]))
    one = VolumeIndex(tmp_path, [manifest["kept"][1]["case_id"]])
    assert len(one) == 1
    with pytest.raises(DataError, match="not among the kept"):
        VolumeIndex(tmp_path, ["BraTS20_Training_999"])
    with pytest.raises(DataError, match="manifest.json"):
        VolumeIndex(tmp_path / "nowhere")
    np.save(tmp_path / manifest["kept"][0]["image"], np.zeros((4, 4, 4, 3), np.float32))
    with pytest.raises(DataError, match=r"expected \(32, 32, 32, 3\)"):
        index.gather(np.array([0]))
