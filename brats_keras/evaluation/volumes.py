"""NumPy evaluation of whole label volumes: BraTS regions, Dice, HD95, sensitivity, specificity.

This module runs after prediction, on full-resolution label volumes (NumPy arrays, any number of
spatial axes, typically ``(H, W, D)`` = 240×240×155 for BraTS). It needs only NumPy and SciPy.

Regions (BraTS challenge definition, labels 0 / 1 = necrotic and non-enhancing core / 2 = edema /
4 = enhancing)::

    ET = {4}        TC = {1, 4}        WT = {1, 2, 4}

Class-index volumes (training classes 0..3, where BraTS label 4 became class 3, which is also the
BraTS 2023 label convention) are evaluated with ``labels="classes"``.

Metrics per region, for a prediction ``P`` and a reference ``R`` (binary masks of one region):

* **Dice** ``2|P∩R| / (|P|+|R|)``.
* **HD95** (mm): the symmetric 95th-percentile Hausdorff distance exactly as
  ``medpy.metric.binary.hd95`` computes it. The surface of a mask is its boundary voxels,
  ``mask XOR erode(mask)`` with the connectivity-1 structuring element (voxels on the edge of the
  volume count as surface); the directed distances are, for every surface voxel of one mask, the
  Euclidean distance (in mm, ``spacing`` per axis) to the nearest surface voxel of the other mask;
  HD95 is ``numpy.percentile(concat(d(P→R), d(R→P)), 95)`` (linear interpolation). Distance
  transforms are computed only inside the bounding box of ``P ∪ R`` padded by one background
  voxel, which gives exactly the same distances as the full volume (every surface voxel, hence
  every zero of the distance-transform input, lies inside the box).
* **Sensitivity** ``|P∩R| / |R|`` and **specificity** ``|¬P∩¬R| / |¬R|``, the negatives counted
  over the whole volume (as the BraTS toolkits do; there is no brain mask).

Empty-region conventions (nnU-Net's BraTS scorer, BraTS 2023 metrics):

* both empty: Dice 1, HD95 0, sensitivity 1;
* exactly one empty: Dice 0, HD95 ``HD95_EMPTY`` = 373.13 mm (an argument), sensitivity below.

Sensitivity with an empty reference is 1.0 when the prediction is empty too and 0.0 otherwise
(GaNDLF / BraTS 2023 toolkit: ``TP / (TP + FN + tiny)`` with the both-empty case set to 1), so a
case never produces NaN and a false-positive region costs sensitivity as it costs Dice. An empty
prediction with a non-empty reference gives sensitivity 0 by the formula. Specificity mirrors it
(specificity of ``P, R`` is the sensitivity of ``¬P, ¬R``): if the reference covers the whole
volume, specificity is 1.0 when the prediction does too, 0.0 otherwise.

Example::

    scores = evaluate_case(pred_labels, seg, spacing=(1.0, 1.0, 1.0))
    scores["WT"]["dice"], scores["ET"]["hd95"]
    summary = aggregate([scores, ...])      # summary["WT"]["dice"]["mean"]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from brats_keras.errors import DataError
from brats_keras.labels import BRATS, BRATS_2023, region_codes

HD95_EMPTY: float = 373.13
"""HD95 (mm) given when exactly one of prediction and reference is empty: the diagonal of the
240×240×155 BraTS volume at 1 mm (√(240² + 240² + 155²) = 373.129 mm, rounded), the value
nnU-Net's BraTS scorer and the BraTS 2023 metrics use."""

REGIONS: dict[str, tuple[int, ...]] = region_codes(BRATS)
"""BraTS evaluation regions as sets of BraTS labels (enhancing tumour, tumour core, whole tumour):
``{"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}`` (:data:`brats_keras.labels.BRATS_REGIONS`)."""

METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
"""Metric names of every region in an :func:`evaluate_case` result, in this order."""

LABEL_SETS: dict[str, tuple[int, ...]] = {"brats": BRATS.codes, "classes": BRATS_2023.codes}
"""Allowed voxel values for ``labels="brats"`` (BraTS 2017–2021 labels) and ``labels="classes"``
(training class indices, 3 = enhancing; also the BraTS 2023 label convention)."""

_ENHANCING = BRATS.by_key("ET").title

SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "median", "p25", "p75", "min", "max", "count")
"""Statistics :func:`aggregate` gives for every region and metric."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Return ``spacing`` as one positive finite float per axis (a scalar applies to all axes)."""
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = None if isinstance(spacing, str) else np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 1:
        raise ValueError(f"spacing must be a number or a sequence of numbers, got {spacing!r}")
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise ValueError(f"spacing must give one value per axis ({ndim}), got {tuple(values.tolist())}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be positive and finite, got {tuple(values.tolist())}")
    return tuple(float(v) for v in values)


def _check_masks(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks (non-zero = foreground) of equal, non-empty shape."""
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim == 0 or pred.size == 0:
        raise DataError(f"masks must have at least one axis and one voxel, got shape {pred.shape}")
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _check_labels_name(labels: str) -> tuple[int, ...]:
    if labels not in LABEL_SETS:
        raise ValueError(f"labels must be one of {sorted(LABEL_SETS)}, got {labels!r}")
    return LABEL_SETS[labels]


def _check_label_volume(volume, what: str, labels: str, case: str | None) -> np.ndarray:
    """Validate a label volume and return it as ``uint8``; ``DataError`` names any bad value."""
    allowed = _check_labels_name(labels)
    arr = np.asarray(volume)
    if arr.dtype == bool:
        raise DataError(f"{what} is a boolean mask, not a label volume; use dice()/hd95() for binary masks",
                        case=case)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{what} has dtype {arr.dtype}; expected integer or float labels", case=case)
    if arr.ndim == 0 or arr.size == 0:
        raise DataError(f"{what} must have at least one axis and one voxel, got shape {arr.shape}", case=case)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{what} holds NaN or infinite values", case=case)
        fractional = arr != np.round(arr)
        if np.any(fractional):
            examples = np.unique(arr[fractional])[:5].tolist()
            raise DataError(f"{what} holds non-integer label values, e.g. {examples}", case=case)
    top = max(allowed)
    out_of_range = (arr < 0) | (arr > top)
    if np.any(out_of_range):
        bad = sorted({int(v) for v in np.unique(arr[out_of_range])[:10]})
    else:
        arr = arr.astype(np.uint8, copy=False)
        counts = np.bincount(arr.ravel(), minlength=top + 1)
        bad = [v for v in range(top + 1) if counts[v] and v not in allowed]
    if bad:
        hint = ""
        if labels == "brats" and 3 in bad:
            hint = (f"; label 3 is the BraTS 2023 / class-index code for {_ENHANCING}: pass "
                    "labels='classes' if that is what it means")
        elif labels == "classes" and 4 in bad:
            hint = f"; label 4 is the BraTS 2017-2021 code for {_ENHANCING}: pass labels='brats'"
        raise DataError(f"{what} holds labels {bad} outside the allowed set {list(allowed)} "
                        f"(labels={labels!r}){hint}", case=case)
    return arr.astype(np.uint8, copy=False)


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box of slices holding every ``True`` voxel, or ``None`` for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        line = np.any(mask, axis=others) if others else mask
        hits = np.flatnonzero(line)
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels ``mask XOR erode(mask)`` (connectivity-1 structuring element, as medpy)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def _symmetric_surface_distances(pred: np.ndarray, ref: np.ndarray,
                                 spacing: tuple[float, ...]) -> np.ndarray:
    """Union of the directed surface distances pred→ref and ref→pred (both masks non-empty).

    Both masks are cropped to the bounding box of their union and padded by one ``False`` voxel on
    every side. Every surface voxel (hence every zero of the distance-transform input) lies in that
    box, so each distance equals the full-volume one. Erosion is unchanged too: a mask voxel on
    the box edge has a background neighbour outside the box, and one on the volume edge is eroded
    by the padding exactly as by the background border of ``binary_erosion`` (medpy's behaviour).
    """
    box = _bounding_box(pred | ref)
    pred = np.pad(pred[box], 1)
    ref = np.pad(ref[box], 1)
    pred_surface = _surface(pred)
    ref_surface = _surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    return np.concatenate([to_ref, to_pred])


# --------------------------------------------------------------------------------------------
# Binary metrics
# --------------------------------------------------------------------------------------------


def _dice_from_counts(n_pred: int, n_ref: int, n_both: int) -> float:
    return 1.0 if n_pred + n_ref == 0 else 2.0 * n_both / (n_pred + n_ref)


def _rate(n_hit: int, n_true: int, n_pred_positive: int) -> float:
    """``n_hit / n_true``; when ``n_true == 0``: 1.0 if nothing was predicted there either, else 0.0."""
    if n_true == 0:
        return 1.0 if n_pred_positive == 0 else 0.0
    return n_hit / n_true


def dice(pred, ref) -> float:
    """Dice coefficient ``2|P∩R| / (|P|+|R|)`` of two binary masks (non-zero = foreground).

    Both masks empty gives 1.0 (agreement on absence); exactly one empty gives 0.0.
    """
    pred, ref = _check_masks(pred, ref)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    return _dice_from_counts(n_pred, n_ref, int(np.count_nonzero(pred & ref)))


def hd95(pred, ref, spacing=None, *, empty_value: float = HD95_EMPTY) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two binary masks.

    Same definition and value as ``medpy.metric.binary.hd95(pred, ref, voxelspacing=spacing)``
    (see the module docstring), plus the empty conventions: both masks empty → 0.0, exactly one
    empty → ``empty_value`` (default :data:`HD95_EMPTY` = 373.13 mm).

    Args:
        pred, ref: arrays of equal shape, any number of axes; non-zero voxels are foreground.
        spacing: voxel size in mm, one value per axis (or one number for all); ``None`` = 1 mm.
        empty_value: distance reported when exactly one mask is empty.
    """
    pred, ref = _check_masks(pred, ref)
    spacing = _check_spacing(spacing, pred.ndim)
    return _hd95_checked(pred, ref, spacing, empty_value)


def _hd95_checked(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty_value: float) -> float:
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return 0.0
    if pred_any != ref_any:
        return float(empty_value)
    return float(np.percentile(_symmetric_surface_distances(pred, ref, spacing), 95))


def sensitivity(pred, ref) -> float:
    """True-positive rate ``|P∩R| / |R|`` of two binary masks.

    Empty reference: 1.0 if the prediction is empty too, else 0.0 (BraTS 2023 / GaNDLF convention).
    """
    pred, ref = _check_masks(pred, ref)
    n_hit = int(np.count_nonzero(pred & ref))
    return _rate(n_hit, int(np.count_nonzero(ref)), int(np.count_nonzero(pred)))


def specificity(pred, ref) -> float:
    """True-negative rate ``|¬P∩¬R| / |¬R|`` over the whole array.

    Reference covering the whole array (no negatives): 1.0 if the prediction does too, else 0.0,
    i.e. ``specificity(P, R) == sensitivity(¬P, ¬R)`` always.
    """
    pred, ref = _check_masks(pred, ref)
    return sensitivity(~pred, ~ref)


# --------------------------------------------------------------------------------------------
# Label volumes
# --------------------------------------------------------------------------------------------


def region_labels(labels: str = "brats") -> dict[str, tuple[int, ...]]:
    """Voxel values making up each region of :data:`REGIONS` for ``labels="brats"`` or ``"classes"``."""
    _check_labels_name(labels)
    return region_codes(BRATS if labels == "brats" else BRATS_2023)


def region_masks(volume, *, labels: str = "brats") -> dict[str, np.ndarray]:
    """Binary masks ``{"ET", "TC", "WT"}`` of a validated label volume (same shape as the volume)."""
    arr = _check_label_volume(volume, "volume", labels, None)
    return {name: np.isin(arr, values) for name, values in region_labels(labels).items()}


def evaluate_case(pred, ref, spacing=None, *, labels: str = "brats", empty_hd95: float = HD95_EMPTY,
                  case: str | None = None) -> dict[str, dict[str, float]]:
    """Dice, HD95, sensitivity and specificity of the ET, TC and WT regions of one case.

    Args:
        pred: predicted label volume, e.g. ``(240, 240, 155)``; integer or integral float values.
        ref: reference label volume of the same shape.
        spacing: voxel size in mm per axis (may be anisotropic), or one number; ``None`` = 1 mm.
        labels: ``"brats"`` for values {0, 1, 2, 4}; ``"classes"`` for training class indices
            {0, 1, 2, 3} (3 = enhancing, also the BraTS 2023 labels).
        empty_hd95: HD95 when exactly one of the two region masks is empty (default 373.13 mm).
        case: case id, only used to name the case in error messages.

    Returns:
        ``{region: {metric: value}}`` with regions ``"ET", "TC", "WT"`` and metrics
        :data:`METRICS`, all Python floats (never NaN; see the module docstring for empty regions).

    Raises:
        DataError (a ``ValueError``): shapes differ, or a volume holds values outside ``labels``.
        ValueError: bad ``labels`` name or ``spacing``.
    """
    _check_labels_name(labels)
    pred_arr = _check_label_volume(pred, "prediction", labels, case)
    ref_arr = _check_label_volume(ref, "reference", labels, case)
    if pred_arr.shape != ref_arr.shape:
        raise DataError(f"prediction shape {pred_arr.shape} differs from reference shape {ref_arr.shape}",
                        case=case)
    spacing = _check_spacing(spacing, pred_arr.ndim)
    n_voxels = pred_arr.size

    # Every region lies inside the tumour of one volume or the other: work inside that box only
    # (counts are unchanged; the surface distances crop again per region, padded).
    box = _bounding_box((pred_arr != 0) | (ref_arr != 0))
    if box is not None:
        pred_arr, ref_arr = pred_arr[box], ref_arr[box]

    results: dict[str, dict[str, float]] = {}
    for name, values in region_labels(labels).items():
        if box is None:
            p = r = np.zeros((1,) * pred_arr.ndim, bool)
        else:
            lookup = np.zeros(256, bool)
            lookup[list(values)] = True
            p, r = lookup[pred_arr], lookup[ref_arr]
        n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        n_both = int(np.count_nonzero(p & r))
        n_neither = n_voxels - (n_pred + n_ref - n_both)
        results[name] = {
            "dice": _dice_from_counts(n_pred, n_ref, n_both),
            "hd95": _hd95_checked(p, r, spacing, empty_hd95),
            "sensitivity": _rate(n_both, n_ref, n_pred),
            "specificity": _rate(n_neither, n_voxels - n_ref, n_voxels - n_pred),
        }
    return results


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def aggregate(case_results: Iterable[Mapping[str, Mapping[str, float]]] | Mapping[str, Mapping],
              *, ddof: int = 1) -> dict[str, dict[str, dict[str, float]]]:
    """Summary statistics over cases: ``{region: {metric: {stat: value}}}``.

    Args:
        case_results: :func:`evaluate_case` results, as a sequence or as a mapping case id → result.
            Every case must have the same regions and metrics.
        ddof: delta degrees of freedom of ``std`` (1 = sample standard deviation, as ``pandas``
            and most papers' "mean ± std" over test cases).

    Returns:
        For every region and metric: ``mean, std, median, p25, p75`` (25th / 75th percentiles,
        linear interpolation, the BraTS leaderboards' ``25quantile`` / ``75quantile``), ``min, max``
        of the values that are not NaN
        and ``count``, how many those are (``evaluate_case`` never gives NaN; results from other
        tools may). Statistics of no values are NaN, and ``std`` is NaN when ``count <= ddof``.
    """
    if isinstance(case_results, Mapping):
        case_results = list(case_results.values())
    cases: Sequence[Mapping[str, Mapping[str, float]]] = list(case_results)
    if not cases:
        raise ValueError("aggregate needs at least one case result, got none")
    layout = {region: tuple(metrics) for region, metrics in cases[0].items()}
    for index, result in enumerate(cases):
        this = {region: tuple(metrics) for region, metrics in result.items()}
        if this != layout:
            raise ValueError(f"case result {index} has regions/metrics {this}, expected {layout} as case 0")

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for region, metrics in layout.items():
        summary[region] = {}
        for metric in metrics:
            values = np.array([float(result[region][metric]) for result in cases], dtype=np.float64)
            values = values[~np.isnan(values)]
            count = int(values.size)
            if count == 0:
                stats = {stat: math.nan for stat in SUMMARY_STATS[:-1]}
            else:
                stats = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=ddof)) if count > ddof else math.nan,
                    "median": float(np.median(values)),
                    "p25": float(np.percentile(values, 25)),
                    "p75": float(np.percentile(values, 75)),
                    "min": float(np.min(values)),
                    "max": float(np.max(values)),
                }
            stats["count"] = count
            summary[region][metric] = stats
    return summary


__all__ = [
    "HD95_EMPTY",
    "LABEL_SETS",
    "METRICS",
    "REGIONS",
    "SUMMARY_STATS",
    "aggregate",
    "dice",
    "evaluate_case",
    "hd95",
    "region_labels",
    "region_masks",
    "sensitivity",
    "specificity",
]
