"""The one U-Net builder (``brats_keras.models.unet``): the spec's validation, the 2D and 3D variants of
every block kind / down-sampling / up-sampling / gate / attention option (layer names, per-level
output shapes and channels), the pluggable encoder, paper 2's decoder-attention option, and the
``.keras`` round trip.

No TensorFlow import; the tests that only build models are ``backend_agnostic`` (re-run under JAX); the
forward passes of the variants and the paper-2 comparison at 16³ run on TensorFlow only (JAX compiles
every first call for long on this suite's CPUs).
"""

from __future__ import annotations

import random

import keras
import numpy as np
import pytest

from brats_keras.layers import AttentionGate, ConvBlock, ResidualBlock, SpatialAttention
from brats_keras.models import create_model
from brats_keras.models.paper2 import unet3d, unet3d_modified
from brats_keras.models.unet import ApplicationEncoder, UNetSpec, doubling_filters, level_rates, unet, unet_body

agnostic = pytest.mark.backend_agnostic
FILTERS = (3, 5, 7)  # not doubling: every level's channels must come from its own entry
SPATIAL = {2: (8, 8), 3: (8, 8, 8)}


def shape_of(model, layer_name):
    return tuple(model.get_layer(layer_name).output.shape[1:])


def names(model):
    return [layer.name for layer in model.layers]


def rand(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


# ----------------------------------------------------------------------------------------------
# The spec validates
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("changes, field", [
    ({"filters": (8,)}, "filters"),                                     # one level: no bridge
    ({"filters": ()}, "filters"),
    ({"filters": (8, 0)}, "filters"),
    ({"filters": 8}, "filters"),
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"block": "dense"}, "block"),
    ({"stem": True}, "stem"),                                           # a stem needs block="residual"
    ({"norm": "layer"}, "norm"),
    ({"norm_momentum": 1.0}, "norm_momentum"),
    ({"activation": "not_an_activation"}, "activation"),
    ({"kernel_initializer": "not_an_initializer"}, "kernel_initializer"),
    ({"dropout": (0.1, 0.2)}, "dropout"),                               # 2 rates for 3 levels
    ({"dropout": (0.1, 0.2, 0.3, 0.4)}, "dropout"),
    ({"dropout": 1.0}, "dropout"),
    ({"bridge_dropout": -0.1}, "bridge_dropout"),
    ({"down": "avgpool"}, "down"),
    ({"down": "strided"}, "down"),                                      # a ConvBlock has no stride
    ({"pool_size": 0}, "pool_size"),
    ({"pool_padding": "full"}, "pool_padding"),
    ({"pool_position": "middle"}, "pool_position"),
    ({"scale": 1}, "scale"),
    ({"up": "bilinear"}, "up"),
    ({"up_padding": "causal"}, "up_padding"),
    ({"skip_gate": "se"}, "skip_gate"),
    ({"level_attention": "channel"}, "level_attention"),
    ({"level_attention": "spatial", "block": "residual", "down": "strided"}, "level_attention"),
    ({"attention_in_decoder": True}, "attention_in_decoder"),           # needs level_attention="spatial"
    ({"attention_in_decoder": 1, "level_attention": "spatial"}, "attention_in_decoder"),
    ({"attention_in_decoder": True, "level_attention": "spatial", "skip_gate": "attention"}, "attention_in_decoder"),
    ({"attention_activation": "relu"}, "attention_activation"),
    ({"attention_kernel_size": 0}, "attention_kernel_size"),
    ({"encoder": "efficientnet"}, "encoder"),
    ({"num_classes": 0}, "num_classes"),
    ({"output_activation": "nope"}, "output_activation"),
])
def test_bad_spec_fields_raise_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"UNetSpec.{field}"):
        UNetSpec(**{"filters": FILTERS, **changes})
    with pytest.raises(ValueError, match=f"UNetSpec.{field}"):  # replace validates again
        UNetSpec(filters=FILTERS).replace(**changes)


@agnostic
def test_spec_normalises_and_keeps_one_dropout_rate_across_depths():
    spec = UNetSpec(filters=[4, 8, 16], norm=None, activation="ReLU", dropout=0.25)
    assert spec.filters == (4, 8, 16) and spec.depth == 2 and spec.norm == "none" and spec.activation == "relu"
    assert spec.dropout == 0.25 and spec.level_dropout == (0.25, 0.25, 0.25)
    deeper = spec.replace(filters=doubling_filters(4, 4))
    assert deeper.depth == 4 and deeper.level_dropout == (0.25,) * 5
    assert UNetSpec(filters=FILTERS, dropout=[0.1, 0, 0.3]).level_dropout == (0.1, 0.0, 0.3)
    assert doubling_filters(24, 4) == (24, 48, 96, 192, 384)
    assert level_rates(0.2, 2) == (0.2, 0.2, 0.2) and level_rates((0.1, 0.2, 0.3), 2) == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="dropout must be one rate or 3 rates"):
        level_rates((0.1, 0.2), 2)


@agnostic
def test_making_a_spec_does_not_advance_pythons_random_stream():
    """Keras' default seeds come from Python's ``random``: a spec check drawing one would shift every
    initial weight of the model built after it."""
    random.seed(3)
    state = random.getstate()
    UNetSpec(filters=FILTERS, kernel_initializer="he_uniform").replace(kernel_initializer="glorot_normal")
    assert random.getstate() == state


@agnostic
@pytest.mark.parametrize("spec_changes, input_shape, argument", [
    ({}, (10, 8, 1), "input_shape"),                  # 10 is not divisible by 2**2
    ({"scale": 3}, (8, 8, 1), "input_shape"),         # nor 8 by 3**2
    ({}, (8, 8), "input_shape"),
    ({"spatial_dims": 3}, (8, 8, 1), "input_shape"),
    ({}, (8, 8, 0), "input_shape"),
])
def test_unet_checks_the_input_shape_against_the_spec(spec_changes, input_shape, argument):
    with pytest.raises(ValueError, match=argument):
        unet(UNetSpec(filters=FILTERS, **spec_changes), input_shape)


@agnostic
def test_unet_rejects_what_is_not_a_spec_or_a_name():
    with pytest.raises(ValueError, match="spec must be a UNetSpec"):
        unet({"filters": FILTERS}, (8, 8, 1))
    with pytest.raises(ValueError, match="name"):
        unet(UNetSpec(filters=FILTERS), (8, 8, 1), name="")
    with pytest.raises(ValueError, match="encoder gave 1 skips"):
        unet(UNetSpec(filters=FILTERS, encoder=lambda x, spec, prefix: ([x], x)), (8, 8, 1))


# ----------------------------------------------------------------------------------------------
# The variants: layer names, per-level shapes and channels, blocks
# ----------------------------------------------------------------------------------------------


def expected_shapes(spec, spatial):
    """Layer → output shape from the spec's arithmetic (stride ``scale`` per level)."""
    def at(level, channels):
        return tuple(n // spec.scale ** level for n in spatial) + (channels,)

    shapes = {f"p_enc{level + 1}": at(level, spec.filters[level]) for level in range(spec.depth)}
    shapes["p_bridge"] = at(spec.depth, spec.filters[-1])
    previous = spec.filters[-1]
    for j in range(1, spec.depth + 1):
        level = spec.depth - j
        up_channels = previous if spec.up == "nearest" else spec.filters[level]
        shapes[f"p_dec{j}_up"] = at(level, up_channels)
        shapes[f"p_dec{j}_concat"] = at(level, up_channels + spec.filters[level])
        shapes[f"p_dec{j}"] = at(level, spec.filters[level])
        previous = spec.filters[level]
    if spec.num_classes:
        shapes["p_head"] = at(0, spec.num_classes)
    return shapes


VARIANTS = {
    "plain_maxpool_transpose": dict(block="plain", norm="none"),
    "residual_stem_strided_nearest": dict(block="residual", stem=True, down="strided", up="nearest"),
    "post_residual_gate_pool3": dict(block="residual_post", skip_gate="attention", pool_size=3,
                                     pool_padding="same", pool_position="level_end", bridge_dropout=0.5),
    "plain_instance_spatial_attention": dict(norm="instance", level_attention="spatial", attention_kernel_size=3,
                                             attention_in_decoder=True, dropout=(0.1, 0.2, 0.3)),
}


@pytest.mark.parametrize("spatial_dims", (pytest.param(2, marks=agnostic), 3))  # 3D under JAX: suite time
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_builds_in_2d_and_3d_with_the_levels_channels(variant, spatial_dims):
    spec = UNetSpec(filters=FILTERS, spatial_dims=spatial_dims, num_classes=2, **VARIANTS[variant])
    spatial = SPATIAL[spatial_dims]
    model = unet(spec, spatial + (1,), name="p")
    for layer, shape in expected_shapes(spec, spatial).items():
        assert shape_of(model, layer) == shape, layer

    blocks = {layer.name: layer for layer in model.layers if isinstance(layer, (ConvBlock, ResidualBlock))}
    assert sorted(blocks) == ["p_bridge", "p_dec1", "p_dec2", "p_enc1", "p_enc2"]
    kind = ConvBlock if spec.block == "plain" else ResidualBlock
    assert all(type(block) is kind and block.spatial_dims == spatial_dims for block in blocks.values())
    assert {block.norm for block in blocks.values()} == {spec.norm}
    if kind is ResidualBlock:
        assert {block.preactivation for block in blocks.values()} == {spec.block == "residual"}
        assert [name for name, block in blocks.items() if block.stem] == (["p_enc1"] if spec.stem else [])
        strides = {name: block.strides[0] for name, block in blocks.items()}
        assert strides == {"p_enc1": 1, "p_enc2": 2 if spec.down == "strided" else 1,
                           "p_bridge": 2 if spec.down == "strided" else 1, "p_dec1": 1, "p_dec2": 1}
    else:  # the level's rate between the convolutions; decoders use the rate at their resolution
        rates = spec.level_dropout
        assert [blocks[n].dropout for n in ("p_enc1", "p_enc2", "p_bridge", "p_dec1", "p_dec2")] == [
            rates[0], rates[1], rates[2], rates[1], rates[0]]


@pytest.mark.parametrize("spatial_dims", (2, 3))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_runs_to_class_probabilities(variant, spatial_dims):
    """A forward pass (TensorFlow only: JAX's first calls compile for long; the layers' own tests run there)."""
    spatial = SPATIAL[spatial_dims]
    model = unet(UNetSpec(filters=FILTERS, spatial_dims=spatial_dims, num_classes=2, **VARIANTS[variant]),
                 spatial + (1,), name="p")
    y = keras.ops.convert_to_numpy(model(rand((2,) + spatial + (1,)), training=False))
    assert y.shape == (2,) + spatial + (2,)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)  # softmax head
    assert np.abs(y[0] - y[1]).max() > 1e-4  # two different inputs, two different outputs


@agnostic
def test_layer_names_follow_the_scheme():
    """``model.layers`` is the functional graph's order (a gate is created before its level's
    up-sampling, which draws its weights first, but listed after it)."""
    spec = UNetSpec(filters=FILTERS, norm="none", num_classes=2)
    assert names(unet(spec, (8, 8, 1), name="p")) == [
        "p_input", "p_enc1", "p_enc2_pool", "p_enc2", "p_bridge_pool", "p_bridge",
        "p_dec1_up", "p_dec1_concat", "p_dec1", "p_dec2_up", "p_dec2_concat", "p_dec2", "p_head"]
    gated = spec.replace(pool_position="level_end", skip_gate="attention", bridge_dropout=0.5)
    assert names(unet(gated, (8, 8, 1), name="p")) == [
        "p_input", "p_enc1", "p_enc1_pool", "p_enc2", "p_enc2_pool", "p_bridge", "p_bridge_dropout",
        "p_dec1_up", "p_dec1_attention", "p_dec1_concat", "p_dec1",
        "p_dec2_up", "p_dec2_attention", "p_dec2_concat", "p_dec2", "p_head"]
    attention = spec.replace(level_attention="spatial", attention_in_decoder=True)
    assert names(unet(attention, (8, 8, 1), name="p")) == [
        "p_input", "p_enc1", "p_enc2_pool", "p_enc2_attention", "p_enc2", "p_bridge_pool", "p_bridge_attention",
        "p_bridge", "p_dec1_up", "p_dec1_attention", "p_dec1_concat", "p_dec1",
        "p_dec2_up", "p_dec2_attention", "p_dec2_concat", "p_dec2", "p_head"]


@agnostic
def test_options_reach_their_layers():
    spec = UNetSpec(filters=FILTERS, block="residual_post", skip_gate="attention", pool_size=3, pool_padding="same",
                    pool_position="level_end", up_padding="same", kernel_initializer="he_uniform", activation="elu",
                    norm_momentum=0.9, num_classes=1, output_activation="sigmoid")
    model = unet(spec, (8, 8, 1), name="p")
    pool = model.get_layer("p_enc1_pool").get_config()
    assert tuple(pool["pool_size"]) == (3, 3) and tuple(pool["strides"]) == (2, 2) and pool["padding"] == "same"
    up = model.get_layer("p_dec1_up")
    assert isinstance(up, keras.layers.Conv2DTranspose) and up.get_config()["padding"] == "same"
    assert tuple(up.kernel_size) == (2, 2) and tuple(up.strides) == (2, 2)
    gates = [layer for layer in model.layers if isinstance(layer, AttentionGate)]
    assert [(g.name, g.inter_filters) for g in gates] == [("p_dec1_attention", 2), ("p_dec2_attention", 1)]
    block = model.get_layer("p_enc2")
    assert (block.activation, block.norm_momentum, block.kernel_initializer) == ("elu", 0.9, "he_uniform")
    head = model.get_layer("p_head").get_config()
    assert head["filters"] == 1 and head["activation"] == "sigmoid"
    assert head["kernel_initializer"]["class_name"] == "GlorotUniform"  # the head keeps Keras' default


@agnostic
def test_without_num_classes_the_body_ends_with_the_last_decoder_block():
    model = unet(UNetSpec(filters=FILTERS, up="transpose"), (8, 8, 1), name="p")
    assert names(model)[-1] == "p_dec2" and model.output_shape == (None, 8, 8, FILTERS[0])


@agnostic
def test_two_bodies_chain_inside_one_model_as_the_cascade():
    inputs = keras.Input((8, 8, 2), name="c_input")
    x = unet_body(inputs, UNetSpec(filters=FILTERS, norm="none"), prefix="c_a")
    outputs = unet_body(x, UNetSpec(filters=(2, 4), block="residual", stem=True, down="strided", up="nearest",
                                    num_classes=3), prefix="c_b")
    model = keras.Model(inputs, outputs)
    layer_names = names(model)
    assert len(set(layer_names)) == len(layer_names)
    assert "c_a_head" not in layer_names and layer_names[-1] == "c_b_head"
    assert shape_of(model, "c_a_dec2") == (8, 8, 3) and shape_of(model, "c_b_bridge") == (4, 4, 4)
    assert model.output_shape == (None, 8, 8, 3)


# ----------------------------------------------------------------------------------------------
# A pluggable encoder
# ----------------------------------------------------------------------------------------------


def tiny_application(include_top, weights, input_shape):
    """A stand-in for a ``keras.applications`` constructor: feature maps at strides 2, 4 and 8."""
    assert include_top is False and weights is None and input_shape[-1] == 3
    inputs = keras.Input(input_shape)
    x = inputs
    for i, channels in enumerate((6, 10, 12), start=1):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name=f"s{i}")(x)
        x = keras.layers.BatchNormalization(name=f"s{i}_bn")(x)
    return keras.Model(inputs, x)


def test_an_application_encoder_replaces_the_encoder_and_levels_without_skip_get_none():
    encoder = ApplicationEncoder(tiny_application, skip_layers=(None, "s1_bn", "s2_bn"), bottom_layer="s3_bn")
    spec = UNetSpec(filters=(4, 8, 16, 32), skip_gate="attention", bridge_dropout=0.5, norm_momentum=0.9,
                    encoder=encoder, num_classes=2)
    model = unet(spec, (16, 16, 1), name="p")
    layer_names = names(model)
    assert layer_names[:4] == ["p_input", "p_to_rgb", "p_to_255", "p_encoder"]
    nested = model.get_layer("p_encoder")
    assert [tuple(o.shape[1:]) for o in nested.outputs] == [(8, 8, 6), (4, 4, 10), (2, 2, 12)]
    assert {layer.momentum for layer in nested.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    # decoders 1 and 2 take the skips at strides 4 and 2 through gates; decoder 3 (full resolution) has none
    assert {"p_dec1_attention", "p_dec1_concat", "p_dec2_attention", "p_dec2_concat"} <= set(layer_names)
    assert "p_dec3_attention" not in layer_names and "p_dec3_concat" not in layer_names
    assert [shape_of(model, f"p_dec{j}") for j in (1, 2, 3)] == [(4, 4, 16), (8, 8, 8), (16, 16, 4)]
    assert model.output_shape == (None, 16, 16, 2)
    assert model.get_layer("p_to_255").scale == 255.0
    with pytest.raises(ValueError, match="skip_layers has 3 levels"):
        unet(spec.replace(filters=(4, 8, 16)), (16, 16, 1))
    with pytest.raises(ValueError, match="ApplicationEncoder.weights"):
        ApplicationEncoder(tiny_application, (None,), "s1", weights="auto")


# ----------------------------------------------------------------------------------------------
# Paper 2: spatial attention in the decoder too (new option; off by default)
# ----------------------------------------------------------------------------------------------


P2 = dict(input_shape=(16, 16, 16, 3), filters=2)


def _copy_shared_weights(source, target):
    for layer in source.layers:
        target.get_layer(layer.name).set_weights(layer.get_weights())


def test_paper2_decoder_attention_adds_four_spatial_attentions_and_changes_the_output():
    keras.utils.set_random_seed(5)
    default = create_model("unet3d_spatial_attention", **P2)
    keras.utils.set_random_seed(5)
    explicit_off = create_model("unet3d_spatial_attention", attention_in_decoder=False, **P2)
    both = create_model("unet3d_spatial_attention", attention_in_decoder=True, **P2)
    prefix = "unet3d_spatial_attention"

    def attention_names(model):
        return [layer.name for layer in model.layers if isinstance(layer, SpatialAttention)]

    encoder_attention = [f"{prefix}_{level}_attention" for level in ("enc2", "enc3", "enc4", "bridge")]
    decoder_attention = [f"{prefix}_dec{j}_attention" for j in (1, 2, 3, 4)]
    assert attention_names(default) == encoder_attention  # the default is today's network
    assert attention_names(both) == encoder_attention + decoder_attention
    layer_names = names(both)
    for j in (1, 2, 3, 4):  # right after the up-sampling, before the concatenation
        up = layer_names.index(f"{prefix}_dec{j}_up")
        assert layer_names[up + 1: up + 3] == [f"{prefix}_dec{j}_attention", f"{prefix}_dec{j}_concat"]
    assert both.count_params() - default.count_params() == 4 * (7 ** 3 * 2 + 1)
    # off = default, to the weight
    assert names(explicit_off) == names(default)
    for a, b in zip(default.weights, explicit_off.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    x = rand((1, 16, 16, 16, 3), seed=3)
    _copy_shared_weights(default, both)
    y_default = keras.ops.convert_to_numpy(default(x, training=False))
    y_both = keras.ops.convert_to_numpy(both(x, training=False))
    assert np.abs(y_both - y_default).max() > 1e-3  # the sigmoid gates change the decoder
    # ... and they are the only change: with the paper's softmax (the identity) the outputs agree
    literal = create_model("unet3d_spatial_attention", attention_in_decoder=True, attention_activation="softmax", **P2)
    _copy_shared_weights(default, literal)
    default_literal = create_model("unet3d_spatial_attention", attention_activation="softmax", **P2)
    _copy_shared_weights(default, default_literal)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(literal(x, training=False)),
                               keras.ops.convert_to_numpy(default_literal(x, training=False)), atol=1e-6)


@agnostic
def test_paper2_decoder_attention_needs_the_spatial_attention():
    with pytest.raises(ValueError, match="attention_in_decoder=True needs attention='spatial'"):
        unet3d(attention_in_decoder=True, **P2)
    # the registered variants without attention have no such setting (registry: their settings are unet3d's
    # arguments minus those they fix or that mean nothing for them); called directly, unet3d refuses it
    with pytest.raises(ValueError, match="model 'unet3d_modified' does not accept 'attention_in_decoder'"):
        create_model("unet3d_modified", attention_in_decoder=True, **P2)
    with pytest.raises(ValueError, match="attention_in_decoder=True needs attention='spatial'"):
        unet3d_modified(attention_in_decoder=True, **P2)
    with pytest.raises(ValueError, match="attention_in_decoder"):
        create_model("unet3d_spatial_attention", attention_in_decoder="yes", **P2)


# ----------------------------------------------------------------------------------------------
# Serialisation
# ----------------------------------------------------------------------------------------------


@agnostic
def test_a_spec_model_round_trips_through_a_keras_file(tmp_path):
    spec = UNetSpec(filters=FILTERS, block="residual_post", skip_gate="attention", bridge_dropout=0.5,
                    pool_position="level_end", num_classes=2)
    model = unet(spec, (8, 8, 2), name="p")
    path = tmp_path / "p.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # every layer is registered: no custom_objects
    assert names(reloaded) == names(model) and reloaded.count_params() == model.count_params()
    x = rand((2, 8, 8, 2), seed=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-6)
