"""Segmentation losses: soft Dice, categorical / binary focal, Dice + focal, BCE + Dice.

Every loss takes **probabilities** (the models end in a softmax or a sigmoid), never logits, and
uses ``keras.ops`` only, so it runs on the TensorFlow and the JAX backends alike.

Tensor layouts (channels-last):

* ``y_true``: one-hot ``(batch, H, W[, D], C)`` for softmax outputs, a binary mask
  ``(batch, H, W[, D], 1)`` for sigmoid outputs. Any rank >= 2 works (``(batch, C)`` too).
* ``y_pred``: probabilities of the same shape.

Which paper uses which loss (``/work/shared/REPLICATION.md``):

* paper 2 (spatial-attention 3D U-Net): ``DiceFocalLoss(class_weights=[0.25] * 4)`` — Dice loss with
  class weights 0.25 each plus 1 × categorical focal loss, as the paper's code builds it with
  ``segmentation_models_3D`` (``sm.losses.DiceLoss(class_weights=...) + 1 * sm.losses.CategoricalFocalLoss()``);
* paper 3 (dwell U-Net): ``DiceLoss()``;
* paper 4 (LSTM + attention U-Net): ``DiceFocalLoss()``;
* paper 5 (residual U-Net, sigmoid output): ``BCEDiceLoss()``.

Agreement with ``segmentation_models_3D`` 1.1.1 (the library of paper 2; cross-checked in
``tests/test_losses.py`` to 1e-5 on random tensors):

* ``DiceLoss(class_weights, smooth, per_image, class_ids)`` equals
  ``sm.losses.DiceLoss(class_weights=..., smooth=..., per_image=..., class_indexes=...)`` (its
  F-score with ``beta=1``). In particular the class weights follow sm's convention:
  ``loss = 1 - mean_c(w_c * D_c)``, which is **not** a weighted mean — with the four weights 0.25
  of paper 2 a perfect prediction scores 0.75, not 0. ``normalize_weights=True`` gives the weighted
  mean ``1 - sum_c(w_c * D_c) / sum_c(w_c)`` instead (0 at a perfect prediction).
* ``CategoricalFocalLoss(alpha, gamma)`` equals ``sm.losses.CategoricalFocalLoss(alpha, gamma)``:
  sm averages ``-alpha * y * (1 - p)^gamma * log(p)`` over every element *including the class
  axis*, so its value is the textbook per-pixel focal loss divided by ``C``. That is our default
  (``class_reduction="mean"``); ``class_reduction="sum"`` gives the textbook value, equal to
  ``keras.losses.CategoricalFocalCrossentropy`` for probabilities that sum to one.
* ``BinaryFocalLoss(alpha, gamma)`` equals ``sm.losses.BinaryFocalLoss(alpha, gamma)`` (and
  ``keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True)`` for binary targets).
* ``BCEDiceLoss()`` equals ``sm.losses.bce_dice_loss`` (binary cross-entropy + Dice loss).
* Differences, by design: sm handles only 5-D tensors (its reduction axes are hard-coded); ours
  reduce over every axis between the batch and the channel axis, so 2-D slices work too. sm
  returns one scalar; ours return one value per sample (see "Reduction" below), whose mean is sm's
  scalar.

Reduction: ``call`` returns a ``(batch,)`` vector so Keras' default ``"sum_over_batch_size"``
reduction averages it and, under ``tf.distribute``, divides it by the number of replicas (Keras
skips that scaling for a rank-0 loss, which would make gradients ``num_replicas`` times too large).
Batch-level Dice (``per_image=False``, sm's default) is one number for the whole batch, repeated for
every sample; on several replicas each replica's Dice is computed over its share of the batch.
Sample weights therefore weight focal/BCE terms per sample, and scale the batch-level Dice term by
their mean.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import keras
from keras import ops

__all__ = [
    "DiceLoss",
    "CategoricalFocalLoss",
    "BinaryFocalLoss",
    "DiceFocalLoss",
    "BCEDiceLoss",
]

SMOOTH = 1e-5
"""Default smoothing term of the Dice losses (the value segmentation_models_3D uses)."""

CLASS_REDUCTIONS = ("mean", "sum")


# ----------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------


def _check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                  strictly_positive: bool = False) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {name}={value!r}")
    value = float(value)
    if strictly_positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {name}={value!r}")
    return value


def _check_weights(name: str, value) -> list[float] | None:
    """Validate a per-class weight list (non-negative, finite, not all zero); ``None`` passes."""
    if value is None:
        return None
    values = value.tolist() if hasattr(value, "tolist") else value  # numpy arrays become lists
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"`{name}` must be a sequence of numbers or None, got {name}={value!r}")
    if not values:
        raise ValueError(f"`{name}` must not be empty, got {name}={value!r}")
    out = [_check_number(f"{name}[{i}]", v, minimum=0.0) for i, v in enumerate(values)]
    if not any(out):
        raise ValueError(f"`{name}` must not be all zero, got {name}={value!r}")
    return out


def _check_class_ids(value) -> list[int] | None:
    """Validate ``class_ids`` (an int or a sequence of distinct non-negative ints); ``None`` passes."""
    if value is None:
        return None
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"`class_ids` must be an int or a non-empty sequence of ints, got class_ids={value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"`class_ids` must hold non-negative ints, got class_ids={value!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"`class_ids` must not repeat a class, got class_ids={value!r}")
    return out


def _check_alpha(value, *, binary: bool) -> float | list[float]:
    if binary:
        return _check_number("alpha", value, minimum=0.0, maximum=1.0)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _check_number("alpha", value, minimum=0.0)
    return _check_weights("alpha", value)


# ----------------------------------------------------------------------------------------------
# Shared tensor helpers
# ----------------------------------------------------------------------------------------------


def _check_pair(y_true, y_pred, who: str):
    """Cast ``y_true`` to ``y_pred``'s dtype and check that both have the same static shape. A float16 /
    bfloat16 ``y_pred`` is cast to float32 first: every loss computes in float32 (brats_keras.precision)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if keras.backend.standardize_dtype(y_pred.dtype) in ("float16", "bfloat16"):
        y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, y_pred.dtype)
    if len(y_pred.shape) < 2:
        raise ValueError(f"{who}: y_pred must be (batch, ..., channels), got shape {tuple(y_pred.shape)}")
    if len(y_true.shape) != len(y_pred.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(y_true.shape, y_pred.shape)
    ):
        raise ValueError(
            f"{who}: y_true and y_pred must have the same shape, got {tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    return y_true, y_pred


def _select_channels(x, class_ids: list[int] | None, who: str):
    if class_ids is None:
        return x
    channels = x.shape[-1]
    if channels is not None and max(class_ids) >= channels:
        raise ValueError(f"{who}: class_ids={class_ids} but the tensors have {channels} channels")
    return ops.take(x, class_ids, axis=-1)


def _per_sample(value, like):
    """Repeat a scalar for every sample of ``like`` (shape ``(batch,)``)."""
    return ops.broadcast_to(value, ops.shape(like)[:1])


def _class_vector(values: list[float], channels, who: str, what: str, dtype):
    if channels is not None and len(values) != channels:
        raise ValueError(f"{who}: {what} has {len(values)} entries but the tensors have {channels} channels")
    return ops.convert_to_tensor(values, dtype=dtype)


def _mean_over_non_batch_axes(x):
    if len(x.shape) == 1:
        return x
    return ops.mean(x, axis=tuple(range(1, len(x.shape))))


def _soft_dice_loss(y_true, y_pred, *, smooth, per_image, class_weights, normalize_weights, class_ids, who):
    """Soft Dice loss per sample, ``(batch,)`` (see :class:`DiceLoss` for the formula)."""
    y_true, y_pred = _check_pair(y_true, y_pred, who)
    y_true = _select_channels(y_true, class_ids, who)
    y_pred = _select_channels(y_pred, class_ids, who)
    rank = len(y_pred.shape)
    axes = tuple(range(1, rank - 1)) if per_image else tuple(range(0, rank - 1))
    if axes:
        tp = ops.sum(y_true * y_pred, axis=axes)
        sum_pred = ops.sum(y_pred, axis=axes)
        sum_true = ops.sum(y_true, axis=axes)
    else:  # (batch, C) with per_image=True: every sample is its own set of one element per class
        tp, sum_pred, sum_true = y_true * y_pred, y_pred, y_true
    # sm's F-score with beta = 1: (2 tp + s) / (2 tp + fn + fp + s) = (2 tp + s) / (|Y| + |P| + s)
    dice = (2.0 * tp + smooth) / (sum_true + sum_pred + smooth)  # (C,) or (batch, C)
    if class_weights is None:
        score = ops.mean(dice, axis=-1)
    else:
        weights = _class_vector(class_weights, y_pred.shape[-1], who, "class_weights", dice.dtype)
        if normalize_weights:
            score = ops.sum(dice * weights, axis=-1) / ops.sum(weights)
        else:
            score = ops.mean(dice * weights, axis=-1)
    loss = 1.0 - score
    return loss if per_image else _per_sample(loss, y_pred)


def _categorical_focal(y_true, y_pred, *, alpha, gamma, class_reduction, who):
    """Categorical focal loss per sample, ``(batch,)`` (see :class:`CategoricalFocalLoss`)."""
    y_true, y_pred = _check_pair(y_true, y_pred, who)
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    if isinstance(alpha, list):
        alpha = _class_vector(alpha, y_pred.shape[-1], who, "alpha", p.dtype)
    loss = -y_true * alpha * ops.power(1.0 - p, gamma) * ops.log(p)
    if class_reduction == "sum":
        loss = ops.sum(loss, axis=-1, keepdims=True)
    return _mean_over_non_batch_axes(loss)


def _binary_focal(y_true, y_pred, *, alpha, gamma, who):
    y_true, y_pred = _check_pair(y_true, y_pred, who)
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    positive = -y_true * alpha * ops.power(1.0 - p, gamma) * ops.log(p)
    negative = -(1.0 - y_true) * (1.0 - alpha) * ops.power(p, gamma) * ops.log(1.0 - p)
    return _mean_over_non_batch_axes(positive + negative)


def _binary_crossentropy(y_true, y_pred, who):
    y_true, y_pred = _check_pair(y_true, y_pred, who)
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return _mean_over_non_batch_axes(bce)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="brats_keras")
class DiceLoss(keras.losses.Loss):
    """Soft multi-class Dice loss (the F1 score of ``segmentation_models_3D``), on probabilities.

    For every class ``c`` (optionally only those in ``class_ids``)::

        D_c  = (2 * sum(y_c * p_c) + smooth) / (sum(y_c) + sum(p_c) + smooth)
        loss = 1 - mean_c(w_c * D_c)                      # normalize_weights=False (sm's convention)
        loss = 1 - sum_c(w_c * D_c) / sum_c(w_c)          # normalize_weights=True

    where the sums run over the spatial axes and the batch (``per_image=False``: one Dice per class
    for the whole batch, as sm does) or over the spatial axes only (``per_image=True``: one Dice per
    image and class, then averaged over images). ``w_c = 1`` without ``class_weights``.

    Args:
        class_weights: per-class weights ``w_c`` (length ``C``, or ``len(class_ids)``), or ``None``.
        smooth: added to numerator and denominator (> 0); an empty class predicted empty scores 1.
        per_image: Dice per image (True) or over the whole batch (False, sm's default).
        normalize_weights: divide by ``sum(w_c)`` instead of ``C`` (see the module docstring).
        class_ids: channels to use (e.g. ``[1, 2, 3]`` to leave out background), or all.
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Shapes: ``y_true`` one-hot / binary and ``y_pred`` probabilities, both ``(batch, H, W[, D], C)``.
    Returns per-sample losses ``(batch,)`` (batch-level Dice repeated, see the module docstring).

    Papers 2, 3 and 4 (and 5 through :class:`BCEDiceLoss`).
    """

    def __init__(self, class_weights=None, smooth: float = SMOOTH, per_image: bool = False,
                 normalize_weights: bool = False, class_ids=None, name: str = "dice_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_weights = _check_weights("class_weights", class_weights)
        self.smooth = _check_number("smooth", smooth, strictly_positive=True)
        self.per_image = bool(per_image)
        self.normalize_weights = bool(normalize_weights)
        self.class_ids = _check_class_ids(class_ids)
        if self.class_ids is not None and self.class_weights is not None \
                and len(self.class_weights) != len(self.class_ids):
            raise ValueError(
                f"`class_weights` needs one weight per entry of class_ids={self.class_ids}, "
                f"got class_weights={self.class_weights}"
            )

    def call(self, y_true, y_pred):
        return _soft_dice_loss(
            y_true, y_pred, smooth=self.smooth, per_image=self.per_image, class_weights=self.class_weights,
            normalize_weights=self.normalize_weights, class_ids=self.class_ids, who=type(self).__name__,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "smooth": self.smooth,
            "per_image": self.per_image,
            "normalize_weights": self.normalize_weights,
            "class_ids": self.class_ids,
        }


@keras.saving.register_keras_serializable(package="brats_keras")
class CategoricalFocalLoss(keras.losses.Loss):
    """Categorical focal loss (Lin et al., 2017) on softmax probabilities.

    Element-wise, with ``p`` clipped to ``[eps, 1 - eps]`` (``eps = keras.config.epsilon()``)::

        l = -alpha_c * y * (1 - p)^gamma * log(p)

    averaged over the spatial axes and over the classes (``class_reduction="mean"``:
    ``segmentation_models_3D``'s value, paper 2) or summed over the classes first
    (``class_reduction="sum"``: the textbook per-pixel focal loss and
    ``keras.losses.CategoricalFocalCrossentropy``; ``C`` times the "mean" value).

    Args:
        alpha: class-balancing weight, a number or one weight per class (length ``C``).
        gamma: focusing exponent (>= 0; 0 gives alpha-weighted cross-entropy).
        class_reduction: ``"mean"`` (default, sm) or ``"sum"`` over the class axis.
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Shapes: ``(batch, H, W[, D], C)`` one-hot ``y_true`` and probabilities ``y_pred``; returns
    ``(batch,)``. Papers 2 and 4 (through :class:`DiceFocalLoss`).
    """

    def __init__(self, alpha=0.25, gamma: float = 2.0, class_reduction: str = "mean",
                 name: str = "categorical_focal_loss", reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = _check_alpha(alpha, binary=False)
        self.gamma = _check_number("gamma", gamma, minimum=0.0)
        if class_reduction not in CLASS_REDUCTIONS:
            raise ValueError(
                f"`class_reduction` must be one of {CLASS_REDUCTIONS}, got class_reduction={class_reduction!r}"
            )
        self.class_reduction = class_reduction

    def call(self, y_true, y_pred):
        return _categorical_focal(y_true, y_pred, alpha=self.alpha, gamma=self.gamma,
                                  class_reduction=self.class_reduction, who=type(self).__name__)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma,
                "class_reduction": self.class_reduction}


@keras.saving.register_keras_serializable(package="brats_keras")
class BinaryFocalLoss(keras.losses.Loss):
    """Binary focal loss on sigmoid probabilities (``segmentation_models_3D``'s formula).

    Element-wise, with ``p`` clipped to ``[eps, 1 - eps]``::

        l = -alpha * y * (1 - p)^gamma * log(p) - (1 - alpha) * (1 - y) * p^gamma * log(1 - p)

    averaged over every non-batch axis.

    Args:
        alpha: weight of the positive term, in [0, 1] (the negative term gets ``1 - alpha``).
        gamma: focusing exponent (>= 0).
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Shapes: ``(batch, H, W[, D], 1)`` (or any number of independent sigmoid channels); returns
    ``(batch,)``.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, name: str = "binary_focal_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = _check_alpha(alpha, binary=True)
        self.gamma = _check_number("gamma", gamma, minimum=0.0)

    def call(self, y_true, y_pred):
        return _binary_focal(y_true, y_pred, alpha=self.alpha, gamma=self.gamma, who=type(self).__name__)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="brats_keras")
class DiceFocalLoss(keras.losses.Loss):
    """``dice_weight * DiceLoss + focal_weight * CategoricalFocalLoss`` on softmax probabilities.

    Paper 2: ``DiceFocalLoss(class_weights=[0.25, 0.25, 0.25, 0.25])`` reproduces
    ``sm.losses.DiceLoss(class_weights=np.array([0.25] * 4)) + 1 * sm.losses.CategoricalFocalLoss()``
    exactly (Dice term 0.75 at a perfect prediction, see the module docstring). Paper 4: ``DiceFocalLoss()``.

    Args:
        dice_weight, focal_weight: multipliers of the two terms (>= 0, not both 0).
        class_weights, smooth, per_image, normalize_weights: the Dice term's, see :class:`DiceLoss`.
        alpha, gamma, class_reduction: the focal term's, see :class:`CategoricalFocalLoss`.
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Shapes: ``(batch, H, W[, D], C)``; returns ``(batch,)``.
    """

    def __init__(self, dice_weight: float = 1.0, focal_weight: float = 1.0, class_weights=None,
                 alpha=0.25, gamma: float = 2.0, smooth: float = SMOOTH, per_image: bool = False,
                 normalize_weights: bool = False, class_reduction: str = "mean", name: str = "dice_focal_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.dice_weight = _check_number("dice_weight", dice_weight, minimum=0.0)
        self.focal_weight = _check_number("focal_weight", focal_weight, minimum=0.0)
        if self.dice_weight == 0 and self.focal_weight == 0:
            raise ValueError("`dice_weight` and `focal_weight` must not both be 0, got dice_weight=0, focal_weight=0")
        # The two terms, which also validate their arguments; their ``call`` gives per-sample values.
        self.dice = DiceLoss(class_weights=class_weights, smooth=smooth, per_image=per_image,
                             normalize_weights=normalize_weights, dtype=dtype)
        self.focal = CategoricalFocalLoss(alpha=alpha, gamma=gamma, class_reduction=class_reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return self.dice_weight * self.dice.call(y_true, y_pred) + self.focal_weight * self.focal.call(y_true, y_pred)

    def get_config(self):
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            "focal_weight": self.focal_weight,
            "class_weights": self.dice.class_weights,
            "alpha": self.focal.alpha,
            "gamma": self.focal.gamma,
            "smooth": self.dice.smooth,
            "per_image": self.dice.per_image,
            "normalize_weights": self.dice.normalize_weights,
            "class_reduction": self.focal.class_reduction,
        }


@keras.saving.register_keras_serializable(package="brats_keras")
class BCEDiceLoss(keras.losses.Loss):
    """``bce_weight * binary cross-entropy + dice_weight * DiceLoss`` on sigmoid probabilities.

    The cross-entropy is ``-(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]``,
    averaged over pixels; the Dice term is :class:`DiceLoss` over the channel(s). With the defaults
    it equals ``sm.losses.bce_dice_loss``. Paper 5 (residual U-Net, 1-filter sigmoid output).

    Args:
        bce_weight, dice_weight: multipliers of the two terms (>= 0, not both 0).
        smooth, per_image: the Dice term's, see :class:`DiceLoss`.
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Shapes: ``(batch, H, W[, D], 1)`` binary mask and probabilities; returns ``(batch,)``.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = SMOOTH,
                 per_image: bool = False, name: str = "bce_dice_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.bce_weight = _check_number("bce_weight", bce_weight, minimum=0.0)
        self.dice_weight = _check_number("dice_weight", dice_weight, minimum=0.0)
        if self.bce_weight == 0 and self.dice_weight == 0:
            raise ValueError("`bce_weight` and `dice_weight` must not both be 0, got bce_weight=0, dice_weight=0")
        self.dice = DiceLoss(smooth=smooth, per_image=per_image, dtype=dtype)

    def call(self, y_true, y_pred):
        bce = _binary_crossentropy(y_true, y_pred, type(self).__name__)
        return self.bce_weight * bce + self.dice_weight * self.dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight, "dice_weight": self.dice_weight,
                "smooth": self.dice.smooth, "per_image": self.dice.per_image}


LOSSES = {
    "dice": DiceLoss,
    "categorical_focal": CategoricalFocalLoss,
    "binary_focal": BinaryFocalLoss,
    "dice_focal": DiceFocalLoss,
    "bce_dice": BCEDiceLoss,
}
"""The losses a config names (``LossConfig(name, options)``), beside Keras' own by their names."""
KERAS_LOSSES = ("categorical_crossentropy", "binary_crossentropy")
"""Keras losses a config may name; ``model.compile`` resolves them."""

