"""Tests of brats_keras.metrics: hand-computed values, accumulation, reset, serialisation, fit/evaluate.

Tests marked ``backend_agnostic`` use keras.ops / numpy only and also run under
``KERAS_BACKEND=jax``. The cross-check against segmentation_models_3D (paper 2's library) is not
marked: it imports that library inside the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from brats_keras.losses import DiceLoss
from brats_keras.metrics import (
    REGION_CLASSES,
    DiceScore,
    IoUScore,
    MeanIoU,
    Precision,
    RegionDice,
    Sensitivity,
    Specificity,
)

agnostic = pytest.mark.backend_agnostic


def value(x) -> float:
    return float(keras.ops.convert_to_numpy(x))


def measure(metric, *batches) -> float:
    """Reset ``metric``, feed it every ``(y_true, y_pred[, sample_weight])`` batch, return its result."""
    metric.reset_state()
    for batch in batches:
        metric.update_state(*batch)
    return value(metric.result())


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def random_pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[-1], shape[:-1])
    return np.eye(shape[-1], dtype="float32")[labels], softmax(rng.normal(size=shape) * 2)


def probabilities_for(classes, num_classes=4):
    """Softmax-like probabilities whose argmax is ``classes``: 0.7 on it, 0.1 on the others."""
    return (np.eye(num_classes, dtype="float32")[classes] * 0.6 + 0.1).astype("float32")


# One image of 1×8 pixels. Reference classes and argmax predictions:
#   index      0  1  2  3  4  5  6  7
#   reference  0  1  1  2  2  3  3  3
#   predicted  0  1  3  2  0  3  3  1
HAND_LABELS = np.array([0, 1, 1, 2, 2, 3, 3, 3])
HAND_PREDICTED = np.array([0, 1, 3, 2, 0, 3, 3, 1])
HAND_TRUE = np.eye(4, dtype="float32")[HAND_LABELS].reshape(1, 1, 8, 4)
HAND_PRED = probabilities_for(HAND_PREDICTED).reshape(1, 1, 8, 4)
# Per class (TP, FP, FN): 0 → (1, 1, 0), 1 → (1, 1, 1), 2 → (1, 0, 1), 3 → (2, 1, 1)
# Regions (TP, FP, FN, TN): ET {3} → (2, 1, 1, 4); TC {1, 3} → (5, 0, 0, 3); WT {1, 2, 3} → (6, 0, 1, 1)


# ----------------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------------


@agnostic
def test_dice_score_per_class_and_mean_by_hand():
    per_class = {0: 2 / 3, 1: 2 / 4, 2: 2 / 3, 3: 4 / 6}
    for c, expected in per_class.items():
        assert measure(DiceScore(class_ids=c, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(expected)
    assert measure(DiceScore(num_classes=4, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(0.625)
    assert measure(DiceScore(class_ids=[1, 2, 3], smooth=0.0), (HAND_TRUE, HAND_PRED)) == \
        pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    # the default smoothing changes these values by less than 1e-5
    assert measure(DiceScore(num_classes=4), (HAND_TRUE, HAND_PRED)) == pytest.approx(0.625, abs=1e-5)


@agnostic
def test_region_metrics_by_hand():
    expected = {  # region: dice, precision, sensitivity, specificity
        "ET": (4 / 6, 2 / 3, 2 / 3, 4 / 5),
        "TC": (1.0, 1.0, 1.0, 1.0),  # classes 1 ↔ 3 confused, but both are tumour core
        "WT": (12 / 13, 1.0, 6 / 7, 1.0),
    }
    for region, (dice, precision, sensitivity, specificity) in expected.items():
        assert measure(RegionDice(region, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(dice)
        assert measure(Precision(region, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(precision)
        assert measure(Sensitivity(region, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(sensitivity)
        assert measure(Specificity(region, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(specificity)
    assert REGION_CLASSES == {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
    # a region given as class ids is the same metric
    assert measure(RegionDice([1, 2, 3], smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(12 / 13)


@agnostic
def test_iou_metrics_by_hand():
    # per-class IoU = TP / (TP + FP + FN): 1/2, 1/3, 1/2, 2/4
    expected = (0.5 + 1 / 3 + 0.5 + 0.5) / 4
    assert measure(IoUScore(num_classes=4, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(expected)
    assert measure(MeanIoU(num_classes=4), (HAND_TRUE, HAND_PRED)) == pytest.approx(expected)
    assert measure(IoUScore(class_ids=3, smooth=0.0), (HAND_TRUE, HAND_PRED)) == pytest.approx(0.5)


@agnostic
def test_iou_score_thresholds_each_channel_and_mean_iou_takes_argmax():
    # one pixel of class 1 predicted with probabilities (0.3, 0.4, 0.3): argmax is right, but no
    # channel passes 0.5, so IoUScore(threshold=0.5) sees no prediction at all (as sm does)
    y_true = np.array([[[[0.0, 1.0, 0.0]]]], "float32")
    y_pred = np.array([[[[0.3, 0.4, 0.3]]]], "float32")
    assert measure(IoUScore(class_ids=1, smooth=0.0), (y_true, y_pred)) == pytest.approx(0.0)
    assert measure(MeanIoU(num_classes=3), (y_true, y_pred)) == pytest.approx(1.0)  # only class 1 present
    assert measure(IoUScore(class_ids=1, threshold=0.35, smooth=0.0), (y_true, y_pred)) == pytest.approx(1.0)
    assert measure(IoUScore(class_ids=1, threshold=None, smooth=0.0), (y_true, y_pred)) == pytest.approx(0.4)


@agnostic
def test_sigmoid_outputs_are_thresholded():
    y_true = np.array([1, 1, 0, 0, 1], "float32").reshape(1, 1, 5, 1)
    y_pred = np.array([0.9, 0.4, 0.6, 0.1, 0.7], "float32").reshape(1, 1, 5, 1)
    # threshold 0.5 → predicted [1, 0, 1, 0, 1]: TP 2, FP 1, FN 1, TN 1
    assert measure(Precision(smooth=0.0), (y_true, y_pred)) == pytest.approx(2 / 3)
    assert measure(Sensitivity(smooth=0.0), (y_true, y_pred)) == pytest.approx(2 / 3)
    assert measure(Specificity(smooth=0.0), (y_true, y_pred)) == pytest.approx(1 / 2)
    assert measure(RegionDice(None, smooth=0.0), (y_true, y_pred)) == pytest.approx(4 / 6)
    assert measure(DiceScore(class_ids=0, smooth=0.0), (y_true, y_pred)) == pytest.approx(4 / 6)
    # threshold 0.65 → predicted [1, 0, 0, 0, 1]: TP 2, FP 0
    assert measure(Precision(threshold=0.65, smooth=0.0), (y_true, y_pred)) == pytest.approx(1.0)


@agnostic
def test_empty_reference_and_prediction_score_one():
    y_true = np.eye(4, dtype="float32")[np.zeros((1, 4, 4), int)]  # background only
    y_pred = probabilities_for(np.zeros((1, 4, 4), int))
    for smooth in (1e-5, 0.0):
        assert measure(RegionDice("ET", smooth=smooth), (y_true, y_pred)) == pytest.approx(1.0)
        assert measure(Sensitivity("WT", smooth=smooth), (y_true, y_pred)) == pytest.approx(1.0)
        assert measure(DiceScore(class_ids=[1, 2, 3], smooth=smooth), (y_true, y_pred)) == pytest.approx(1.0)
    # one false-positive voxel of ET makes its Dice 0 (reference empty, prediction not)
    y_pred[0, 0, 0] = probabilities_for(3)
    assert measure(RegionDice("ET"), (y_true, y_pred)) == pytest.approx(0.0, abs=1e-4)


@agnostic
def test_soft_dice_score_is_one_minus_dice_loss():
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=1)
    soft = measure(DiceScore(num_classes=4, soft=True), (y_true, y_pred))
    assert soft == pytest.approx(1 - value(DiceLoss()(y_true, y_pred)), abs=1e-5)
    hard = measure(DiceScore(num_classes=4), (y_true, y_pred))
    assert abs(soft - hard) > 1e-3


@agnostic
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype int64")  # keras.metrics.MeanIoU on JAX
def test_mean_iou_matches_keras_mean_iou_on_class_ids():
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=2)
    y_true[..., 2] = 0.0  # class 2 absent from the reference ...
    y_true[..., 0] = 1.0 - y_true[..., 1] - y_true[..., 3]
    y_pred[..., 2] = 0.0  # ... and from the prediction: both ignore it
    reference = keras.metrics.MeanIoU(num_classes=4)
    reference.update_state(y_true.argmax(-1).astype("int32"), y_pred.argmax(-1).astype("int32"))
    assert measure(MeanIoU(4), (y_true, y_pred)) == pytest.approx(value(reference.result()), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Accumulation: the replica-split / streaming property
# ----------------------------------------------------------------------------------------------


def _sigmoid_batches():
    """Two batches of 1×8 sigmoid outputs: batch A has Dice 1 (TP 1); batch B Dice 2/8 (TP 1, FP 3, FN 3)."""
    true_a = np.array([1, 0, 0, 0, 0, 0, 0, 0], "float32").reshape(1, 1, 8, 1)
    pred_a = np.array([0.9, 0, 0, 0, 0, 0, 0, 0], "float32").reshape(1, 1, 8, 1)
    true_b = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32").reshape(1, 1, 8, 1)
    pred_b = np.array([0.9, 0, 0, 0, 0.9, 0.9, 0.9, 0], "float32").reshape(1, 1, 8, 1)
    return (true_a, pred_a), (true_b, pred_b)


@agnostic
def test_accumulated_dice_is_the_dice_of_the_concatenation_not_a_mean_of_ratios():
    (true_a, pred_a), (true_b, pred_b) = _sigmoid_batches()
    metric = RegionDice(None, smooth=0.0)
    per_batch = [measure(metric, (true_a, pred_a)), measure(metric, (true_b, pred_b))]
    assert per_batch == pytest.approx([1.0, 0.25])
    streamed = measure(metric, (true_a, pred_a), (true_b, pred_b))
    whole = measure(metric, (np.concatenate([true_a, true_b]), np.concatenate([pred_a, pred_b])))
    assert streamed == pytest.approx(4 / 10) and whole == pytest.approx(4 / 10)  # 2 TP, 3 FP, 3 FN
    # a batch-mean of per-batch ratios (what a stateless Dice function gives) would be wrong here
    assert np.mean(per_batch) == pytest.approx(0.625) and abs(np.mean(per_batch) - streamed) > 0.2


ACCUMULATING = [
    lambda: DiceScore(num_classes=4),
    lambda: DiceScore(class_ids=[1, 3], soft=True),
    lambda: RegionDice("ET"),
    lambda: RegionDice("TC"),
    lambda: RegionDice("WT"),
    lambda: IoUScore(num_classes=4),
    lambda: IoUScore(class_ids=[2], threshold=None),
    lambda: MeanIoU(4),
    lambda: Precision("WT"),
    lambda: Sensitivity("TC"),
    lambda: Specificity("ET"),
]


@agnostic
@pytest.mark.parametrize("factory", ACCUMULATING, ids=lambda f: f().name)
def test_two_updates_equal_one_update_on_the_concatenated_batch(factory):
    true_a, pred_a = random_pair((2, 6, 6, 4), seed=3)
    true_b, pred_b = random_pair((3, 6, 6, 4), seed=4)
    pred_b = softmax(np.log(pred_b) + 2.0 * true_b)  # a better second batch: ratios differ per batch
    metric = factory()
    streamed = measure(metric, (true_a, pred_a), (true_b, pred_b))
    whole = measure(metric, (np.concatenate([true_a, true_b]), np.concatenate([pred_a, pred_b])))
    assert streamed == pytest.approx(whole, abs=1e-6)
    batch_mean = np.mean([measure(metric, (true_a, pred_a)), measure(metric, (true_b, pred_b))])
    assert abs(batch_mean - whole) > 1e-4  # the example can tell the two apart


@agnostic
def test_sample_weights_weight_the_counts():
    (true_a, pred_a), (true_b, pred_b) = _sigmoid_batches()
    both_true, both_pred = np.concatenate([true_a, true_b]), np.concatenate([pred_a, pred_b])
    metric = RegionDice(None, smooth=0.0)
    assert measure(metric, (both_true, both_pred, np.array([1.0, 0.0]))) == pytest.approx(1.0)
    assert measure(metric, (both_true, both_pred, np.array([0.0, 1.0]))) == pytest.approx(0.25)
    # weight 2 on batch A: TP 1·2 + 1, FP 3, FN 3 → 6 / 12
    assert measure(metric, (both_true, both_pred, np.array([2.0, 1.0]))) == pytest.approx(0.5)
    pixel_weights = np.ones((2, 1, 8), "float32")
    pixel_weights[1, 0, 4:] = 0.0  # ignore batch B's false positives
    assert measure(metric, (both_true, both_pred, pixel_weights)) == pytest.approx(4 / 7)


@agnostic
def test_reset_state_clears_the_counts():
    true_a, pred_a = random_pair((2, 6, 6, 4), seed=5)
    true_b, pred_b = random_pair((2, 6, 6, 4), seed=6)
    for metric in (DiceScore(num_classes=4), RegionDice("WT"), MeanIoU(4), Specificity("ET")):
        fresh = value(metric.result())
        metric.update_state(true_a, pred_a)
        assert any(np.any(keras.ops.convert_to_numpy(v) != 0) for v in metric.variables)
        metric.reset_state()
        assert all(np.all(keras.ops.convert_to_numpy(v) == 0) for v in metric.variables)
        assert value(metric.result()) == pytest.approx(fresh)
        metric.update_state(true_b, pred_b)
        only_b = value(metric.result())
        assert only_b == pytest.approx(measure(type(metric).from_config(metric.get_config()), (true_b, pred_b)))


# ----------------------------------------------------------------------------------------------
# Arguments, serialisation
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("factory,argument", [
    (lambda: DiceScore(), "class_ids"),
    (lambda: DiceScore(class_ids=[1, 1]), "class_ids"),
    (lambda: DiceScore(class_ids=4, num_classes=4), "class_ids"),
    (lambda: DiceScore(num_classes=0), "num_classes"),
    (lambda: DiceScore(class_ids=1, threshold=1.5), "threshold"),
    (lambda: IoUScore(num_classes=4, smooth=-1.0), "smooth"),
    (lambda: MeanIoU(num_classes=None), "num_classes"),
    (lambda: RegionDice("NCR"), "region"),
    (lambda: RegionDice([-1]), "region"),
    (lambda: Precision("ET", threshold="0.5"), "threshold"),
])
def test_bad_arguments_raise_value_error_naming_them(factory, argument):
    with pytest.raises(ValueError, match=argument):
        factory()


@agnostic
def test_inputs_that_do_not_fit_the_metric_are_reported():
    y_true, y_pred = random_pair((1, 4, 4, 3))
    with pytest.raises(ValueError, match="num_classes=4"):
        DiceScore(num_classes=4).update_state(y_true, y_pred)
    with pytest.raises(ValueError, match="3 channels"):
        RegionDice("ET").update_state(y_true, y_pred)  # class 3 needs 4 channels
    with pytest.raises(ValueError, match="region=None"):
        Precision().update_state(y_true, y_pred)
    with pytest.raises(ValueError, match="same shape"):
        MeanIoU(3).update_state(y_true[..., :2], y_pred)


ALL_METRICS = [
    DiceScore(class_ids=[1, 2, 3], soft=True, threshold=0.3, smooth=1.0, name="dice_tumour"),
    DiceScore(num_classes=4),
    RegionDice("tc", smooth=0.0),
    IoUScore(threshold=0.4, class_ids=[0, 3], smooth=0.5),
    IoUScore(threshold=None, num_classes=4),
    MeanIoU(4, name="miou"),
    Precision([1, 3]),
    Sensitivity("WT"),
    Specificity("ET", threshold=0.3),
]


@agnostic
@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda m: m.name)
def test_serialisation_round_trip(metric):
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric)
    assert restored.get_config() == metric.get_config() and restored.name == metric.name
    y_true, y_pred = random_pair((2, 6, 6, 4), seed=7)
    assert measure(restored, (y_true, y_pred)) == pytest.approx(measure(metric, (y_true, y_pred)), rel=1e-6)


@agnostic
def test_default_names_identify_class_and_region():
    assert [m.name for m in (DiceScore(class_ids=3), DiceScore(num_classes=4), RegionDice("et"),
                             Precision("TC"), Sensitivity([1, 2]), Specificity(), IoUScore(num_classes=2),
                             MeanIoU(2))] == \
        ["dice_3", "dice", "dice_et", "precision_tc", "sensitivity_1_2", "specificity", "iou", "mean_iou"]


# ----------------------------------------------------------------------------------------------
# Inside model.compile / fit / evaluate
# ----------------------------------------------------------------------------------------------


@agnostic
def test_compile_fit_and_evaluate_accumulate_over_uneven_batches():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 2)).astype("float32")
    y = np.eye(4, dtype="float32")[np.digitize(x[..., 0] + 0.5 * x[..., 1], [-0.7, 0.0, 0.7])]
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", activation="softmax")(inputs))
    metrics = [DiceScore(num_classes=4), RegionDice("ET"), RegionDice("TC"), RegionDice("WT"),
               IoUScore(num_classes=4), MeanIoU(4), Precision("WT"), Sensitivity("WT"), Specificity("WT")]
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=metrics)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert {m.name for m in metrics} <= set(history.history)
    # batches of 3, 3 and 2: the evaluated metrics must be those of the whole set at once
    results = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    y_pred = model.predict(x, batch_size=8, verbose=0)
    for metric in metrics:
        fresh = type(metric).from_config(metric.get_config())
        assert results[metric.name] == pytest.approx(measure(fresh, (y, y_pred)), abs=1e-5), metric.name
    assert 0.0 < results["dice_wt"] < 1.0


# ----------------------------------------------------------------------------------------------
# Cross-check against segmentation_models_3D (paper 2's library)
# ----------------------------------------------------------------------------------------------


def test_matches_segmentation_models_3d_on_one_batch():
    os.environ.setdefault("SM_FRAMEWORK", "keras")
    sm = pytest.importorskip("segmentation_models_3D", reason="segmentation_models_3D is not installed")
    # sm handles 5-D tensors only: (batch, X, Y, Z, C)
    y_true, y_pred = random_pair((2, 6, 6, 6, 4), seed=8)
    ours = measure(IoUScore(num_classes=4), (y_true, y_pred))
    np.testing.assert_allclose(ours, value(sm.metrics.IOUScore(threshold=0.5)(y_true, y_pred)), rtol=0, atol=1e-5)
    ours_soft = measure(DiceScore(num_classes=4, soft=True), (y_true, y_pred))
    np.testing.assert_allclose(ours_soft, value(sm.metrics.FScore()(y_true, y_pred)), rtol=0, atol=1e-5)
    ours_ids = measure(IoUScore(class_ids=[1, 2, 3]), (y_true, y_pred))
    theirs_ids = sm.metrics.IOUScore(threshold=0.5, class_indexes=[1, 2, 3])(y_true, y_pred)
    np.testing.assert_allclose(ours_ids, value(theirs_ids), rtol=0, atol=1e-5)
    b_true = y_true[..., 1:2]
    b_pred = y_pred[..., 1:2] * 1.5
    for ours_metric, theirs_metric in [(Precision(), sm.metrics.Precision(threshold=0.5)),
                                       (Sensitivity(), sm.metrics.Recall(threshold=0.5))]:
        np.testing.assert_allclose(measure(ours_metric, (b_true, b_pred)), value(theirs_metric(b_true, b_pred)),
                                   rtol=0, atol=1e-5)
    # Over several batches sm's value (Keras averages it per batch) differs from ours (one IoU of all)
    second_true, second_pred = random_pair((2, 6, 6, 6, 4), seed=9)
    second_pred = softmax(np.log(second_pred) + 3.0 * second_true)
    sm_batch_mean = np.mean([value(sm.metrics.IOUScore(threshold=0.5)(t, p))
                             for t, p in [(y_true, y_pred), (second_true, second_pred)]])
    streamed = measure(IoUScore(num_classes=4), (y_true, y_pred), (second_true, second_pred))
    whole = measure(IoUScore(num_classes=4), (np.concatenate([y_true, second_true]),
                                              np.concatenate([y_pred, second_pred])))
    np.testing.assert_allclose(streamed, value(sm.metrics.IOUScore(threshold=0.5)(
        np.concatenate([y_true, second_true]), np.concatenate([y_pred, second_pred]))), rtol=0, atol=1e-5)
    assert streamed == pytest.approx(whole, abs=1e-6) and abs(sm_batch_mean - streamed) > 1e-3


# ----------------------------------------------------------------------------------------------
# tf.distribute: two CPU replicas (in a subprocess, as logical devices must be set before TF starts)
# ----------------------------------------------------------------------------------------------

MIRRORED_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from brats_keras.losses import DiceFocalLoss
from brats_keras.metrics import DiceScore, MeanIoU, RegionDice, Specificity

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 8, 8, 2)).astype("float32")
y = np.eye(4, dtype="float32")[np.digitize(x[..., 0] + 0.5 * x[..., 1], [-0.7, 0.0, 0.7])]

def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", activation="softmax")(inputs))

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build()
    metrics = [DiceScore(num_classes=4), RegionDice("WT"), MeanIoU(4), Specificity("ET")]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=DiceFocalLoss(per_image=True), metrics=metrics)
evaluated = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
y_pred = model.predict(x, verbose=0)
direct = {}
for metric in metrics:
    fresh = type(metric).from_config(metric.get_config())
    fresh.update_state(y, y_pred)
    direct[metric.name] = float(fresh.result())
direct["loss"] = float(DiceFocalLoss(per_image=True)(y, y_pred))
model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
single = build()
single.compile(optimizer=keras.optimizers.SGD(0.1), loss=DiceFocalLoss(per_image=True))
single.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
diff = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), single.get_weights()))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "evaluated": evaluated, "direct": direct,
                  "weight_diff": diff}))
"""


@pytest.mark.slow
def test_metrics_and_loss_are_exact_on_two_mirrored_replicas():
    """Each replica sees half of every batch: summed counts must give the whole-batch metrics, and the
    per-sample loss must give the single-device gradient step (Keras divides it by the replica count)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute needs the TensorFlow backend")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for name, expected in report["direct"].items():
        assert report["evaluated"][name] == pytest.approx(expected, abs=1e-5), name
    assert report["weight_diff"] < 1e-6


@agnostic
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper4_in_graph_ji_is_dsc_over_two_minus_dsc(seed):
    """Paper 4's training metrics as its experiment compiles them (tumour class 1 of a 2-class softmax):
    accumulated over batches, JI = DSC / (2 − DSC) ≤ DSC, F1 (from precision and recall) = DSC, and
    all agree with evaluation.scores_from_counts on the pooled pixels."""
    from brats_keras.evaluation import overlap_counts, scores_from_counts

    rng = np.random.default_rng(seed)
    batches, preds, truths = [], [], []
    for _ in range(3):
        truth = (rng.random((4, 16, 16)) < rng.uniform(0.05, 0.5)).astype("int64")
        p1 = np.clip(truth * rng.uniform(0.3, 1.0, truth.shape) + rng.uniform(0, 0.6, truth.shape), 0, 1)
        y_pred = np.stack([1 - p1, p1], axis=-1).astype("float32")
        batches.append((np.eye(2, dtype="float32")[truth], y_pred))
        preds.append(p1 > 0.5)
        truths.append(truth.astype(bool))
    dsc = measure(DiceScore(class_ids=[1], name="dsc"), *batches)
    ji = measure(IoUScore(class_ids=[1], name="ji"), *batches)
    precision = measure(Precision(region=[1]), *batches)
    recall = measure(Sensitivity(region=[1]), *batches)
    assert 0 < ji < dsc < 1
    assert ji == pytest.approx(dsc / (2 - dsc), rel=1e-5)
    assert 2 * precision * recall / (precision + recall) == pytest.approx(dsc, rel=1e-5)
    pooled = scores_from_counts(**overlap_counts(np.concatenate(preds), np.concatenate(truths)))
    assert (dsc, ji, precision, recall) == pytest.approx(
        (pooled["dice"], pooled["iou"], pooled["precision"], pooled["sensitivity"]), rel=1e-5)
