"""Pixel-count scores of one binary segmentation against its reference: overlap counts and paper 4's six
metrics (Dice, IoU, precision, sensitivity, accuracy, F1; the paper says DSC, JI, recall). Empty conventions as
:mod:`brats_keras.evaluation.volumes`' :func:`~brats_keras.evaluation.volumes.dice` and
:func:`~brats_keras.evaluation.volumes.sensitivity`."""

from __future__ import annotations

import numpy as np

from brats_keras.evaluation.volumes import _check_masks, _dice_from_counts, _rate

__all__ = ["overlap_counts", "scores_from_counts", "segmentation_scores"]


def overlap_counts(pred, ref) -> dict[str, int]:
    """Pixel counts ``tp, fp, fn, tn`` of a binary prediction against a binary reference."""
    pred, ref = _check_masks(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Paper 4's six segmentation metrics (§4.2, eqs. 9–14) from pixel counts.

    ``dice = 2TP / (2TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``,
    ``sensitivity = TP / (TP + FN)`` (the paper's recall), ``accuracy = (TP + TN) / all``, ``f1 = 2PR / (P + R)``. Two
    identities follow from the definitions and hold for every input: ``iou = dice / (2 − dice)`` (so
    ``iou ≤ dice``) and ``f1 = dice`` (the harmonic mean of precision and sensitivity *is* the Dice
    coefficient). Empty conventions as :func:`dice` / :func:`sensitivity`: no reference and no
    predicted pixel gives 1 for dice, iou, precision, sensitivity and f1; a rate whose denominator is 0
    while the other mask is not empty gives 0.
    """
    counts = (tp, fp, fn, tn)
    if any(isinstance(c, bool) or int(c) != c or c < 0 for c in counts):
        raise ValueError(f"counts must be non-negative integers, got tp={tp}, fp={fp}, fn={fn}, tn={tn}")
    tp, fp, fn, tn = (int(c) for c in counts)
    total = tp + fp + fn + tn
    if total == 0:
        raise ValueError("counts are all zero: no pixels to score")
    dice = _dice_from_counts(tp + fp, tp + fn, tp)
    precision = _rate(tp, tp + fp, tp + fn)  # empty prediction: 1 only if the reference is empty too
    sensitivity = _rate(tp, tp + fn, tp + fp)
    union = tp + fp + fn
    return {
        "dice": dice,
        "iou": 1.0 if union == 0 else tp / union,
        "precision": precision,
        "sensitivity": sensitivity,
        "accuracy": (tp + tn) / total,
        "f1": 0.0 if precision + sensitivity == 0 else 2.0 * precision * sensitivity / (precision + sensitivity),
    }


def segmentation_scores(pred, ref) -> dict[str, float]:
    """:func:`scores_from_counts` of one binary prediction against its reference (any shape)."""
    return scores_from_counts(**overlap_counts(pred, ref))
