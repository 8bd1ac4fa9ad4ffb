"""In-graph segmentation metrics that stay correct when batches are split or streamed.

Every metric here accumulates *sufficient statistics* — true/false positive/negative counts (or
soft sums) — in non-trainable variables in ``update_state`` and forms the ratio only in
``result()``. The result over several batches therefore equals the result over their concatenation,
whichever way Keras splits an epoch into steps or ``tf.distribute`` splits a step across replicas
(the variables are created with ``aggregation="sum"``, so replica counts add up). A mean of
per-batch ratios, which is what a plain function metric gives, does not have that property.

Tensor layouts (channels-last), ``y_true`` / ``y_pred`` both ``(batch, H, W[, D], C)``:

* softmax outputs (``C >= 2``): ``y_true`` one-hot, ``y_pred`` probabilities; "hard" predictions
  are the one-hot argmax;
* sigmoid outputs (``C == 1``): ``y_true`` a binary mask, ``y_pred`` a probability; "hard"
  predictions are ``y_pred > threshold``.

Metrics:

* :class:`DiceScore` — Dice per class, averaged over the selected classes (hard or soft);
* :class:`RegionDice` — Dice of a BraTS region (ET, TC, WT) or any union of classes;
* :class:`IoUScore` — ``segmentation_models_3D``'s ``IOUScore`` (per-channel threshold), accumulated;
* :class:`MeanIoU` — ``keras.metrics.MeanIoU`` on one-hot targets and probabilities;
* :class:`Precision`, :class:`Sensitivity`, :class:`Specificity` — for a class, a region or a
  sigmoid channel.

BraTS classes after the pipeline's 4 → 3 mapping: 0 background, 1 necrotic / non-enhancing core,
2 edema, 3 enhancing; regions ET = {3}, TC = {1, 3}, WT = {1, 2, 3} (:data:`REGION_CLASSES`).

Ratios use ``(numerator + smooth) / (denominator + smooth)`` with ``smooth = 1e-5`` by default (as
``segmentation_models_3D``), so a class or region that is empty in both the reference and the
prediction scores 1 (the BraTS convention) and nothing is ever NaN; ``smooth=0`` gives exact
ratios, with 1 where the denominator is 0.

Counts are float32: exact up to 2**24 per add, and a relative error of about 1e-7 per batch beyond
that, which is negligible for an epoch of 128³ volumes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import keras
from keras import ops

from brats_keras.labels import region_classes

__all__ = [
    "REGION_CLASSES",
    "DiceScore",
    "RegionDice",
    "IoUScore",
    "MeanIoU",
    "Precision",
    "Sensitivity",
    "Specificity",
    "hard_predictions",
]

REGION_CLASSES: dict[str, tuple[int, ...]] = region_classes()
"""BraTS evaluation regions as sets of training classes (enhancing tumour, tumour core, whole tumour):
``{"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}`` (:data:`brats_keras.labels.BRATS_REGIONS`)."""

SMOOTH = 1e-5


# ----------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------


def _check_smooth(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`smooth` must be a finite number >= 0, got smooth={value!r}")
    return float(value)


def _check_threshold(value, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`threshold` must be a number in [0, 1){' or None' if allow_none else ''}, "
                         f"got threshold={value!r}")
    return float(value)


def _check_num_classes(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`num_classes` must be a positive int, got num_classes={value!r}")
    return int(value)


def _check_ids(name: str, value) -> list[int]:
    """An int or a non-empty sequence of distinct non-negative ints, as a list."""
    values = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"`{name}` must be an int or a non-empty sequence of ints, got {name}={value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"`{name}` must hold non-negative ints, got {name}={value!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` must not repeat a class, got {name}={value!r}")
    return out


def _check_region(value) -> str | list[int] | None:
    """``None`` (a single sigmoid channel), a region name of :data:`REGION_CLASSES`, or class ids."""
    if value is None:
        return None
    if isinstance(value, str):
        key = value.upper()
        if key not in REGION_CLASSES:
            raise ValueError(f"`region` must be one of {sorted(REGION_CLASSES)}, an int, a sequence of ints "
                             f"or None, got region={value!r}")
        return key
    return _check_ids("region", value)


def _region_suffix(region: str | list[int] | None) -> str:
    if region is None:
        return ""
    if isinstance(region, str):
        return "_" + region.lower()
    return "_" + "_".join(str(c) for c in region)


# ----------------------------------------------------------------------------------------------
# Tensor helpers
# ----------------------------------------------------------------------------------------------


def _check_pair(y_true, y_pred, who: str):
    """Convert to float32 tensors of the same static shape ``(batch, ..., C)`` with known ``C``."""
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    if len(y_pred.shape) < 2 or y_pred.shape[-1] is None:
        raise ValueError(f"{who}: y_pred must be (batch, ..., channels) with a known channel count, "
                         f"got shape {tuple(y_pred.shape)}")
    if len(y_true.shape) != len(y_pred.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(y_true.shape, y_pred.shape)
    ):
        raise ValueError(f"{who}: y_true and y_pred must have the same shape, "
                         f"got {tuple(y_true.shape)} and {tuple(y_pred.shape)}")
    return y_true, y_pred


def hard_predictions(y_pred, threshold: float = 0.5):
    """One-hot argmax of softmax probabilities (``C >= 2``), or ``y_pred > threshold`` (``C == 1``).

    ``(batch, ..., C)`` float → ``(batch, ..., C)`` float32 in {0, 1}.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    channels = y_pred.shape[-1]
    if channels == 1:
        return ops.cast(ops.greater(y_pred, threshold), "float32")
    return ops.one_hot(ops.argmax(y_pred, axis=-1), channels, dtype="float32")


def _ratio(numerator, denominator, smooth: float):
    """``(n + smooth) / (d + smooth)``, and 1 where that denominator is 0 (both sets empty)."""
    denominator = denominator + smooth
    safe = ops.where(denominator > 0, denominator, 1.0)
    return ops.where(denominator > 0, (numerator + smooth) / safe, 1.0)


def _broadcast_weight(sample_weight, like):
    """``sample_weight`` (``(batch,)``, per pixel, ...) as a float32 tensor broadcastable to ``like``."""
    if sample_weight is None:
        return None
    weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    rank = len(like.shape)
    if len(weight.shape) == rank + 1 and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    while len(weight.shape) < rank:
        weight = ops.expand_dims(weight, axis=-1)
    return weight


class _CountsMixin:
    """Adds accumulating count variables (float32, summed across replicas) to a Metric."""

    def _counts(self, names: Sequence[str], shape: tuple[int, ...]):
        for n in names:
            setattr(self, n, self.add_variable(shape=shape, initializer="zeros", dtype="float32",
                                               aggregation="sum", name=n))

    def _accumulate(self, truth, prediction, sample_weight, axes, with_tn: bool):
        """Add TP, FP, FN (and TN) of (possibly soft) masks, summed over ``axes``."""
        weight = _broadcast_weight(sample_weight, truth)
        w = 1.0 if weight is None else weight
        tp = ops.sum(truth * prediction * w, axis=axes)
        predicted = ops.sum(prediction * w, axis=axes)
        actual = ops.sum(truth * w, axis=axes)
        self.true_positives.assign(self.true_positives + tp)
        self.false_positives.assign(self.false_positives + predicted - tp)
        self.false_negatives.assign(self.false_negatives + actual - tp)
        if with_tn:
            total = ops.sum(ops.ones_like(truth) * w, axis=axes)
            self.true_negatives.assign(self.true_negatives + total - predicted - actual + tp)


# ----------------------------------------------------------------------------------------------
# Per-class metrics (one count per class, averaged over the classes in result())
# ----------------------------------------------------------------------------------------------


class _PerClassMetric(_CountsMixin, keras.metrics.Metric):
    """Accumulates per-class TP, FP, FN over the selected classes, shape ``(K,)``.

    ``prediction``: ``"argmax"`` (one-hot argmax; ``> threshold`` for one channel),
    ``"threshold"`` (every channel ``> threshold``, as ``segmentation_models_3D``) or ``"soft"``.
    """

    def __init__(self, *, class_ids, num_classes, prediction: str, threshold, smooth: float, name, dtype):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = _check_num_classes(num_classes)
        self.class_ids = None if class_ids is None else _check_ids("class_ids", class_ids)
        if self.class_ids is None and self.num_classes is None:
            raise ValueError(f"{type(self).__name__} needs `class_ids` or `num_classes` to size its counts, "
                             "got class_ids=None, num_classes=None")
        if self.class_ids is not None and self.num_classes is not None and max(self.class_ids) >= self.num_classes:
            raise ValueError(f"`class_ids` must be < num_classes={self.num_classes}, got class_ids={self.class_ids}")
        self.prediction = prediction
        self.threshold = threshold
        self.smooth = _check_smooth(smooth)
        size = len(self.class_ids) if self.class_ids is not None else self.num_classes
        self._counts(("true_positives", "false_positives", "false_negatives"), (size,))

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = type(self).__name__
        y_true, y_pred = _check_pair(y_true, y_pred, who)
        channels = y_pred.shape[-1]
        if self.num_classes is not None and channels != self.num_classes:
            raise ValueError(f"{who}: num_classes={self.num_classes} but y_pred has {channels} channels")
        if self.class_ids is not None and max(self.class_ids) >= channels:
            raise ValueError(f"{who}: class_ids={self.class_ids} but y_pred has {channels} channels")
        if self.prediction == "soft":
            prediction = y_pred
        elif self.prediction == "threshold":
            prediction = ops.cast(ops.greater(y_pred, self.threshold), "float32")
        else:
            prediction = hard_predictions(y_pred, self.threshold)
        if self.class_ids is not None:
            y_true = ops.take(y_true, self.class_ids, axis=-1)
            prediction = ops.take(prediction, self.class_ids, axis=-1)
        axes = tuple(range(len(y_pred.shape) - 1))
        self._accumulate(y_true, prediction, sample_weight, axes, with_tn=False)

    def get_config(self):
        return {**super().get_config(), "class_ids": self.class_ids, "num_classes": self.num_classes,
                "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="brats_keras")
class DiceScore(_PerClassMetric):
    """Dice per class, accumulated over batches, averaged over the selected classes.

    ``Dice_c = (2 TP_c + smooth) / (2 TP_c + FP_c + FN_c + smooth)`` with the counts summed over
    every batch seen; ``result() = mean_c Dice_c``. One instance per class gives a per-class curve
    (``DiceScore(class_ids=3, name="dice_enhancing")``); a list gives the mean over those classes.

    Args:
        class_ids: class channels (int or list); ``None`` uses all ``num_classes``.
        num_classes: channel count of ``y_pred`` (needed when ``class_ids`` is None; checked otherwise).
        soft: use probabilities (soft Dice, ``1 - DiceLoss``) instead of hard predictions.
        threshold: binarisation threshold for single-channel (sigmoid) outputs.
        smooth: see the module docstring.
        name, dtype: as :class:`keras.metrics.Metric`; the name defaults to ``dice`` or ``dice_<ids>``.

    Shapes: ``(batch, H, W[, D], C)``. Papers 3–5 (Dice / DSC / F1).
    """

    def __init__(self, class_ids=None, num_classes=None, soft: bool = False, threshold: float = 0.5,
                 smooth: float = SMOOTH, name: str | None = None, dtype=None):
        ids = None if class_ids is None else _check_ids("class_ids", class_ids)
        super().__init__(class_ids=ids, num_classes=num_classes, prediction="soft" if soft else "argmax",
                         threshold=_check_threshold(threshold), smooth=smooth,
                         name=name or "dice" + _region_suffix(ids), dtype=dtype)
        self.soft = bool(soft)

    def result(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return ops.mean(_ratio(2.0 * tp, 2.0 * tp + fp + fn, self.smooth))

    def get_config(self):
        return {**super().get_config(), "soft": self.soft, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="brats_keras")
class IoUScore(_PerClassMetric):
    """``segmentation_models_3D.metrics.IOUScore`` as an accumulating metric (paper 2's "IoU").

    Predictions are ``y_pred > threshold`` channel by channel (not the argmax: a voxel whose largest
    probability is below the threshold counts for no class), or the probabilities themselves with
    ``threshold=None``. Per class ``IoU_c = (TP_c + smooth) / (TP_c + FP_c + FN_c + smooth)``;
    ``result() = mean_c IoU_c``.

    Difference to sm: sm's IOUScore is a function of one batch, so Keras reports the mean of
    per-batch values; ours sums the counts over every batch and replica first. On a single batch the
    two agree (tested to 1e-5); over an epoch ours is the IoU of the whole epoch.

    Args:
        threshold: in [0, 1), or ``None`` for soft IoU.
        class_ids / num_classes: the classes averaged (one of them is needed to size the counts).
        smooth: see the module docstring (sm's default 1e-5).
        name, dtype: as :class:`keras.metrics.Metric`.

    Shapes: ``(batch, H, W[, D], C)``. Paper 2 (``IoUScore(num_classes=4)``), papers 4–5 (JI / IoU).
    """

    def __init__(self, threshold: float | None = 0.5, class_ids=None, num_classes=None, smooth: float = SMOOTH,
                 name: str = "iou", dtype=None):
        threshold = _check_threshold(threshold, allow_none=True)
        super().__init__(class_ids=class_ids, num_classes=num_classes,
                         prediction="soft" if threshold is None else "threshold", threshold=threshold,
                         smooth=smooth, name=name, dtype=dtype)

    def result(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return ops.mean(_ratio(tp, tp + fp + fn, self.smooth))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="brats_keras")
class MeanIoU(_PerClassMetric):
    """Mean IoU over classes on argmax predictions, for one-hot ``y_true`` and probabilities.

    Same value as ``keras.metrics.MeanIoU(num_classes)`` fed with ``argmax(y_true)`` and
    ``argmax(y_pred)``: ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, averaged over the classes whose
    denominator is non-zero (classes absent from both reference and prediction are ignored; 0 if no
    class is present).

    Args:
        num_classes: channel count of ``y_pred``.
        name, dtype: as :class:`keras.metrics.Metric`.
    """

    def __init__(self, num_classes: int, name: str = "mean_iou", dtype=None):
        if num_classes is None:
            raise ValueError("`num_classes` must be a positive int, got num_classes=None")
        super().__init__(class_ids=None, num_classes=num_classes, prediction="argmax", threshold=0.5,
                         smooth=0.0, name=name, dtype=dtype)

    def result(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        denominator = tp + fp + fn
        valid = ops.cast(denominator > 0, "float32")
        iou = tp / ops.where(denominator > 0, denominator, 1.0)
        count = ops.sum(valid)
        return ops.where(count > 0, ops.sum(iou * valid) / ops.maximum(count, 1.0), 0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes}


# ----------------------------------------------------------------------------------------------
# Binary metrics of one foreground (a class, a union of classes, or a sigmoid channel)
# ----------------------------------------------------------------------------------------------


class _ForegroundMetric(_CountsMixin, keras.metrics.Metric):
    """Accumulates scalar TP, FP, FN, TN of one binary foreground on hard predictions.

    The foreground of ``region`` (a name of :data:`REGION_CLASSES`, an int or a list of class ids)
    is the union of those classes: in ``y_true`` the sum of their one-hot channels, in the
    prediction "argmax is one of them". ``region=None`` is for single-channel sigmoid outputs,
    whose foreground is ``y_pred > threshold``.
    """

    _prefix = ""

    def __init__(self, region=None, threshold: float = 0.5, smooth: float = SMOOTH, name: str | None = None,
                 dtype=None):
        region = _check_region(region)
        super().__init__(name=name or self._prefix + _region_suffix(region), dtype=dtype)
        self.region = region
        self.threshold = _check_threshold(threshold)
        self.smooth = _check_smooth(smooth)
        self._counts(("true_positives", "false_positives", "false_negatives", "true_negatives"), ())

    @property
    def classes(self) -> list[int] | None:
        """Class ids making up the foreground (``None``: the single sigmoid channel)."""
        if isinstance(self.region, str):
            return list(REGION_CLASSES[self.region])
        return self.region

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = type(self).__name__
        y_true, y_pred = _check_pair(y_true, y_pred, who)
        channels = y_pred.shape[-1]
        classes = self.classes
        if channels == 1:
            if classes not in (None, [0]):
                raise ValueError(f"{who}: region={self.region!r} needs a softmax output with classes {classes}, "
                                 "but y_pred has 1 channel (use region=None for a sigmoid output)")
            truth, prediction = y_true[..., 0], hard_predictions(y_pred, self.threshold)[..., 0]
        else:
            if classes is None:
                raise ValueError(f"{who}: region=None is for single-channel (sigmoid) outputs, but y_pred has "
                                 f"{channels} channels; name a region or class ids")
            if max(classes) >= channels:
                raise ValueError(f"{who}: region={self.region!r} uses classes {classes}, "
                                 f"but y_pred has {channels} channels")
            truth = ops.sum(ops.take(y_true, classes, axis=-1), axis=-1)
            prediction = ops.sum(ops.take(hard_predictions(y_pred), classes, axis=-1), axis=-1)
        axes = tuple(range(len(truth.shape)))
        self._accumulate(truth, prediction, sample_weight, axes, with_tn=True)

    def get_config(self):
        return {**super().get_config(), "region": self.region, "threshold": self.threshold, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="brats_keras")
class RegionDice(_ForegroundMetric):
    """Dice of a BraTS region (``"ET"``, ``"TC"``, ``"WT"``) or any union of classes, on argmax predictions.

    ``Dice = (2 TP + smooth) / (2 TP + FP + FN + smooth)`` over every voxel of every batch seen.
    Paper 2 (Table IV: TC, WT, ET) and the per-region Dice every BraTS experiment reports.

    Args:
        region: ``"ET"`` = {3}, ``"TC"`` = {1, 3}, ``"WT"`` = {1, 2, 3} (case-insensitive), an int or a
            list of class ids, or ``None`` for a single sigmoid channel.
        threshold: binarisation threshold for single-channel outputs.
        smooth: see the module docstring.
        name, dtype: as :class:`keras.metrics.Metric`; the name defaults to ``dice_<region>``.

    Shapes: ``(batch, H, W[, D], C)`` one-hot ``y_true`` and probabilities ``y_pred``.
    """

    _prefix = "dice"

    def __init__(self, region="WT", threshold: float = 0.5, smooth: float = SMOOTH, name: str | None = None,
                 dtype=None):
        super().__init__(region=region, threshold=threshold, smooth=smooth, name=name, dtype=dtype)

    def result(self):
        tp = self.true_positives
        return _ratio(2.0 * tp, 2.0 * tp + self.false_positives + self.false_negatives, self.smooth)


@keras.saving.register_keras_serializable(package="brats_keras")
class Precision(_ForegroundMetric):
    """Precision ``TP / (TP + FP)`` of a class, region or sigmoid channel (hard predictions).

    Args: as :class:`RegionDice`, with ``region=None`` (a sigmoid output) as the default; the name
    defaults to ``precision[_<region>]``. Paper 4 (precision), paper 5's classifier report.
    """

    _prefix = "precision"

    def result(self):
        return _ratio(self.true_positives, self.true_positives + self.false_positives, self.smooth)


@keras.saving.register_keras_serializable(package="brats_keras")
class Sensitivity(_ForegroundMetric):
    """Sensitivity (recall) ``TP / (TP + FN)`` of a class, region or sigmoid channel (hard predictions).

    Args: as :class:`Precision`; the name defaults to ``sensitivity[_<region>]``. Paper 4 (recall),
    BraTS per-region sensitivity.
    """

    _prefix = "sensitivity"

    def result(self):
        return _ratio(self.true_positives, self.true_positives + self.false_negatives, self.smooth)


@keras.saving.register_keras_serializable(package="brats_keras")
class Specificity(_ForegroundMetric):
    """Specificity ``TN / (TN + FP)`` of a class, region or sigmoid channel (hard predictions).

    Args: as :class:`Precision`; the name defaults to ``specificity[_<region>]``. BraTS per-region
    specificity.
    """

    _prefix = "specificity"

    def result(self):
        return _ratio(self.true_negatives, self.true_negatives + self.false_positives, self.smooth)


METRICS = {
    "dice": DiceScore,
    "iou": IoUScore,
    "mean_iou": MeanIoU,
    "region_dice": RegionDice,
    "precision": Precision,
    "sensitivity": Sensitivity,
    "specificity": Specificity,
}
"""The in-graph metrics a config names (``MetricConfig(name, options)``), beside Keras' ``"accuracy"``."""

