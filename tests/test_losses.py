"""Tests of brats_keras.losses: hand-computed values, references, serialisation, training.

Tests marked ``backend_agnostic`` use keras.ops / numpy only and also run under
``KERAS_BACKEND=jax``. The cross-check against segmentation_models_3D (paper 2's library) is not
marked: it imports that library inside the test.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from brats_keras.losses import BCEDiceLoss, BinaryFocalLoss, CategoricalFocalLoss, DiceFocalLoss, DiceLoss

agnostic = pytest.mark.backend_agnostic


def value(x) -> float:
    return float(keras.ops.convert_to_numpy(x))


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def random_pair(shape, seed=0, scale=2.0):
    """One-hot labels and softmax probabilities of ``shape = (batch, *spatial, C)``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[-1], shape[:-1])
    y_true = np.eye(shape[-1], dtype="float32")[labels]
    y_pred = softmax(rng.normal(size=shape) * scale)
    return y_true, y_pred


def random_binary(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) > 0.6).astype("float32"), rng.random(shape).astype("float32")


def np_dice_loss(y_true, y_pred, smooth=1e-5, per_image=False, class_weights=None, normalize=False):
    """Independent NumPy reference of the soft Dice loss (float64)."""
    y_true, y_pred = y_true.astype(np.float64), y_pred.astype(np.float64)
    axes = tuple(range(1, y_pred.ndim - 1)) if per_image else tuple(range(y_pred.ndim - 1))
    dice = (2 * (y_true * y_pred).sum(axes) + smooth) / (y_true.sum(axes) + y_pred.sum(axes) + smooth)
    w = np.ones(y_pred.shape[-1]) if class_weights is None else np.asarray(class_weights, np.float64)
    score = (dice * w).sum(-1) / w.sum() if normalize else (dice * w).mean(-1)
    return float(np.mean(1 - score))


# ----------------------------------------------------------------------------------------------
# Dice
# ----------------------------------------------------------------------------------------------

# One image of 2×2 pixels, 2 classes: true classes [0, 0, 1, 1], P(class 1) = [0.1, 0.4, 0.8, 0.6].
HAND_TRUE = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32").reshape(1, 2, 2, 2)
HAND_PRED = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6]], "float32").reshape(1, 2, 2, 2)
# class 0: 2 * (0.9 + 0.6) / (2 + 2.1) = 3 / 4.1;  class 1: 2 * (0.8 + 0.6) / (2 + 1.9) = 2.8 / 3.9
HAND_D0, HAND_D1 = 3 / 4.1, 2.8 / 3.9


@agnostic
def test_dice_loss_hand_computed_value():
    loss = DiceLoss(smooth=1e-7)
    assert value(loss(HAND_TRUE, HAND_PRED)) == pytest.approx(1 - (HAND_D0 + HAND_D1) / 2, abs=1e-6)


@agnostic
def test_dice_loss_class_weights_follow_sm_convention_or_normalise():
    weights = [0.25, 0.75]
    # segmentation_models convention: 1 - mean_c(w_c D_c)
    sm_style = value(DiceLoss(class_weights=weights, smooth=1e-7)(HAND_TRUE, HAND_PRED))
    assert sm_style == pytest.approx(1 - (0.25 * HAND_D0 + 0.75 * HAND_D1) / 2, abs=1e-6)
    # weighted mean: 1 - sum_c(w_c D_c) / sum_c(w_c)
    normalised = value(DiceLoss(class_weights=weights, normalize_weights=True, smooth=1e-7)(HAND_TRUE, HAND_PRED))
    assert normalised == pytest.approx(1 - (0.25 * HAND_D0 + 0.75 * HAND_D1), abs=1e-6)
    # more weight on the worse class (class 1: D1 < D0) raises the weighted-mean loss
    unweighted = value(DiceLoss(smooth=1e-7)(HAND_TRUE, HAND_PRED))
    assert HAND_D1 < HAND_D0 and normalised > unweighted


@agnostic
@pytest.mark.parametrize("shape", [(2, 6, 6, 4), (2, 4, 4, 4, 4)])
def test_dice_loss_is_zero_for_a_perfect_prediction(shape):
    y_true, _ = random_pair(shape)
    assert value(DiceLoss()(y_true, y_true)) == pytest.approx(0.0, abs=1e-6)
    assert value(DiceLoss(per_image=True)(y_true, y_true)) == pytest.approx(0.0, abs=1e-6)
    assert value(DiceLoss(class_weights=[0.25] * shape[-1], normalize_weights=True)(y_true, y_true)) == \
        pytest.approx(0.0, abs=1e-6)
    # sm's convention keeps the weights as multipliers: paper 2's 4 × 0.25 gives 0.75 at best
    assert value(DiceLoss(class_weights=[0.25] * shape[-1])(y_true, y_true)) == pytest.approx(0.75, abs=1e-6)


@agnostic
@pytest.mark.parametrize("kwargs", [
    {},
    {"per_image": True},
    {"class_weights": [0.1, 0.2, 0.3, 0.4]},
    {"class_weights": [1.0, 2.0, 0.0, 1.0], "normalize_weights": True, "per_image": True},
    {"smooth": 1.0},
])
@pytest.mark.parametrize("shape", [(2, 6, 6, 4), (2, 4, 4, 4, 4)])
def test_dice_loss_matches_numpy_reference(kwargs, shape):
    y_true, y_pred = random_pair(shape, seed=len(shape))
    y_true[0, ..., 2] = 0.0  # one image without class 2 makes per_image differ from batch Dice
    y_true[0, ..., 0] = 1.0 - y_true[0, ..., 1] - y_true[0, ..., 3]
    expected = np_dice_loss(y_true, y_pred, smooth=kwargs.get("smooth", 1e-5),
                            per_image=kwargs.get("per_image", False), class_weights=kwargs.get("class_weights"),
                            normalize=kwargs.get("normalize_weights", False))
    assert value(DiceLoss(**kwargs)(y_true, y_pred)) == pytest.approx(expected, abs=1e-5)


@agnostic
def test_dice_loss_per_image_and_class_ids():
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=3)
    y_true[1] = np.eye(4, dtype="float32")[np.zeros((6, 6), int)]  # image 1: background only
    batch = value(DiceLoss()(y_true, y_pred))
    per_image = value(DiceLoss(per_image=True)(y_true, y_pred))
    assert per_image == pytest.approx(np_dice_loss(y_true, y_pred, per_image=True), abs=1e-5)
    assert batch == pytest.approx(np_dice_loss(y_true, y_pred), abs=1e-5)
    assert abs(per_image - batch) > 1e-3  # the two modes are really different on this batch
    tumour = value(DiceLoss(class_ids=[1, 2, 3])(y_true, y_pred))
    assert tumour == pytest.approx(np_dice_loss(y_true[..., 1:], y_pred[..., 1:]), abs=1e-5)


@agnostic
def test_losses_return_one_value_per_sample():
    y_true, y_pred = random_pair((2, 6, 6, 4))
    b_true, b_pred = random_binary((2, 6, 6, 1))
    for loss, args in [(DiceLoss(), (y_true, y_pred)), (DiceLoss(per_image=True), (y_true, y_pred)),
                       (CategoricalFocalLoss(), (y_true, y_pred)), (DiceFocalLoss(), (y_true, y_pred)),
                       (BinaryFocalLoss(), (b_true, b_pred)), (BCEDiceLoss(), (b_true, b_pred))]:
        per_sample = keras.ops.convert_to_numpy(loss.call(*(keras.ops.convert_to_tensor(a) for a in args)))
        assert per_sample.shape == (2,), type(loss).__name__
        assert value(loss(*args)) == pytest.approx(float(per_sample.mean()), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Focal losses
# ----------------------------------------------------------------------------------------------


@agnostic
def test_categorical_focal_hand_computed_value():
    y_true = np.array([[[[0.0, 1.0]]]], "float32")  # (1, 1, 1, 2)
    y_pred = np.array([[[[0.2, 0.8]]]], "float32")
    per_pixel = -0.25 * (1 - 0.8) ** 2 * np.log(0.8)  # 0.00223143551
    assert value(CategoricalFocalLoss(class_reduction="sum")(y_true, y_pred)) == pytest.approx(per_pixel, rel=1e-5)
    assert value(CategoricalFocalLoss()(y_true, y_pred)) == pytest.approx(per_pixel / 2, rel=1e-5)
    per_class = CategoricalFocalLoss(alpha=[0.9, 0.1], class_reduction="sum")
    assert value(per_class(y_true, y_pred)) == pytest.approx(per_pixel / 0.25 * 0.1, rel=1e-5)


@agnostic
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 0.5)])
def test_categorical_focal_sum_equals_keras_builtin(alpha, gamma):
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=5)
    ours = CategoricalFocalLoss(alpha=alpha, gamma=gamma, class_reduction="sum")
    keras_loss = keras.losses.CategoricalFocalCrossentropy(alpha=alpha, gamma=gamma)
    assert value(ours(y_true, y_pred)) == pytest.approx(value(keras_loss(y_true, y_pred)), rel=1e-5)
    mean = CategoricalFocalLoss(alpha=alpha, gamma=gamma)
    assert value(mean(y_true, y_pred)) == pytest.approx(value(ours(y_true, y_pred)) / 4, rel=1e-5)


@agnostic
def test_categorical_focal_with_gamma_zero_is_weighted_crossentropy():
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=6)
    ce = value(keras.losses.CategoricalCrossentropy()(y_true, y_pred))
    assert value(CategoricalFocalLoss(alpha=1.0, gamma=0.0, class_reduction="sum")(y_true, y_pred)) == \
        pytest.approx(ce, rel=1e-5)


@agnostic
def test_binary_focal_hand_computed_and_keras_builtin():
    y_true = np.array([[[[1.0], [0.0]]]], "float32")  # (1, 1, 2, 1)
    y_pred = np.array([[[[0.7], [0.4]]]], "float32")
    expected = (-0.25 * 0.3 ** 2 * np.log(0.7) - 0.75 * 0.4 ** 2 * np.log(0.6)) / 2
    assert value(BinaryFocalLoss()(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    b_true, b_pred = random_binary((2, 6, 6, 1), seed=7)
    builtin = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=1.5)
    assert value(BinaryFocalLoss(alpha=0.4, gamma=1.5)(b_true, b_pred)) == \
        pytest.approx(value(builtin(b_true, b_pred)), rel=1e-5)


@agnostic
def test_losses_are_finite_for_saturated_predictions():
    y_true, _ = random_pair((2, 6, 6, 4), seed=8)
    wrong = np.roll(y_true, 1, axis=-1)  # probability exactly 0 on the true class, 1 elsewhere
    for loss in (DiceLoss(), CategoricalFocalLoss(), DiceFocalLoss()):
        assert np.isfinite(value(loss(y_true, wrong))) and value(loss(y_true, wrong)) > 0
    b_true = y_true[..., :1]
    for loss in (BinaryFocalLoss(), BCEDiceLoss()):
        assert np.isfinite(value(loss(b_true, 1.0 - b_true))) and value(loss(b_true, 1.0 - b_true)) > 1e-3


# ----------------------------------------------------------------------------------------------
# Combined losses
# ----------------------------------------------------------------------------------------------


@agnostic
def test_dice_focal_is_the_weighted_sum_of_its_terms():
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=9)
    weights = [0.25] * 4
    dice = value(DiceLoss(class_weights=weights)(y_true, y_pred))
    focal = value(CategoricalFocalLoss(alpha=0.5, gamma=1.0)(y_true, y_pred))
    combined = DiceFocalLoss(dice_weight=2.0, focal_weight=3.0, class_weights=weights, alpha=0.5, gamma=1.0)
    assert value(combined(y_true, y_pred)) == pytest.approx(2 * dice + 3 * focal, rel=1e-5)


@agnostic
def test_bce_dice_is_crossentropy_plus_dice():
    y_true, y_pred = random_binary((2, 6, 6, 1), seed=10)
    bce = value(keras.losses.BinaryCrossentropy()(y_true, y_pred))
    dice = np_dice_loss(y_true, y_pred)
    assert value(BCEDiceLoss()(y_true, y_pred)) == pytest.approx(bce + dice, rel=1e-5)
    assert value(BCEDiceLoss(bce_weight=0.5, dice_weight=2.0)(y_true, y_pred)) == \
        pytest.approx(0.5 * bce + 2 * dice, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Arguments, shapes, serialisation
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("factory,argument", [
    (lambda: DiceLoss(smooth=0.0), "smooth"),
    (lambda: DiceLoss(class_weights=[0.0, 0.0]), "class_weights"),
    (lambda: DiceLoss(class_weights=[1.0, -1.0]), "class_weights"),
    (lambda: DiceLoss(class_ids=[1, 1]), "class_ids"),
    (lambda: DiceLoss(class_ids=[1, 2], class_weights=[1.0]), "class_weights"),
    (lambda: CategoricalFocalLoss(gamma=-1.0), "gamma"),
    (lambda: CategoricalFocalLoss(alpha="0.25"), "alpha"),
    (lambda: CategoricalFocalLoss(class_reduction="max"), "class_reduction"),
    (lambda: BinaryFocalLoss(alpha=1.5), "alpha"),
    (lambda: DiceFocalLoss(dice_weight=0.0, focal_weight=0.0), "dice_weight"),
    (lambda: DiceFocalLoss(focal_weight=float("nan")), "focal_weight"),
    (lambda: BCEDiceLoss(bce_weight=-2.0), "bce_weight"),
])
def test_bad_arguments_raise_value_error_naming_them(factory, argument):
    with pytest.raises(ValueError, match=argument):
        factory()


@agnostic
def test_shape_mismatches_are_reported():
    y_true, y_pred = random_pair((2, 4, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        DiceLoss()(y_true[..., :3], y_pred)
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        DiceLoss(class_weights=[1.0, 1.0, 1.0])(y_true, y_pred)
    with pytest.raises(ValueError, match="alpha has 2 entries"):
        CategoricalFocalLoss(alpha=[0.5, 0.5])(y_true, y_pred)


ALL_LOSSES = [
    DiceLoss(class_weights=[0.1, 0.2, 0.3, 0.4], smooth=0.5, per_image=True, normalize_weights=True,
             class_ids=None, name="my_dice"),
    DiceLoss(class_ids=[1, 2, 3]),
    CategoricalFocalLoss(alpha=[0.1, 0.2, 0.3, 0.4], gamma=1.5, class_reduction="sum"),
    DiceFocalLoss(dice_weight=0.5, focal_weight=2.0, class_weights=[0.25] * 4, alpha=0.3, gamma=1.0,
                  per_image=True),
    BinaryFocalLoss(alpha=0.4, gamma=3.0),
    BCEDiceLoss(bce_weight=0.3, dice_weight=0.7, smooth=1.0, per_image=True),
]


@agnostic
@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_serialisation_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    binary = isinstance(loss, (BinaryFocalLoss, BCEDiceLoss))
    y_true, y_pred = random_binary((2, 6, 6, 1), seed=11) if binary else random_pair((2, 6, 6, 4), seed=11)
    assert value(restored(y_true, y_pred)) == pytest.approx(value(loss(y_true, y_pred)), rel=1e-6)


def tiny_model(channels: int, activation: str) -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    outputs = keras.layers.Conv2D(channels, 3, padding="same", activation=activation)(inputs)
    return keras.Model(inputs, outputs)


@agnostic
@pytest.mark.parametrize("loss,channels,activation", [
    (DiceFocalLoss(class_weights=[0.25] * 4), 4, "softmax"),
    (BCEDiceLoss(), 1, "sigmoid"),
])
def test_compile_fit_and_reload(tmp_path, loss, channels, activation):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 2)).astype("float32")
    if channels == 1:
        y = (x[..., :1] > 0).astype("float32")
    else:
        y = np.eye(channels, dtype="float32")[np.digitize(x[..., 0], [-0.7, 0.0, 0.7])]
    model = tiny_model(channels, activation)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    path = tmp_path / "tiny.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects: the loss is registered
    assert type(reloaded.loss) is type(loss) and reloaded.loss.get_config() == loss.get_config()
    y_pred = reloaded(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y_pred), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    assert value(reloaded.loss(y, y_pred)) == pytest.approx(value(loss(y, y_pred)), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Cross-check against segmentation_models_3D (paper 2's library)
# ----------------------------------------------------------------------------------------------


SM_CASES = [
    ("dice", {}, {}),
    ("dice", {"class_weights": [0.25] * 4}, {"class_weights": [0.25] * 4}),
    ("dice", {"class_weights": [0.1, 0.2, 0.3, 0.4], "per_image": True},
     {"class_weights": [0.1, 0.2, 0.3, 0.4], "per_image": True}),
    ("dice", {"class_ids": [1, 2, 3], "class_weights": [1.0, 2.0, 3.0], "smooth": 1.0},
     {"class_indexes": [1, 2, 3], "class_weights": [1.0, 2.0, 3.0], "smooth": 1.0}),
    ("focal", {}, {}),
    ("focal", {"alpha": 0.5, "gamma": 1.0}, {"alpha": 0.5, "gamma": 1.0}),
    ("binary_focal", {}, {}),
    ("binary_focal", {"alpha": 0.6, "gamma": 3.0}, {"alpha": 0.6, "gamma": 3.0}),
    ("dice_focal_paper2", {"class_weights": [0.25] * 4}, {}),
    ("bce_dice", {}, {}),
]


@pytest.mark.parametrize("kind,ours_kwargs,sm_kwargs", SM_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SM_CASES)])
def test_matches_segmentation_models_3d(kind, ours_kwargs, sm_kwargs):
    os.environ.setdefault("SM_FRAMEWORK", "keras")
    sm = pytest.importorskip("segmentation_models_3D", reason="segmentation_models_3D is not installed")
    if "class_weights" in sm_kwargs:
        sm_kwargs = {**sm_kwargs, "class_weights": np.array(sm_kwargs["class_weights"], "float32")}
    # sm handles 5-D tensors only: (batch, X, Y, Z, C)
    if kind in ("binary_focal", "bce_dice"):
        y_true, y_pred = random_binary((2, 6, 6, 6, 1), seed=12)
    else:
        y_true, y_pred = random_pair((2, 6, 6, 6, 4), seed=12)
        y_true[0, ..., 2] = 0.0  # class 2 absent from image 0 (per_image matters)
        y_true[0, ..., 0] = 1.0 - y_true[0, ..., 1] - y_true[0, ..., 3]
    if kind == "dice":
        ours, theirs = DiceLoss(**ours_kwargs), sm.losses.DiceLoss(**sm_kwargs)
    elif kind == "focal":
        ours, theirs = CategoricalFocalLoss(**ours_kwargs), sm.losses.CategoricalFocalLoss(**sm_kwargs)
    elif kind == "binary_focal":
        ours, theirs = BinaryFocalLoss(**ours_kwargs), sm.losses.BinaryFocalLoss(**sm_kwargs)
    elif kind == "dice_focal_paper2":
        # paper 2's code: dice_loss(class_weights=0.25 × 4) + 1 × categorical focal loss
        ours = DiceFocalLoss(**ours_kwargs)
        theirs = sm.losses.DiceLoss(class_weights=np.array([0.25] * 4)) + 1 * sm.losses.CategoricalFocalLoss()
        assert value(ours(y_true, y_true)) == pytest.approx(value(theirs(y_true, y_true)), abs=1e-5)
    else:
        ours, theirs = BCEDiceLoss(**ours_kwargs), sm.losses.bce_dice_loss
    np.testing.assert_allclose(value(ours(y_true, y_pred)), value(theirs(y_true, y_pred)), rtol=0, atol=1e-5)
