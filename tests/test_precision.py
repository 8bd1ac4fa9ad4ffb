"""Mixed precision and XLA decisions (brats_keras.precision): the resolution rules, float32 heads, losses
and metrics under every policy, a bfloat16-trained model against its float32 reload, float32 exports."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brats_keras.configs.base import MetricConfig, ModelConfig, TrainConfig, make_compiled_model, make_metrics
from brats_keras.export import export_model, load_predictor
from brats_keras.losses import LOSSES
from brats_keras.metrics import METRICS
from brats_keras.models import create_model
from brats_keras.precision import (
    Precision, cpu_bf16_flags, cpu_bf16_speedup, model_precision, precision_scope, rebuild_in_precision, resolve_jit_compile,
    resolve_precision,
)

COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-3, "mixed_bfloat16": 1.5e-2}
"""Relative agreement of a loss or metric fed the policy's compute dtype with its float32 value: the inputs
themselves are rounded to 11 (float16) or 8 (bfloat16) significant bits, a relative step of 2^-11 / 2^-8;
the sums over a batch then run in float32, so the result keeps about that accuracy."""


# --------------------------------------------------------------------------------- resolution rules
@pytest.mark.parametrize("devices, cpu_flags, speedup, expected", [
    ([("gpu", (9, 0))], [], None, "mixed_bfloat16"),  # H100
    ([("gpu", (8, 0)), ("gpu", (8, 6))], [], None, "mixed_bfloat16"),
    ([("gpu", (7, 0))], ["avx512_bf16"], None, "mixed_float16"),  # V100: float16 tensor cores, no bfloat16
    ([("gpu", (8, 0)), ("gpu", (7, 5))], [], None, "mixed_float16"),  # the oldest card decides
    ([("tpu", None)], [], None, "mixed_bfloat16"),
    ([], ["avx512_bf16"], 1.8, "mixed_bfloat16"),  # a CPU where bfloat16 measures faster
    ([], ["amx_bf16"], 3.0, "mixed_bfloat16"),
    ([], ["avx512_bf16"], 0.5, "float32"),  # the flag, but bfloat16 measures slower
    ([], [], None, "float32"),
])
def test_auto_picks_the_policy_the_hardware_computes_natively(devices, cpu_flags, speedup, expected):
    resolved = resolve_precision("auto", devices=devices, cpu_flags=cpu_flags, cpu_speedup=speedup)
    assert resolved.policy == expected and resolved.requested == "auto"
    assert resolved.line().startswith(f"precision: {expected} (auto: ")


def test_several_workers_on_cpus_stay_float32_without_measuring(monkeypatch):
    import brats_keras.precision as precision

    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("measured with several workers"))
    resolved = resolve_precision("auto", devices=[], cpu_flags=["avx512_bf16"], workers=2)
    assert resolved.policy == "float32" and "2 workers on CPUs" in resolved.reason
    assert resolve_precision("mixed_bfloat16", devices=[], workers=2).policy == "mixed_bfloat16"
    assert resolve_precision("auto", devices=[("gpu", (9, 0))], workers=2).policy == "mixed_bfloat16"


def test_an_explicit_precision_is_kept_and_a_bad_one_named():
    assert resolve_precision("mixed_bfloat16", devices=[], cpu_flags=[]) == Precision(
        "mixed_bfloat16", "--precision", "mixed_bfloat16")
    assert resolve_precision("mixed_float16", devices=[("gpu", (7, 0))]).policy == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_float16 needs a GPU"):  # TensorFlow has no CPU MaxPool3D in float16
        resolve_precision("mixed_float16", devices=[])
    with pytest.raises(ValueError, match="precision: 'half' not in auto, float32"):
        resolve_precision("half")
    with pytest.raises(ValueError, match="precision: 'fast'"):
        TrainConfig(epochs=1, batch_size=1, precision="fast")


def test_the_cpu_speedup_is_measured_once_per_machine_and_kept(tmp_path, monkeypatch):
    import brats_keras.precision as precision

    calls = []
    monkeypatch.setenv("BRATS_KERAS_CACHE", str(tmp_path))
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(precision, "_measure_cpu_bf16_speedup", lambda: calls.append(1) or 1.23456)
    precision.cpu_bf16_speedup.cache_clear()
    try:
        assert precision.cpu_bf16_speedup() == 1.235 and len(calls) == 1
        kept = json.loads((tmp_path / precision.CPU_BF16_FILE).read_text())
        assert kept == {precision._cpu_key(): 1.235} and "cores | tensorflow" in precision._cpu_key()
        precision.cpu_bf16_speedup.cache_clear()  # a new process on the machine: read, not measured again
        assert precision.cpu_bf16_speedup() == 1.235 and len(calls) == 1
        precision.cpu_bf16_speedup.cache_clear()
        monkeypatch.setenv(precision.CPU_BF16_ENV, "0.5")  # the variable replaces the measurement
        assert precision.cpu_bf16_speedup() == 0.5 and len(calls) == 1
        precision.cpu_bf16_speedup.cache_clear()
        monkeypatch.setenv(precision.CPU_BF16_ENV, "fast")
        with pytest.raises(ValueError, match="BRATS_KERAS_CPU_BF16_SPEEDUP='fast' is not a number"):
            precision.cpu_bf16_speedup()
    finally:
        precision.cpu_bf16_speedup.cache_clear()


def test_the_cpu_measurement_itself_is_a_positive_ratio():
    from brats_keras.precision import _measure_cpu_bf16_speedup

    assert _measure_cpu_bf16_speedup() > 0


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_bf16_flags(info) == ["avx512_bf16"]
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm (Graviton 3)
    assert cpu_bf16_flags(info) == ["bf16"]
    info.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(info) == [] and cpu_bf16_flags(tmp_path / "missing") == []


def test_xla_is_on_with_an_accelerator_and_off_on_a_cpu_unless_asked():
    assert resolve_jit_compile("auto", devices=[("gpu", (9, 0))]) is True
    assert resolve_jit_compile("auto", devices=[]) is False
    assert resolve_jit_compile(True, devices=[]) is True and resolve_jit_compile(False, devices=[("gpu", (9, 0))]) is False
    with pytest.raises(ValueError, match="jit_compile"):
        resolve_jit_compile("yes")


def test_the_scope_sets_the_global_policy_and_restores_it():
    assert keras.config.dtype_policy().name == "float32"
    with precision_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        with precision_scope("auto"):
            pass


# --------------------------------------------------------------------------------- float32 where it matters
@pytest.mark.parametrize("name, shape, kwargs", [
    ("unet2d", (32, 32, 2), {"filters": 4}),
    ("resunet2d", (32, 32, 2), {"filters": 4}),
    ("unet3d_modified", (16, 16, 16, 3), {"filters": 2}),
    ("residual_unet2d_binary", (32, 32, 3), {"filters": 4, "depth": 2}),
])
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_models_compute_low_precision_and_return_float32(name, shape, kwargs, policy):
    if policy == "mixed_float16" and len(shape) == 4:
        pytest.skip("TensorFlow's CPU has no float16 MaxPool3D; resolve_precision refuses mixed_float16 on a CPU")
    with precision_scope(policy):
        model = create_model(name, input_shape=shape, **kwargs)
    assert model_precision(model) == policy
    assert model.inputs[0].dtype == "float32" and model.outputs[0].dtype == "float32"
    heads = [layer for layer in model.layers if layer.name.endswith("_head")]
    assert heads and all(layer.dtype_policy.name == "float32" for layer in heads)
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32 (Keras' mixed policies)
    out = model(np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def _pair(channels=4, shape=(2, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, channels, shape)
    logits = rng.normal(size=(*shape, channels)) + 2.0 * np.eye(channels)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return np.eye(channels, dtype=np.float32)[labels], probs.astype(np.float32)


LOSS_CASES = {
    "dice": {}, "categorical_focal": {}, "dice_focal": {"class_weights": [0.25] * 4, "focal_weight": 1.0},
}
BINARY_LOSS_CASES = {"binary_focal": {}, "bce_dice": {}}
METRIC_CASES = (
    MetricConfig("dice", {"num_classes": 4, "name": "dice"}),
    MetricConfig("dice", {"num_classes": 4, "soft": True, "name": "soft_dice"}),
    MetricConfig("iou", {"threshold": 0.5, "num_classes": 4, "name": "iou"}),
    MetricConfig("mean_iou", {"num_classes": 4}),
    MetricConfig("region_dice", {"region": "WT"}),
    MetricConfig("precision", {"region": "TC"}),
    MetricConfig("sensitivity", {"region": "WT"}),
    MetricConfig("specificity", {"region": "ET"}),
)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_losses_and_metrics_under_a_policy_agree_with_float32(policy):
    y_true, y_pred = _pair()
    low = keras.ops.cast(y_pred, COMPUTE_DTYPE[policy])  # what a low-precision head would hand them
    assert {spec.name for spec in METRIC_CASES} == set(METRICS)  # every in-graph metric a config can name
    b_true, b_pred = y_true[..., 3:], y_pred[..., 3:] / y_pred[..., 3:].max()  # one sigmoid-like channel
    assert set(LOSS_CASES) | set(BINARY_LOSS_CASES) == set(LOSSES)  # every loss a config can name
    for name, options in {**LOSS_CASES, **BINARY_LOSS_CASES}.items():
        truth, probs = (b_true, b_pred) if name in BINARY_LOSS_CASES else (y_true, y_pred)
        reference = float(LOSSES[name](**options)(truth, probs))
        with precision_scope(policy):
            value = LOSSES[name](**options)(truth, keras.ops.cast(probs, COMPUTE_DTYPE[policy]))
        assert keras.backend.standardize_dtype(value.dtype) == "float32", name
        assert float(value) == pytest.approx(reference, rel=TOLERANCE[policy]), name
    for spec in METRIC_CASES:
        (reference_metric,) = make_metrics([spec])
        reference_metric.update_state(y_true, y_pred)
        with precision_scope(policy):
            (metric,) = make_metrics([spec])
            metric.update_state(y_true, low)
            value = metric.result()
        expected = keras.ops.convert_to_numpy(reference_metric.result())
        assert keras.backend.standardize_dtype(value.dtype) == "float32", spec.name
        np.testing.assert_allclose(keras.ops.convert_to_numpy(value), expected, rtol=TOLERANCE[policy], atol=1e-6)


def test_float16_training_gets_loss_scaling_and_bfloat16_does_not():
    train = TrainConfig(epochs=1, batch_size=2, precision="mixed_float16")
    with precision_scope("mixed_float16"):
        fp16 = make_compiled_model(ModelConfig("unet2d", {"filters": 4}), train, input_shape=(32, 32, 2))
    with precision_scope("mixed_bfloat16"):
        bf16 = make_compiled_model(ModelConfig("unet2d", {"filters": 4}), train, input_shape=(32, 32, 2))
    assert isinstance(fp16.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(bf16.optimizer, keras.optimizers.LossScaleOptimizer)


# --------------------------------------------------------------------------------- trained in bf16, run in f32
def _blobs(n=16, size=32, seed=0):
    """Bright discs (class 1) and bright squares (class 2) on a dim background, two channels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.1, 0.05, (n, size, size, 2)).astype(np.float32)
    y = np.zeros((n, size, size), np.int64)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(9, 36)
        y[i][disc] = 1
        sy, sx = rng.integers(2, size - 8, 2)
        y[i, sy:sy + 5, sx:sx + 5] = 2
    x[..., 0] += (y > 0) * 0.8
    x[..., 1] += (y == 2) * 0.6
    return x, np.eye(3, dtype=np.float32)[y]


@pytest.mark.slow
def test_a_bfloat16_trained_model_agrees_with_its_float32_reload(tmp_path):
    x, y = _blobs()
    keras.utils.set_random_seed(0)
    train = TrainConfig(epochs=1, batch_size=8, learning_rate=3e-3, precision="mixed_bfloat16")
    with precision_scope("mixed_bfloat16"):
        model = make_compiled_model(ModelConfig("unet2d", {"filters": 8, "num_classes": 3}), train,
                                    input_shape=(32, 32, 2))
        model.fit(x, y, batch_size=8, epochs=25, verbose=0)
        bf16 = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
        paths = export_model(model, tmp_path / "model.keras", tmp_path / "saved_model")
    assert model_precision(model) == "mixed_bfloat16"
    assert (bf16.argmax(-1) == y.argmax(-1)).mean() > 0.9  # it learnt the blobs: the agreement below means something

    f32 = load_predictor(paths["keras"], batch_size=8, precision="float32")
    f32_probs = f32(x)
    agree = (f32_probs.argmax(-1) == bf16.argmax(-1)).mean()
    assert agree >= 0.99, agree
    assert model_precision(f32._keep) == "float32"
    as_trained = load_predictor(paths["keras"], batch_size=8)  # without precision: the policy it was trained in
    assert model_precision(as_trained._keep) == "mixed_bfloat16"

    import tensorflow as tf

    served = tf.saved_model.load(paths["saved_model"])
    concrete = served.serve.concrete_functions[0]
    (spec,) = concrete.structured_input_signature[0]
    assert spec.dtype == tf.float32
    assert all(t.dtype == tf.float32 for t in tf.nest.flatten(concrete.structured_outputs))
    assert served.serve(tf.constant(x[:2])).dtype == tf.float32


def test_rebuilding_in_a_policy_keeps_weights_names_and_the_float32_head():
    with precision_scope("mixed_bfloat16"):
        model = create_model("u_resunet", input_shape=(32, 32, 2), filters=4)
    rebuilt = rebuild_in_precision(model, "float32")
    assert model_precision(rebuilt) == "float32" and [l.name for l in rebuilt.layers] == [l.name for l in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), rebuilt.get_weights()))
    back = rebuild_in_precision(rebuilt, "mixed_bfloat16")
    assert model_precision(back) == "mixed_bfloat16"
    assert back.get_layer(model.layers[-1].name).dtype_policy.name == "float32"
    assert rebuild_in_precision(back, "mixed_bfloat16") is back
    assert json.loads(back.to_json())["config"]["name"] == model.name
