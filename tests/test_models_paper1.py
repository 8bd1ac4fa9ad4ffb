"""Tests of paper 1's models (``brats_keras.models.paper1``): shapes, structure, registry,
serialisation, gradient flow through the cascade, parameter counts, the block summary.

No TensorFlow import: keras + numpy only. Small models use 32² slices and ``filters=4``; the tests
on them are marked ``backend_agnostic`` and also run with ``KERAS_BACKEND=jax``. The paper
configuration (128² × 2, ``filters=32``) is only built, never run; those tests check shape and
parameter arithmetic that no backend changes, and are left out of the JAX re-run because JAX
compiles a weight initialiser per new kernel shape (about half a second each, ~40 s for the
paper-sized models on a 2-core machine).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brats_keras.layers import ConvBlock, ResidualBlock
from brats_keras.models import create_model, list_models
from brats_keras.models.paper1 import block_of, block_summary, resunet2d, u_resunet, unet2d

agnostic = pytest.mark.backend_agnostic

SMALL = dict(input_shape=(32, 32, 2), num_classes=4, filters=4)
PAPER = dict(input_shape=(128, 128, 2), num_classes=4, filters=32)

# variant id → (builder, extra kwargs)
VARIANTS = {
    "unet2d": (unet2d, {}),
    "resunet2d": (resunet2d, {}),
    "u_resunet_features": (u_resunet, {"cascade_input": "features"}),
    "u_resunet_probabilities": (u_resunet, {"cascade_input": "probabilities"}),
}


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


EAGER = keras.backend.backend() != "jax"
"""Run small models eagerly except on JAX, whose eager mode compiles every op separately (slow);
there ``predict`` / ``fit`` compile the whole graph once."""


def infer(model, x):
    """Inference-mode output as a NumPy array."""
    if EAGER:
        return keras.ops.convert_to_numpy(model(x, training=False))
    return model.predict(x, verbose=0)


def out_shape(model, layer_name):
    return tuple(model.get_layer(layer_name).output.shape)


# ----------------------------------------------------------------------------------------------
# Shapes and structure
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_model_outputs_softmax_and_round_trips_through_a_keras_file(variant, tmp_path):
    builder, extra = VARIANTS[variant]
    model = builder(**SMALL, **extra)
    assert tuple(model.input.shape) == (None, 32, 32, 2)
    assert tuple(model.output.shape) == (None, 32, 32, 4)
    x = rand(2, 32, 32, 2, seed=1)
    y = infer(model, x)
    assert y.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)  # softmax over the 4 classes
    assert (y > 0).all()
    # .keras round trip: the package's layers are registered, so no custom_objects are needed
    path = tmp_path / f"{variant}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == model.name
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(infer(loaded, x), y, atol=1e-6)


def test_unet2d_paper_configuration_shapes():
    model = unet2d(**PAPER)
    assert tuple(model.output.shape) == (None, 128, 128, 4)
    # encoders: channels double while the size halves
    for i, (size, channels) in enumerate([(128, 32), (64, 64), (32, 128), (16, 256)], start=1):
        assert out_shape(model, f"unet2d_enc{i}") == (None, size, size, channels)
    assert out_shape(model, "unet2d_bridge") == (None, 8, 8, 512)
    # "upscaled from 8x8x512 to 16x16x256"
    assert out_shape(model, "unet2d_dec1_up") == (None, 16, 16, 256)
    assert isinstance(model.get_layer("unet2d_dec1_up"), keras.layers.Conv2DTranspose)
    assert out_shape(model, "unet2d_dec1_concat") == (None, 16, 16, 512)
    assert out_shape(model, "unet2d_dec4") == (None, 128, 128, 32)
    # the paper's U-Net has no batch normalisation
    assert not any("moving_mean" in w.path for w in model.weights)
    assert all(model.get_layer(n).norm == "none" for n in ["unet2d_enc1", "unet2d_bridge", "unet2d_dec4"])


def test_resunet2d_paper_configuration_shapes_and_blocks():
    model = resunet2d(**PAPER)
    assert tuple(model.output.shape) == (None, 128, 128, 4)
    stem = model.get_layer("resunet2d_enc1")
    assert isinstance(stem, ResidualBlock) and stem.stem and stem.shortcut_conv is not None  # 2 → 32: projection
    for i, (size, channels) in enumerate([(128, 32), (64, 64), (32, 128), (16, 256)], start=1):
        assert out_shape(model, f"resunet2d_enc{i}") == (None, size, size, channels)
        block = model.get_layer(f"resunet2d_enc{i}")
        assert block.preactivation and block.strides == ((1, 1) if i == 1 else (2, 2))
    bridge = model.get_layer("resunet2d_bridge")
    assert bridge.strides == (2, 2) and not bridge.stem
    assert out_shape(model, "resunet2d_bridge") == (None, 8, 8, 512)  # same depth as the U-Net
    assert isinstance(model.get_layer("resunet2d_dec1_up"), keras.layers.UpSampling2D)
    assert out_shape(model, "resunet2d_dec1_concat") == (None, 16, 16, 512 + 256)
    assert out_shape(model, "resunet2d_dec1") == (None, 16, 16, 256)
    assert out_shape(model, "resunet2d_dec4") == (None, 128, 128, 32)
    assert sum("moving_mean" in w.path for w in model.weights) > 0  # the residual blocks are batch-normed


@pytest.mark.parametrize("cascade_input, channels", [("features", 32), ("probabilities", 4)])
def test_u_resunet_paper_configuration_cascade(cascade_input, channels):
    model = u_resunet(**PAPER, cascade_input=cascade_input)
    assert tuple(model.output.shape) == (None, 128, 128, 4)
    assert out_shape(model, "u_resunet_unet_bridge") == (None, 8, 8, 512)
    assert out_shape(model, "u_resunet_unet_dec1_up") == (None, 16, 16, 256)
    assert out_shape(model, "u_resunet_resunet_bridge") == (None, 8, 8, 512)
    # the ResUNet consumes the U-Net's last decoder features or its softmax output
    feeder = "u_resunet_unet_dec4" if cascade_input == "features" else "u_resunet_unet_head"
    assert model.get_layer("u_resunet_resunet_enc1").input is model.get_layer(feeder).output
    assert tuple(model.get_layer("u_resunet_resunet_enc1").input.shape) == (None, 128, 128, channels)
    has_unet_head = "u_resunet_unet_head" in [layer.name for layer in model.layers]
    assert has_unet_head == (cascade_input == "probabilities")
    if has_unet_head:
        assert model.get_layer("u_resunet_unet_head").get_config()["activation"] == "softmax"
    # features 32 → 32 at stride 1: the stem's shortcut is the identity; 4 → 32 needs a projection
    assert (model.get_layer("u_resunet_resunet_enc1").shortcut_conv is None) == (cascade_input == "features")


@agnostic
def test_depth_changes_the_number_of_levels():
    model = unet2d(input_shape=(16, 24, 2), num_classes=4, filters=4, depth=2, name="tiny")
    assert out_shape(model, "tiny_bridge") == (None, 4, 6, 16)
    assert tuple(model.output.shape) == (None, 16, 24, 4)
    assert "tiny_enc3" not in [layer.name for layer in model.layers]
    model = resunet2d(input_shape=(16, 16, 2), num_classes=4, filters=4, depth=2, output_activation="sigmoid")
    assert out_shape(model, "resunet2d_bridge") == (None, 4, 4, 16)
    assert model.get_layer("resunet2d_head").get_config()["activation"] == "sigmoid"


@agnostic
def test_layers_are_named_from_the_prefix():
    model = u_resunet(**SMALL, name="cascade")
    assert all(layer.name.startswith("cascade_") for layer in model.layers)
    assert model.name == "cascade"
    unet_blocks = [layer for layer in model.layers if layer.name.startswith("cascade_unet_")]
    assert sum(isinstance(layer, ConvBlock) for layer in unet_blocks) == 9  # 4 enc + bridge + 4 dec
    res_blocks = [layer for layer in model.layers if isinstance(layer, ResidualBlock)]
    assert len(res_blocks) == 9 and all(layer.name.startswith("cascade_resunet_") for layer in res_blocks)


# ----------------------------------------------------------------------------------------------
# Invalid arguments
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("builder, kwargs, argument", [
    (u_resunet, {"cascade_input": "logits"}, "cascade_input"),
    (unet2d, {"filters": 0}, "filters"),
    (resunet2d, {"filters": 2.5}, "filters"),
    (unet2d, {"input_shape": (120, 128, 2)}, "input_shape"),
    (resunet2d, {"input_shape": (128, 136, 2)}, "input_shape"),
    (u_resunet, {"input_shape": (128, 128)}, "input_shape"),
    (unet2d, {"input_shape": (None, 128, 2)}, "input_shape"),
    (unet2d, {"num_classes": 1}, "num_classes"),
    (u_resunet, {"num_classes": True}, "num_classes"),
    (resunet2d, {"depth": 0}, "depth"),
    (unet2d, {"activation": "not_an_activation"}, "activation"),
    (u_resunet, {"output_activation": "nope"}, "output_activation"),
    (resunet2d, {"name": ""}, "name"),
])
def test_invalid_arguments_raise_value_error_naming_them(builder, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        builder(**kwargs)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


@agnostic
def test_models_are_registered_and_built_through_the_registry():
    assert {"unet2d", "resunet2d", "u_resunet"} <= set(list_models())
    model = create_model("u_resunet", **SMALL, cascade_input="probabilities", name="reg")
    assert model.name == "reg" and tuple(model.output.shape) == (None, 32, 32, 4)
    assert "reg_unet_head" in [layer.name for layer in model.layers]
    assert create_model("unet2d", **SMALL).count_params() == unet2d(**SMALL).count_params()


# ----------------------------------------------------------------------------------------------
# Gradient flow through the cascade
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("cascade_input", ["features", "probabilities"])
def test_one_training_step_updates_the_unets_first_convolution(cascade_input):
    model = u_resunet(**SMALL, cascade_input=cascade_input, name="grad")
    first_conv = model.get_layer("grad_unet_enc1").convs[0]
    before = keras.ops.convert_to_numpy(first_conv.kernel).copy()
    head_before = keras.ops.convert_to_numpy(model.get_layer("grad_resunet_head").kernel).copy()
    x = rand(2, 32, 32, 2, seed=2)
    y = keras.ops.convert_to_numpy(keras.ops.one_hot(np.random.default_rng(3).integers(0, 4, (2, 32, 32)), 4))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy",
                  run_eagerly=EAGER)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(first_conv.kernel)
    head_after = keras.ops.convert_to_numpy(model.get_layer("grad_resunet_head").kernel)
    assert np.abs(head_after - head_before).max() > 0  # the step ran
    assert np.abs(after - before).max() > 1e-7  # and reached the very first layer of the U-Net


# ----------------------------------------------------------------------------------------------
# Parameter counts at the paper configuration (128² × 2, filters 32, 4 classes), from the formula
# ----------------------------------------------------------------------------------------------


def conv_params(k, c_in, c_out):
    """k×k convolution with bias."""
    return k * k * c_in * c_out + c_out


def bn_params(c):
    """gamma, beta, moving mean, moving variance (count_params counts the non-trainable ones too)."""
    return 4 * c


def convblock_params(c_in, c_out):
    """Two 3×3 convolutions, no normalisation (the U-Net's blocks)."""
    return conv_params(3, c_in, c_out) + conv_params(3, c_out, c_out)


def resblock_params(c_in, c_out, *, stride=1, stem=False):
    """[BN(c_in)] conv3×3 BN conv3×3 + shortcut (1×1 conv + BN unless the identity fits)."""
    n = 0 if stem else bn_params(c_in)
    n += conv_params(3, c_in, c_out) + bn_params(c_out) + conv_params(3, c_out, c_out)
    if c_in != c_out or stride != 1:
        n += conv_params(1, c_in, c_out) + bn_params(c_out)
    return n


def unet_body_params(c_in, f, depth=4):
    widths = [f * 2**i for i in range(depth + 1)]  # 32, 64, 128, 256 | 512
    n, c = 0, c_in
    for w in widths:  # encoders and bridge
        n += convblock_params(c, w)
        c = w
    for w in reversed(widths[:-1]):  # decoders: 2×2 transposed conv halving, concat skip (w), two convs
        n += 2 * 2 * c * w + w + convblock_params(2 * w, w)
        c = w
    return n


def resunet_body_params(c_in, f, depth=4):
    widths = [f * 2**i for i in range(depth + 1)]
    n = resblock_params(c_in, widths[0], stem=True)
    for c, w in zip(widths[:-1], widths[1:]):  # encoders 2..4 and the bridge, stride 2
        n += resblock_params(c, w, stride=2)
    c = widths[-1]
    for w in reversed(widths[:-1]):  # decoders: up-sampling (no weights), concat skip (w), residual block
        n += resblock_params(c + w, w)
        c = w
    return n


def head_params(c_in, k):
    return conv_params(1, c_in, k)


C_IN, F, K = 2, 32, 4


@agnostic
def test_formula_matches_the_hand_count_of_the_unet():
    # 9,856 + 55,424 + 221,440 + 885,248 + 3,539,968 (encoders, bridge)
    # + 2,294,528 + 573,824 + 143,552 + 35,936 (decoders) + 132 (head), added up by hand
    assert unet_body_params(C_IN, F) + head_params(F, K) == 7_759_908


@pytest.mark.parametrize("variant, expected", [
    ("unet2d", unet_body_params(C_IN, F) + head_params(F, K)),
    ("resunet2d", resunet_body_params(C_IN, F) + head_params(F, K)),
    ("u_resunet_features", unet_body_params(C_IN, F) + resunet_body_params(F, F) + head_params(F, K)),
    ("u_resunet_probabilities",
     unet_body_params(C_IN, F) + head_params(F, K) + resunet_body_params(K, F) + head_params(F, K)),
])
def test_parameter_counts_at_the_paper_configuration(variant, expected):
    builder, extra = VARIANTS[variant]
    assert builder(**PAPER, **extra).count_params() == expected


# ----------------------------------------------------------------------------------------------
# Block summary
# ----------------------------------------------------------------------------------------------


@agnostic
def test_block_of_groups_helper_layers_with_their_block():
    assert block_of("unet2d_dec1_up") == "unet2d_dec1"
    assert block_of("unet2d_dec1_concat") == "unet2d_dec1"
    assert block_of("u_resunet_unet_enc2_pool") == "u_resunet_unet_enc2"
    assert block_of("u_resunet_resunet_bridge") == "u_resunet_resunet_bridge"
    assert block_of("my_head_model_head") == "my_head_model_head"
    assert block_of("unet2d_input") == "unet2d_input"


@agnostic
def test_block_summary_is_one_row_per_block_and_adds_up():
    model = unet2d(**SMALL)
    table = block_summary(model)
    lines = table.splitlines()
    assert lines[0] == "| block | layers | output shape | params |"
    body = lines[2:-1]
    assert [row.split("|")[1].strip().strip("`") for row in body] == (
        ["unet2d_input"] + [f"unet2d_enc{i}" for i in range(1, 5)] + ["unet2d_bridge"]
        + [f"unet2d_dec{j}" for j in range(1, 5)] + ["unet2d_head"])
    rows = {row.split("|")[1].strip().strip("`"): [c.strip() for c in row.split("|")[2:5]] for row in body}
    assert rows["unet2d_bridge"] == ["MaxPooling2D + ConvBlock", "2×2×64", f"{convblock_params(32, 64):,}"]
    assert rows["unet2d_dec1"][:2] == ["Conv2DTranspose + Concatenate + ConvBlock", "4×4×32"]
    assert rows["unet2d_head"][1] == "32×32×4"
    assert sum(int(r[2].replace(",", "")) for r in rows.values()) == model.count_params()
    assert lines[-1] == f"| **total** | | | **{model.count_params():,}** |"


@agnostic
def test_block_summary_rejects_non_models():
    with pytest.raises(ValueError, match="model"):
        block_summary("unet2d")
