"""Whole-volume evaluation: BraTS regions, Dice, HD95, sensitivity, specificity, aggregation.

Expected values are computed by hand (cubes, single voxels, 1-D segments) or by independent
implementations: a brute-force all-pairs surface distance written here, and medpy when installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from brats_keras import evaluation as ev
from brats_keras.evaluation import (HD95_EMPTY, REGIONS, aggregate, dice, evaluate_case, hd95, region_masks,
                                    sensitivity, specificity)

pytestmark = pytest.mark.backend_agnostic

SHAPE = (16, 16, 16)


def cube(shape=SHAPE, start=(4, 4, 4), size=6) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def shifted(start, axis, k):
    start = list(start)
    start[axis] += k
    return tuple(start)


def blob(rng: np.random.Generator, shape, sigma=2.0, fraction=0.3, base=None, mix=0.0) -> np.ndarray:
    """Smooth random blob: Gaussian-filtered noise thresholded to keep ``fraction`` of the voxels."""
    noise = rng.standard_normal(shape)
    if base is not None:
        noise = base + mix * noise
    smooth = ndimage.gaussian_filter(noise, sigma)
    return smooth > np.quantile(smooth, 1.0 - fraction)


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """HD95 from first principles: 6-neighbour boundary voxels, all-pairs Euclidean distances."""

    def surface(mask):
        padded = np.pad(mask, 1)  # outside the volume counts as background
        centre = tuple(slice(1, -1) for _ in range(mask.ndim))
        interior = mask.copy()
        for axis in range(mask.ndim):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[centre]
        return mask & ~interior

    pa = np.argwhere(surface(a)) * np.asarray(spacing, float)
    pb = np.argwhere(surface(b)) * np.asarray(spacing, float)
    distances = cdist(pa, pb)
    return float(np.percentile(np.concatenate([distances.min(axis=1), distances.min(axis=0)]), 95))


# ---------------------------------------------------------------------------------------------
# Hand-computed binary metrics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cubes_hd95_and_dice(axis, k):
    # Every back-face voxel of one cube (36 of 152 surface voxels) is exactly k from the other
    # cube's surface and no surface voxel is farther, so the top 5 % of distances all equal k.
    a = cube()
    b = cube(start=shifted((4, 4, 4), axis, k))
    assert hd95(a, b) == pytest.approx(float(k), abs=1e-12)
    assert hd95(b, a) == pytest.approx(float(k), abs=1e-12)
    assert dice(a, b) == pytest.approx((6 - k) / 6, abs=1e-12)


@pytest.mark.parametrize("axis, expected", [(0, 2.0), (1, 2.0), (2, 6.0)])
def test_anisotropic_spacing_scales_the_shift_axis(axis, expected):
    a = cube()
    b = cube(start=shifted((4, 4, 4), axis, 2))
    assert hd95(a, b, spacing=(1.0, 1.0, 3.0)) == pytest.approx(expected, abs=1e-12)


def test_single_voxels_distance_is_euclidean_in_mm():
    a = np.zeros(SHAPE, bool)
    b = np.zeros(SHAPE, bool)
    a[2, 2, 2] = True
    b[5, 6, 2] = True
    assert hd95(a, b) == pytest.approx(5.0, abs=1e-12)  # 3-4-5 triangle
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(6**2 + 4**2), abs=1e-12)
    assert hd95(a, b, spacing=2.5) == pytest.approx(12.5, abs=1e-12)  # one number for all axes


def test_hd95_is_the_percentile_of_the_union_of_both_directed_sets():
    # 1-D: A = voxels 0..3 (surface {0, 3}), B = voxel 20. d(A→B) = {20, 17}, d(B→A) = {17}.
    # Union sorted [17, 17, 20]: position 0.95·2 = 1.9 → 17 + 0.9·3 = 19.7. (The larger of the two
    # directed 95th percentiles would be 19.85; the plain maximum 20.)
    a = np.zeros(30, bool)
    b = np.zeros(30, bool)
    a[0:4] = True
    b[20] = True
    assert hd95(a, b) == pytest.approx(19.7, abs=1e-12)


def test_voxels_on_the_volume_edge_are_surface():
    # A fills the whole 1-D volume: its surface is the two end voxels, 2 voxels from B's voxel.
    a = np.ones(5, bool)
    b = np.zeros(5, bool)
    b[2] = True
    assert hd95(a, b) == pytest.approx(2.0, abs=1e-12)


def test_identical_masks():
    a = cube()
    assert dice(a, a) == 1.0
    assert hd95(a, a, spacing=(1.0, 2.0, 3.0)) == 0.0
    assert sensitivity(a, a) == 1.0
    assert specificity(a, a) == 1.0


def test_cropping_does_not_change_distances():
    rng = np.random.default_rng(11)
    a = blob(rng, (12, 10, 9))
    b = blob(rng, (12, 10, 9))
    big_a = np.zeros((40, 37, 30), bool)
    big_b = np.zeros((40, 37, 30), bool)
    big_a[20:32, 5:15, 17:26] = a
    big_b[20:32, 5:15, 17:26] = b
    spacing = (0.8, 1.3, 2.0)
    # Inside the big volume the small volume's edges are no longer surfaces: compare brute force.
    assert hd95(big_a, big_b, spacing) == pytest.approx(brute_force_hd95(big_a, big_b, spacing), abs=1e-9)
    assert hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), abs=1e-9)


def test_empty_conventions():
    empty = np.zeros(SHAPE, bool)
    full = cube()
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0
    assert sensitivity(empty, empty) == 1.0
    assert specificity(empty, empty) == 1.0

    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert hd95(full, empty) == HD95_EMPTY == 373.13
    assert hd95(empty, full) == HD95_EMPTY
    assert hd95(empty, full, empty_value=500.0) == 500.0
    assert sensitivity(full, empty) == 0.0  # false-positive region, empty reference
    assert sensitivity(empty, full) == 0.0  # missed region
    assert specificity(empty, full) == 1.0
    assert specificity(full, empty) == pytest.approx(1.0 - 216 / 4096, abs=1e-12)


def test_sensitivity_specificity_by_hand():
    ref = np.zeros(100, bool)
    pred = np.zeros(100, bool)
    ref[10:20] = True  # 10 positives
    pred[14:27] = True  # 6 true positives, 7 false positives
    assert sensitivity(pred, ref) == pytest.approx(6 / 10, abs=1e-12)
    assert specificity(pred, ref) == pytest.approx((90 - 7) / 90, abs=1e-12)
    assert dice(pred, ref) == pytest.approx(2 * 6 / (13 + 10), abs=1e-12)
    # Reference covering everything: specificity follows the mirrored empty convention.
    everything = np.ones(100, bool)
    assert specificity(everything, everything) == 1.0
    assert specificity(pred, everything) == 0.0


# ---------------------------------------------------------------------------------------------
# Independent implementations
# ---------------------------------------------------------------------------------------------


SPACINGS = [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (0.7, 1.2, 2.5)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_matches_brute_force(seed, spacing):
    rng = np.random.default_rng(seed)
    shape = (20, 18, 14)
    base = rng.standard_normal(shape)
    ref = blob(rng, shape, base=base, mix=0.0)
    pred = blob(rng, shape, base=base, mix=0.8, fraction=0.25)
    assert hd95(pred, ref, spacing) == pytest.approx(brute_force_hd95(pred, ref, spacing), abs=1e-9)


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_agrees_with_medpy(seed, spacing):
    medpy_binary = pytest.importorskip("medpy.metric.binary", reason="medpy not installed (pip install medpy)")
    rng = np.random.default_rng(seed)
    shape = (24, 20, 16)
    base = rng.standard_normal(shape)
    ref = blob(rng, shape, base=base, fraction=0.3)
    pred = blob(rng, shape, base=base, mix=1.0, fraction=0.2)
    assert hd95(pred, ref, spacing) == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-6)
    assert dice(pred, ref) == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-6)
    assert sensitivity(pred, ref) == pytest.approx(medpy_binary.sensitivity(pred, ref), abs=1e-6)
    assert specificity(pred, ref) == pytest.approx(medpy_binary.specificity(pred, ref), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Label volumes and regions
# ---------------------------------------------------------------------------------------------


def test_label_one_prediction_counts_for_tc_and_wt_only():
    ref = np.zeros(SHAPE, np.uint8)
    ref[cube()] = 4
    pred = np.zeros(SHAPE, np.uint8)
    pred[cube()] = 1
    scores = evaluate_case(pred, ref)
    assert list(scores) == ["ET", "TC", "WT"]
    assert scores["TC"] == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}
    assert scores["WT"] == scores["TC"]
    assert scores["ET"]["dice"] == 0.0
    assert scores["ET"]["hd95"] == HD95_EMPTY
    assert scores["ET"]["sensitivity"] == 0.0
    assert scores["ET"]["specificity"] == 1.0

    edema = np.where(pred > 0, 2, 0).astype(np.uint8)
    scores = evaluate_case(edema, ref)
    assert scores["WT"]["dice"] == 1.0
    assert scores["TC"]["dice"] == 0.0 and scores["ET"]["dice"] == 0.0


def test_region_masks_and_class_indices():
    volume = np.array([0, 1, 2, 4, 4, 2], np.uint8)
    masks = region_masks(volume)
    np.testing.assert_array_equal(masks["ET"], [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(masks["TC"], [0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(masks["WT"], [0, 1, 1, 1, 1, 1])
    classes = region_masks(np.where(volume == 4, 3, volume), labels="classes")
    for name in REGIONS:
        np.testing.assert_array_equal(classes[name], masks[name])


def random_labels(rng, shape):
    """Nested blobs WT ⊃ TC ⊃ ET-ish with BraTS labels, as a smooth tumour."""
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    out = np.zeros(shape, np.uint8)
    out[smooth > np.quantile(smooth, 0.7)] = 2
    out[smooth > np.quantile(smooth, 0.85)] = 4
    out[smooth > np.quantile(smooth, 0.95)] = 1
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_case_matches_binary_metrics_on_full_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (30, 26, 20)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[5:25, 4:22, 3:17] = random_labels(rng, (20, 18, 14))
    pred[6:26, 4:22, 2:16] = random_labels(rng, (20, 18, 14))
    spacing = (1.0, 0.9, 2.0)
    scores = evaluate_case(pred, ref, spacing)
    pm, rm = region_masks(pred), region_masks(ref)
    for name in REGIONS:
        expected = {
            "dice": dice(pm[name], rm[name]),
            "hd95": brute_force_hd95(pm[name], rm[name], spacing),
            "sensitivity": sensitivity(pm[name], rm[name]),
            "specificity": specificity(pm[name], rm[name]),
        }
        assert scores[name] == pytest.approx(expected, abs=1e-9), name
    # Class-index and float label volumes give the same numbers.
    as_classes = evaluate_case(np.where(pred == 4, 3, pred), np.where(ref == 4, 3, ref), spacing, labels="classes")
    assert as_classes == scores
    assert evaluate_case(pred.astype(np.float64), ref.astype(np.float32), spacing) == scores


def test_evaluate_case_both_volumes_empty():
    empty = np.zeros((8, 8, 8), np.int16)
    scores = evaluate_case(empty, empty)
    for name in REGIONS:
        assert scores[name] == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}


def test_evaluate_case_custom_empty_hd95():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 2
    scores = evaluate_case(np.zeros_like(ref), ref, empty_hd95=99.0)
    assert scores["WT"]["hd95"] == 99.0
    assert scores["ET"]["hd95"] == 0.0  # both empty


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def _case(d):
    return {"WT": {"dice": d, "hd95": 10 * d}}


def test_aggregate_by_hand():
    summary = aggregate([_case(0.5), _case(0.7), _case(0.9), _case(math.nan)])
    stats = summary["WT"]["dice"]
    assert stats["count"] == 3
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["median"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(0.2)  # sample std (ddof=1)
    assert (stats["min"], stats["max"]) == (0.5, 0.9)
    # BraTS leaderboard quartiles, linear interpolation between order statistics: 0.5 + 0.5·0.2, 0.7 + 0.5·0.2
    assert (stats["p25"], stats["p75"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert aggregate([_case(0.5), _case(0.9)], ddof=0)["WT"]["hd95"]["std"] == pytest.approx(2.0)
    assert math.isnan(aggregate([_case(0.5)])["WT"]["dice"]["std"])
    by_id = aggregate({"a": _case(0.2), "b": _case(0.4)})
    assert by_id["WT"]["dice"]["mean"] == pytest.approx(0.3)


def test_aggregate_of_evaluate_case_results():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    results = [evaluate_case(ref, ref), evaluate_case(np.zeros_like(ref), ref)]
    summary = aggregate(results)
    assert set(summary) == set(REGIONS)
    assert summary["WT"]["dice"]["mean"] == pytest.approx(0.5)
    assert summary["WT"]["hd95"]["median"] == pytest.approx(HD95_EMPTY / 2)
    assert summary["ET"]["dice"]["mean"] == 1.0


def test_aggregate_rejects_empty_and_mismatched_input():
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="case result 1"):
        aggregate([_case(0.5), {"TC": {"dice": 0.5, "hd95": 1.0}}])


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"shape \(8, 8, 8\) differs from reference shape \(8, 8, 7\)"):
        evaluate_case(np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 7), np.uint8))
    with pytest.raises(ValueError, match="differs"):
        hd95(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_label_three_under_brats_labels_is_reported():
    pred = np.zeros((6, 6, 6), np.uint8)
    ref = pred.copy()
    ref[1, 1, 1] = 3
    with pytest.raises(ValueError, match=r"reference holds labels \[3\].*labels='classes'") as info:
        evaluate_case(pred, ref, case="BraTS20_Training_001")
    assert "BraTS20_Training_001" in str(info.value)
    assert isinstance(info.value, ev.DataError)


@pytest.mark.parametrize("value, labels, fragment", [
    (4, "classes", r"labels \[4\].*labels='brats'"),
    (-1, "brats", r"labels \[-1\]"),
    (7, "brats", r"labels \[7\]"),
    (1.5, "brats", "non-integer"),
    (math.nan, "brats", "NaN"),
])
def test_bad_label_values(value, labels, fragment):
    pred = np.zeros((6, 6, 6), np.float64)
    pred[2, 3, 4] = value
    with pytest.raises(ValueError, match=fragment):
        evaluate_case(pred, np.zeros((6, 6, 6), np.uint8), labels=labels)


def test_bad_arguments():
    vol = np.zeros((6, 6, 6), np.uint8)
    with pytest.raises(ValueError, match="labels must be one of"):
        evaluate_case(vol, vol, labels="brats2023")
    with pytest.raises(ValueError, match="one value per axis"):
        evaluate_case(vol, vol, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive and finite"):
        evaluate_case(vol, vol, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="positive and finite"):
        hd95(cube(), cube(), spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be"):
        hd95(cube(), cube(), spacing="1mm")
    with pytest.raises(ValueError, match="boolean mask"):
        evaluate_case(vol.astype(bool), vol)


def test_evaluate_case_specificity_when_reference_fills_the_volume():
    ref = np.full((6, 6, 6), 2, np.uint8)  # WT everywhere: no WT negatives
    assert evaluate_case(ref, ref)["WT"]["specificity"] == 1.0
    pred = ref.copy()
    pred[0, 0, 0] = 0
    scores = evaluate_case(pred, ref)
    assert scores["WT"]["specificity"] == 0.0
    assert scores["WT"]["sensitivity"] == pytest.approx(215 / 216)
    assert scores["ET"]["specificity"] == 1.0  # ET empty in both: every voxel a true negative


def test_paper4_scores_from_counts_match_their_definitions():
    s = ev.scores_from_counts(tp=30, fp=10, fn=20, tn=940)
    assert s["dice"] == pytest.approx(60 / 90) and s["iou"] == pytest.approx(30 / 60)
    assert s["precision"] == pytest.approx(0.75) and s["sensitivity"] == pytest.approx(0.6)
    assert s["accuracy"] == pytest.approx(970 / 1000) and s["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_ji_is_dsc_over_two_minus_dsc_and_f1_is_dsc_for_any_masks():
    rng = np.random.default_rng(7)
    for _ in range(200):
        truth = rng.random((16, 16)) < rng.uniform(0, 0.5)
        pred = rng.random((16, 16)) < rng.uniform(0, 0.5)
        s = ev.segmentation_scores(pred, truth)
        assert s["iou"] == pytest.approx(s["dice"] / (2 - s["dice"]), abs=1e-12)
        assert s["iou"] <= s["dice"] + 1e-12
        assert s["f1"] == pytest.approx(s["dice"], abs=1e-12)
        assert s["dice"] == pytest.approx(dice(pred, truth))


def test_paper4_scores_empty_conventions_and_bad_counts():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert ev.segmentation_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "sensitivity": 1.0,
                                                    "accuracy": 1.0, "f1": 1.0}
    missed = ev.segmentation_scores(empty, full)
    assert missed["dice"] == missed["iou"] == missed["precision"] == missed["sensitivity"] == missed["f1"] == 0.0
    assert ev.overlap_counts(full, empty) == {"tp": 0, "fp": 16, "fn": 0, "tn": 0}
    with pytest.raises(ValueError, match="non-negative"):
        ev.scores_from_counts(tp=-1, fp=0, fn=0, tn=1)
    with pytest.raises(ValueError, match="all zero"):
        ev.scores_from_counts(tp=0, fp=0, fn=0, tn=0)
