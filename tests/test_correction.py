"""Paper 3's offline pre-processing: N4 bias-field correction, denoising, z-score, written as BraTS NIfTI."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from brats_keras.data.brats import discover_cases, load_case
from brats_keras.data.correction import (
    MANIFEST_NAME, CorrectionSettings, brain_box, correct_dataset, correct_image, correct_volume, denoise, n4_correct,
    zscore_in_mask,
)
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.reporting import save_correction_figure
from tests.helpers import REPO, run_experiment

pytest.importorskip("SimpleITK")
SCRIPT = REPO / "data_prep" / "correct_bias.py"
FAST = CorrectionSettings(shrink_factor=2, iterations=(20, 20), denoise_iterations=1)


def _phantom(shape=(48, 48, 40), seed=0):
    """A two-tissue head (white matter 1.0 inside grey matter 0.7), a known smooth multiplicative
    field and a little noise: ``(biased, clean, field, brain, white_matter)``."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x ** 2 + y ** 2 + (1.1 * z) ** 2)
    brain, wm = r < 0.9, r < 0.55
    clean = np.where(wm, 1.0, np.where(brain, 0.7, 0.0)).astype(np.float32) * 500
    field = np.exp(0.35 * x - 0.25 * y + 0.2 * x * z).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)
    biased = np.where(brain, clean * field + noise, 0).astype(np.float32)
    return biased, clean, field, brain, wm


def _cv(volume, mask):
    return float(volume[mask].std() / volume[mask].mean())


def test_n4_removes_a_known_multiplicative_field():
    biased, _, field, brain, wm = _phantom()
    corrected, fitted = n4_correct(biased, brain, settings=CorrectionSettings())
    before, after = _cv(biased, wm), _cv(corrected, wm)
    assert before > 0.09 and after < 0.3 * before  # white matter is uniform again (measured 0.107 → 0.011)
    # the fitted field is the true one up to a constant factor (N4 cannot know the global scale)
    ratio = fitted[brain] / field[brain]
    assert ratio.std() / ratio.mean() < 0.05
    assert not corrected[~brain].any()


def test_denoiser_smooths_noise_but_keeps_the_tissue_edge():
    _, clean, _, brain, wm = _phantom()
    noisy = np.where(brain, clean + np.random.default_rng(1).normal(0, 25, clean.shape), 0).astype(np.float32)
    smoothed = denoise(noisy, settings=CorrectionSettings(denoise_iterations=3))
    inner = wm.copy()
    inner[:, :, :] &= np.roll(wm, 3, 0) & np.roll(wm, -3, 0)  # white matter away from its edge
    assert smoothed[inner].std() < 0.7 * noisy[inner].std()
    edge_contrast = smoothed[inner].mean() - smoothed[brain & ~wm & ~np.roll(wm, 3, 0) & ~np.roll(wm, -3, 0)].mean()
    assert edge_contrast > 0.8 * 150  # white 500 vs grey 350 stays apart
    assert np.array_equal(denoise(noisy, settings=CorrectionSettings(denoise="none")), noisy)


def test_zscore_is_computed_inside_the_mask_only():
    volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3) + 10
    mask = volume > 20
    out = zscore_in_mask(volume, mask)
    assert out[mask].mean() == pytest.approx(0, abs=1e-6) and out[mask].std() == pytest.approx(1, abs=1e-5)
    assert not out[~mask].any()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="modalities"):
        CorrectionSettings(modalities=("pd",))
    with pytest.raises(ValueError, match="denoise"):
        CorrectionSettings(denoise="median")
    with pytest.raises(ValueError, match="iterations"):
        CorrectionSettings(iterations=())


def test_dataset_is_written_in_brats_layout_and_skipped_when_fresh(synthetic_brats, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_brats, data, ignore=shutil.ignore_patterns("BraTS20_Training_00[3-6]"))
    out = tmp_path / "n4"
    manifest = correct_dataset(data, out, FAST, progress=False)
    assert {c: e["status"] for c, e in manifest["cases"].items()} == {
        "BraTS20_Training_001": "corrected", "BraTS20_Training_002": "corrected"}
    assert manifest["settings"] == FAST.to_json()
    assert json.loads((out / MANIFEST_NAME).read_text()) == manifest
    assert is_synthetic_dataset(out)  # the provenance marker travels with the set

    corrected = discover_cases(out)  # every reader of the package reads it as a BraTS folder
    assert [c.case_id for c in corrected] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    source = discover_cases(data)[0]
    case, raw = load_case(corrected[0]), load_case(source)
    np.testing.assert_array_equal(case.label, raw.label)
    np.testing.assert_array_equal(case.affine, raw.affine)
    brain = raw.image.any(axis=-1)
    for c in range(4):
        channel = case.image[..., c]
        assert channel[brain].mean() == pytest.approx(0, abs=1e-3) and channel[brain].std() == pytest.approx(1, abs=1e-3)
        assert not channel[~brain].any()
    assert nib.load(str(corrected[0].images["flair"])).get_data_dtype() == np.float32

    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    again = correct_dataset(data, out, FAST, progress=False)
    assert {e["status"] for e in again["cases"].values()} == {"up to date"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == written

    flair = data / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii.gz"
    flair.write_bytes(flair.read_bytes())  # a replaced source file: new mtime
    changed = correct_dataset(data, out, FAST, progress=False)
    assert changed["cases"]["BraTS20_Training_002"]["status"] == "corrected"
    assert changed["cases"]["BraTS20_Training_001"]["status"] == "up to date"
    other = correct_dataset(data, out, CorrectionSettings(shrink_factor=2, iterations=(10,), denoise="none"),
                            progress=False)
    assert {e["status"] for e in other["cases"].values()} == {"corrected"}  # new settings: redone


def test_cli_reports_a_failing_case_and_completes_the_others(synthetic_brats, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_brats, data, ignore=shutil.ignore_patterns("BraTS20_Training_00[4-6]"))
    broken = data / "BraTS20_Training_002" / "BraTS20_Training_002_t2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:1500])
    out = tmp_path / "n4"
    proc = run_experiment(SCRIPT, "--data-dir", str(data), "--out", str(out), "--shrink-factor", "2",
                          "--iterations", "10,10", "--workers", "2", cache=tmp_path / "cache", timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "BraTS20_Training_002: FAILED" in proc.stdout + proc.stderr and "_t2.nii.gz" in proc.stdout + proc.stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["cases"]["BraTS20_Training_002"]["status"] == "failed"
    assert {manifest["cases"][c]["status"] for c in ("BraTS20_Training_001", "BraTS20_Training_003")} == {"corrected"}
    assert (out / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz").is_file()
    assert "2 corrected, 0 up to date, 1 failed" in proc.stdout
    bad = run_experiment(SCRIPT, "--data-dir", str(data), "--out", str(data), cache=tmp_path / "cache")
    assert bad.returncode == 2 and "must differ from the data folder" in bad.stderr
    bad = run_experiment(SCRIPT, "--data-dir", str(data), "--out", str(out), "--iterations", "0",
                         cache=tmp_path / "cache")
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad setting: iterations")


def test_the_brain_box_crop_leaves_the_brain_unchanged():
    biased, _, _, brain, _ = _phantom()
    padded = np.zeros((64, 60, 52), np.float32)
    padded[8:56, 6:54, 6:46] = biased
    mask = np.zeros(padded.shape, bool)
    mask[8:56, 6:54, 6:46] = brain
    box = brain_box(mask)
    assert all(s.start >= 0 and s.stop <= n for s, n in zip(box, mask.shape))
    assert mask[box].sum() == mask.sum() and np.prod([s.stop - s.start for s in box]) < mask.size
    out = correct_volume(padded, mask, settings=FAST)
    assert out.shape == padded.shape and not out[~mask].any()
    assert abs(out[mask].mean()) < 1e-4 and abs(out[mask].std() - 1) < 1e-3
    assert brain_box(np.zeros((4, 5, 6), bool)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def test_correct_image_checks_its_channels_and_the_figure_is_drawn(synthetic_brats, tmp_path):
    with pytest.raises(ValueError, match="expected"):
        correct_image(np.zeros((8, 8, 8, 2), np.float32), settings=FAST)
    files = discover_cases(synthetic_brats)[0]
    png = save_correction_figure(files, tmp_path / "bias.png", FAST, modality="flair", synthetic=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="modality"):
        save_correction_figure(files, tmp_path / "x.png", CorrectionSettings(modalities=("t1",)), modality="flair")
