"""Tests of paper 2's 3D U-Nets (``brats_keras.models.paper2``) at 32³: shapes, structure, parameter
arithmetic, registry, serialisation, the softmax-attention identity (REPLICATION.md audit), and the
loss / IoU equality with ``segmentation_models_3D`` on the models' own outputs.

No TensorFlow import; the small-model tests are ``backend_agnostic`` (re-run with ``KERAS_BACKEND=jax``).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from brats_keras.layers import ConvBlock, SpatialAttention
from brats_keras.losses import DiceFocalLoss
from brats_keras.metrics import IoUScore
from brats_keras.models import create_model, list_models
from brats_keras.models.common import block_summary
from brats_keras.models.paper2 import (
    PAPER_DROPOUT, PAPER_INPUT_SHAPE, unet3d, unet3d_modified, unet3d_simple, unet3d_spatial_attention,
)

agnostic = pytest.mark.backend_agnostic
NAMES = ("unet3d_simple", "unet3d_modified", "unet3d_spatial_attention")
SMALL = dict(input_shape=(32, 32, 32, 3), num_classes=4, filters=4)


def volume(batch=1, size=32, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, size, size, size, channels)).astype("float32")


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


# ----------------------------------------------------------------------------------------------
# Shapes and structure
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("name", NAMES)
def test_three_models_map_32_cubed_volumes_to_class_probabilities(name):
    model = create_model(name, **SMALL)
    y = np.asarray(model.predict(volume(batch=2), verbose=0))
    assert model.input_shape == (None, 32, 32, 32, 3)
    assert y.shape == (2, 32, 32, 32, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)  # softmax head
    assert model.get_layer(f"{name}_bridge").output.shape[1:] == (2, 2, 2, 64)  # 32 / 2**4, filters · 16


@agnostic
def test_variants_differ_only_in_normalisation_and_attention():
    simple, modified, spatial = (create_model(n, **SMALL) for n in NAMES)
    for model, norm, attention in ((simple, "none", 0), (modified, "batch", 0), (spatial, "batch", 4)):
        blocks = layers_of(model, ConvBlock)
        assert len(blocks) == 9 and {b.norm for b in blocks} == {norm}
        assert len(layers_of(model, SpatialAttention)) == attention
        assert [b.dropout for b in blocks] == [0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1]
        assert all(b.kernel_initializer == "he_uniform" for b in blocks)
    # attention sits right after each of the four max-pools
    names = [layer.name for layer in spatial.layers]
    for prefix in ("enc2", "enc3", "enc4", "bridge"):
        pool = names.index(f"unet3d_spatial_attention_{prefix}_pool")
        assert names[pool + 1] == f"unet3d_spatial_attention_{prefix}_attention"
    assert {a.activation for a in layers_of(spatial, SpatialAttention)} == {"sigmoid"}


def _expected_params(filters, in_channels, num_classes, depth=4, batch_norm=False, attention=False):
    """Parameter count from the architecture's arithmetic (3×3×3 convs, 2×2×2 transposed convs)."""
    def conv(cin, cout, k=27):
        return k * cin * cout + cout + (4 * cout if batch_norm and k == 27 else 0)

    total, cin, widths = 0, in_channels, [filters * 2 ** i for i in range(depth + 1)]
    for width in widths:
        total += conv(cin, width) + conv(width, width)
        cin = width
    for width in reversed(widths[:-1]):
        total += conv(cin, width, k=8) + conv(2 * width, width) + conv(width, width)
        cin = width
    total += conv(cin, num_classes, k=1)
    if attention:
        total += depth * (7 ** 3 * 2 + 1)
    return total


def test_paper_configuration_parameter_counts_follow_the_architecture():
    """128³ × 3 input, filters 16 → 256 (built, never run)."""
    expected = {
        "unet3d_simple": _expected_params(16, 3, 4),
        "unet3d_modified": _expected_params(16, 3, 4, batch_norm=True),
        "unet3d_spatial_attention": _expected_params(16, 3, 4, batch_norm=True, attention=True),
    }
    assert expected["unet3d_simple"] == 5_645_828
    for name, count in expected.items():
        model = create_model(name)
        assert model.input_shape == (None, *PAPER_INPUT_SHAPE)
        assert model.output_shape == (None, 128, 128, 128, 4)
        assert model.count_params() == count, name
    table = block_summary(create_model("unet3d_spatial_attention"))
    assert "MaxPooling3D + SpatialAttention + ConvBlock" in table and "8×8×8×256" in table


# ----------------------------------------------------------------------------------------------
# The softmax attention of the paper's text is the identity
# ----------------------------------------------------------------------------------------------


@agnostic
def test_softmax_attention_model_computes_exactly_the_modified_unet():
    literal = unet3d_spatial_attention(attention_activation="softmax", **SMALL)
    modified = unet3d_modified(**SMALL)
    for layer in modified.layers:
        counterpart = literal.get_layer(layer.name.replace("unet3d_modified", "unet3d_spatial_attention"))
        counterpart.set_weights(layer.get_weights())
    x = volume(batch=2, seed=4)
    # whatever the attention convolutions hold, the literal model equals the one without attention
    for attention in layers_of(literal, SpatialAttention):
        attention.set_weights([w + np.random.default_rng(1).normal(size=w.shape).astype("float32")
                               for w in attention.get_weights()])
    np.testing.assert_allclose(literal.predict(x, verbose=0), modified.predict(x, verbose=0), atol=1e-6)
    # ... while the sigmoid gate (the default) does change the output
    gated = unet3d_spatial_attention(**SMALL)
    for layer in literal.layers:
        gated.get_layer(layer.name).set_weights(layer.get_weights())
    assert np.abs(gated.predict(x, verbose=0) - modified.predict(x, verbose=0)).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# Registry, serialisation, arguments
# ----------------------------------------------------------------------------------------------


@agnostic
def test_registered_and_overridable():
    assert set(NAMES) <= set(list_models("unet3d*"))
    model = create_model("unet3d_simple", input_shape=(16, 16, 32, 2), num_classes=3, filters=2, depth=3,
                         dropout=0.0)
    assert model.output_shape == (None, 16, 16, 32, 3)
    assert model.get_layer("unet3d_simple_bridge").output.shape[1:] == (2, 2, 4, 16)


@agnostic
@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_reproduces_predictions(name, tmp_path):
    model = create_model(name, **SMALL)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects: everything is registered
    x = volume(seed=2)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("builder, kwargs, argument", [
    (unet3d_simple, {"input_shape": (32, 32, 24, 3)}, "input_shape"),
    (unet3d_simple, {"input_shape": (32, 32, 3)}, "input_shape"),
    (unet3d_modified, {"dropout": (0.1, 0.2)}, "dropout"),
    (unet3d_modified, {"dropout": 1.0}, "dropout"),
    (unet3d, {"attention": "channel"}, "attention"),
    (unet3d, {"attention_activation": "relu"}, "attention_activation"),
    (unet3d_simple, {"norm": "batch"}, "norm"),
    (unet3d_spatial_attention, {"attention": "none"}, "attention"),
    (unet3d_modified, {"filters": 0}, "filters"),
    (unet3d_simple, {"kernel_initializer": "not_an_initializer"}, "kernel_initializer"),
])
def test_invalid_arguments_raise_value_error_naming_them(builder, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        builder(**{**SMALL, **kwargs})


def test_paper_dropout_has_one_rate_per_level():
    assert len(PAPER_DROPOUT) == 5 and max(PAPER_DROPOUT) == 0.3


# ----------------------------------------------------------------------------------------------
# Loss and IoU equal segmentation_models_3D's on the models' own outputs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_iou_equal_segmentation_models_3d_on_model_outputs(name):
    os.environ.setdefault("SM_FRAMEWORK", "keras")
    sm = pytest.importorskip("segmentation_models_3D", reason="segmentation_models_3D is not installed")
    model = create_model(name, **SMALL)
    rng = np.random.default_rng(7)
    y_pred = np.asarray(model.predict(volume(batch=2, seed=3), verbose=0))
    # sharpen the untrained model's near-uniform output so the 0.5 threshold of IoU selects voxels
    logits = np.log(np.clip(y_pred, 1e-7, 1.0)) * 40.0
    y_pred = np.exp(logits - logits.max(-1, keepdims=True))
    y_pred = (y_pred / y_pred.sum(-1, keepdims=True)).astype("float32")
    y_true = keras.utils.to_categorical(rng.integers(0, 4, size=(2, 32, 32, 32)), 4).astype("float32")
    assert 0.05 < (y_pred.max(-1) > 0.5).mean() < 0.999
    theirs_loss = (sm.losses.DiceLoss(class_weights=np.array([0.25] * 4, "float32"))
                   + 1 * sm.losses.CategoricalFocalLoss())
    ours_loss = DiceFocalLoss(class_weights=[0.25] * 4)
    assert float(ours_loss(y_true, y_pred)) == pytest.approx(float(theirs_loss(y_true, y_pred)), abs=1e-5)
    iou = IoUScore(threshold=0.5, num_classes=4)
    iou.update_state(y_true, y_pred)
    theirs_iou = float(sm.metrics.IOUScore(threshold=0.5)(y_true, y_pred))
    assert float(iou.result()) == pytest.approx(theirs_iou, abs=1e-5)
