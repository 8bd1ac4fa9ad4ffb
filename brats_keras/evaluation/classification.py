"""Classification numbers: the confusion matrix and the per-class report (precision, recall, F1, support;
numbers identical to ``sklearn.metrics.classification_report``), paper 5's classifier scores. The
Markdown rendering is :func:`brats_keras.reporting.classification_report_markdown`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["class_indices", "classification_report", "confusion_matrix"]


def class_indices(y: Any, name: str) -> np.ndarray:
    """``y`` as integer class indices (booleans and integral floats converted); ``ValueError`` naming
    ``name`` for any other dtype or a non-integer value."""
    arr = np.asarray(y)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer class indices, got non-integer values "
                             "(pass argmax of probabilities, or threshold a sigmoid output)")
        arr = arr.astype(np.int64)
    return arr


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples (or pixels) of true class ``i`` predicted as class ``j``.

    Inputs are class indices of any (equal) shape, e.g. ``(N,)`` labels or ``(H, W)`` masks; they
    are flattened. Rows are true classes, columns predictions (scikit-learn's convention).

    Raises:
        ValueError: shapes differ, inputs are empty or not integer-valued, a label is outside
            ``0..num_classes-1``, or ``num_classes < 2``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    t, p = class_indices(y_true, "y_true"), class_indices(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred shapes differ: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("y_true is empty")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(f"{name}: labels must be in 0..{num_classes - 1} (num_classes={num_classes}), "
                             f"got values in {int(arr.min())}..{int(arr.max())}")
    k = int(num_classes)
    return np.bincount(t.ravel() * k + p.ravel(), minlength=k * k).reshape(k, k).astype(np.int64)


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus accuracy and macro / weighted averages.

    The result has ``sklearn.metrics.classification_report(..., output_dict=True,
    zero_division=0)``'s layout and numbers: ``{class_name: {"precision", "recall", "f1-score",
    "support"}, "accuracy": float, "macro avg": {...}, "weighted avg": {...}}``. Class ``i`` is
    ``class_names[i]``; every class counts in the macro average, including one absent from both
    inputs; a zero denominator gives 0. Render it with :func:`brats_keras.reporting.classification_report_markdown`.
    """
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    if {"accuracy", "macro avg", "weighted avg"} & set(names):
        raise ValueError(f"class_names may not use the reserved names accuracy / macro avg / weighted avg: {names}")
    cm = confusion_matrix(y_true, y_pred, len(names))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted  # = 2 tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    report: dict[str, Any] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(names)
    }
    total = int(support.sum())
    report["accuracy"] = float(tp.sum() / total)
    report["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                           "f1-score": float(f1.mean()), "support": total}
    weights = support / total
    report["weighted avg"] = {"precision": float((precision * weights).sum()),
                              "recall": float((recall * weights).sum()),
                              "f1-score": float((f1 * weights).sum()), "support": total}
    return report
