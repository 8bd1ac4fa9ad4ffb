"""Tests of brats_keras.layers: shapes, shortcuts, the attention gates, serialisation, gradients.

Backend-agnostic (keras.ops and numpy only, no TensorFlow import): the whole module also runs with
``KERAS_BACKEND=jax``. Shapes are tiny: 16 × 16 slices and 8³ volumes.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import ops
from scipy import ndimage

from brats_keras.layers import AttentionGate, ConvBlock, ResidualBlock, SpatialAttention, upsample

pytestmark = pytest.mark.backend_agnostic

SPATIAL = {2: (16, 16), 3: (8, 8, 8)}
C, F = 4, 8  # input channels and filters: few distinct kernel shapes keep JAX's per-shape compiles few


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def conv_kernels(layer):
    """Convolution kernels of a layer (rank spatial_dims + 2 weights)."""
    return [w for w in layer.weights if w.path.endswith("kernel") and len(w.shape) == layer.spatial_dims + 2]


def set_weights_random(layer, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    for w in layer.trainable_weights:
        w.assign(scale * rng.normal(size=w.shape).astype("float32"))


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sd", [2, 3])
def test_conv_block_shapes_and_units(sd):
    s = SPATIAL[sd]
    block = ConvBlock(F, spatial_dims=sd, norm="instance", activation="leaky_relu", dropout=0.2, repeats=3)
    y = block(rand(2, *s, C))
    assert tuple(y.shape) == (2, *s, F)
    assert len(conv_kernels(block)) == 3
    assert [tuple(k.shape) for k in conv_kernels(block)] == [(3,) * sd + (C, F)] + [(3,) * sd + (F, F)] * 2
    # dropout sits between the units only: repeats - 1 Dropout layers
    assert sum(d is not None for d in block.drops) == 2 and block.drops[-1] is None
    # symbolic call with unknown spatial sizes agrees with compute_output_shape
    sym = block(keras.Input((None,) * sd + (C,)))
    assert tuple(sym.shape) == (None,) * (sd + 1) + (F,)


@pytest.mark.parametrize("sd", [2, 3])
def test_conv_block_leaky_relu_keeps_negative_values(sd):
    x = rand(2, *SPATIAL[sd], C, seed=1)
    relu = ConvBlock(F, spatial_dims=sd, norm="none", activation="relu", repeats=1)
    leaky = ConvBlock(F, spatial_dims=sd, norm="none", activation="leaky_relu", repeats=1)
    relu.build(x.shape)
    leaky.build(x.shape)
    for a, b in zip(relu.weights, leaky.weights):
        b.assign(a)
    pre = ops.convert_to_numpy(relu.convs[0](x))
    np.testing.assert_allclose(ops.convert_to_numpy(relu(x)), np.maximum(pre, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(leaky(x)), np.where(pre > 0, pre, 0.2 * pre),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("strides", [1, 2])
def test_residual_block_shapes(sd, strides):
    s = SPATIAL[sd]
    block = ResidualBlock(F, spatial_dims=sd, strides=strides)
    y = block(rand(2, *s, C))
    assert tuple(y.shape) == (2, *(n // strides for n in s), F)
    # the first convolution carries the stride; the second does not
    assert block.conv1.strides == (strides,) * sd and block.conv2.strides == (1,) * sd


def test_residual_block_anisotropic_stride():
    block = ResidualBlock(F, spatial_dims=3, strides=(2, 2, 1))
    assert tuple(block(rand(2, 8, 8, 8, C)).shape) == (2, 4, 4, 8, F)
    assert block.shortcut_conv.strides == (2, 2, 1)


# ----------------------------------------------------------------------------------------------
# Residual shortcuts
# ----------------------------------------------------------------------------------------------


def _zero_second_conv(block):
    block.conv2.kernel.assign(np.zeros(block.conv2.kernel.shape, "float32"))
    block.conv2.bias.assign(np.zeros(block.conv2.bias.shape, "float32"))


@pytest.mark.parametrize("sd", [2, 3])
def test_identity_shortcut_adds_the_input(sd):
    x = rand(2, *SPATIAL[sd], F, seed=2)
    block = ResidualBlock(F, spatial_dims=sd)
    block.build(x.shape)
    assert block.shortcut_conv is None and len(conv_kernels(block)) == 2
    _zero_second_conv(block)  # residual branch now outputs 0, so y must be x itself
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), x, atol=1e-6)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("case", ["channels", "stride", "forced"])
def test_projection_shortcut(sd, case):
    in_channels, strides, shortcut = {"channels": (C, 1, "auto"), "stride": (F, 2, "auto"),
                                      "forced": (F, 1, "projection")}[case]
    x = rand(2, *SPATIAL[sd], in_channels, seed=3)
    filters = F
    block = ResidualBlock(filters, spatial_dims=sd, strides=strides, shortcut=shortcut)
    block.build(x.shape)
    kernels = conv_kernels(block)
    assert len(kernels) == 3
    assert tuple(block.shortcut_conv.kernel.shape) == (1,) * sd + (in_channels, filters)
    assert block.shortcut_conv.strides == (strides,) * sd
    # with the residual branch zeroed the output is exactly the projection of x
    _zero_second_conv(block)
    expected = block.shortcut_norm(block.shortcut_conv(x), training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), ops.convert_to_numpy(expected), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, n_norms",
    [(dict(), 2), (dict(stem=True), 1), (dict(preactivation=False), 2), (dict(norm="none"), 0)],
)
def test_residual_block_norm_layout(kwargs, n_norms):
    block = ResidualBlock(F, spatial_dims=2, **kwargs)
    block.build((2, 16, 16, F))
    gammas = [w for w in block.weights if w.path.endswith("gamma")]
    assert len(gammas) == n_norms


def test_post_activation_block_applies_activation_after_the_sum():
    x = rand(2, 16, 16, F, seed=4)
    block = ResidualBlock(F, spatial_dims=2, preactivation=False)
    block.build(x.shape)
    _zero_second_conv(block)  # norm2(0) = beta = 0 in inference, so y = relu(0 + x)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x, training=False)), np.maximum(x, 0), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Attention gate
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("factor", [2, 1])
def test_attention_gate_shapes(sd, factor):
    s = SPATIAL[sd]
    x, g = rand(2, *s, C), rand(2, *(n // factor for n in s), F, seed=1)
    gate = AttentionGate(C, spatial_dims=sd)
    y = gate([x, g])
    assert tuple(y.shape) == x.shape
    assert gate.factor == (factor,) * sd
    assert tuple(gate.theta_x.kernel.shape) == (factor,) * sd + (C, C)
    assert gate.theta_x.strides == (factor,) * sd and not gate.theta_x.use_bias
    alpha = ops.convert_to_numpy(gate.attention_map([x, g]))
    assert alpha.shape == (2, *s, 1)
    assert np.all(alpha > 0) and np.all(alpha < 1)
    np.testing.assert_allclose(ops.convert_to_numpy(y), x * alpha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sd", [2, 3])
def test_attention_gate_depends_on_the_gating_signal(sd):
    s = SPATIAL[sd]
    x = rand(2, *s, C)
    coarse = tuple(n // 2 for n in s)
    gate = AttentionGate(C, spatial_dims=sd)
    y1 = ops.convert_to_numpy(gate([x, rand(2, *coarse, F, seed=5)]))
    y2 = ops.convert_to_numpy(gate([x, rand(2, *coarse, F, seed=6)]))
    assert np.abs(y1 - y2).max() > 1e-3


def test_attention_gate_with_constant_gate_scales_x():
    x, g = rand(2, 16, 16, C), rand(2, 8, 8, F, seed=1)
    gate = AttentionGate(C, spatial_dims=2)
    gate([x, g])
    gate.psi.kernel.assign(np.zeros(gate.psi.kernel.shape, "float32"))
    gate.psi.bias.assign(np.full(gate.psi.bias.shape, 0.7, "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(gate([x, g])), x / (1 + np.exp(-0.7)), rtol=1e-5)


def test_attention_gate_output_projection_and_unknown_sizes():
    gate = AttentionGate(C, spatial_dims=3, subsample=2, output_projection=True)
    x, g = keras.Input((None, None, None, C)), keras.Input((None, None, None, F))
    model = keras.Model([x, g], gate([x, g]))
    y = model.predict([rand(2, 8, 8, 8, C), rand(2, 4, 4, 4, F)], verbose=0)
    assert y.shape == (2, 8, 8, 8, C)
    assert len(conv_kernels(gate)) == 4  # theta_x, phi_g, psi, out_conv


@pytest.mark.parametrize(
    "kwargs, x_shape, g_shape, match",
    [
        (dict(), (1, 16, 16, 4), (1, 6, 6, 4), "integer multiple"),
        (dict(subsample=2), (1, 16, 16, 4), (1, 16, 16, 4), "subsample"),
        (dict(), (1, None, None, 4), (1, None, None, 4), "subsample"),
        (dict(spatial_dims=3), (1, 16, 16, 4), (1, 8, 8, 4), "rank 5"),
    ],
)
def test_attention_gate_rejects_mismatched_inputs(kwargs, x_shape, g_shape, match):
    gate = AttentionGate(2, **{"spatial_dims": 2, **kwargs})
    with pytest.raises(ValueError, match=match):
        gate.build([x_shape, g_shape])


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_upsample_2d_matches_keras_resize(interpolation):
    x = rand(2, 5, 7, 3)
    ours = ops.convert_to_numpy(upsample(x, 2, 2, interpolation))
    ref = ops.convert_to_numpy(
        ops.image.resize(x, (10, 14), interpolation="bilinear" if interpolation == "linear" else "nearest"))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3, (2, 1, 3)])
def test_upsample_3d_linear_matches_scipy(factor):
    x = rand(1, 4, 3, 5, 2)
    f = (factor,) * 3 if isinstance(factor, int) else factor
    ours = ops.convert_to_numpy(upsample(x, factor, 3, "linear"))
    # half-pixel-centre linear interpolation with edge clamp = scipy zoom(order=1, grid_mode=True, mode="nearest")
    ref = ndimage.zoom(x, (1, *f, 1), order=1, grid_mode=True, mode="nearest")
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    nearest = ops.convert_to_numpy(upsample(x, factor, 3, "nearest"))
    np.testing.assert_array_equal(nearest, x.repeat(f[0], 1).repeat(f[1], 2).repeat(f[2], 3))


# ----------------------------------------------------------------------------------------------
# Spatial attention (paper 2) and its softmax audit
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")  # Keras agrees
def test_literal_softmax_spatial_attention_is_the_identity(sd, seed):
    """Paper 2 audit: softmax over the single-channel attention map is identically 1."""
    x = 5.0 * rand(2, *SPATIAL[sd], F, seed=seed)
    softmax = SpatialAttention(spatial_dims=sd, kernel_size=3, activation="softmax")
    softmax.build(x.shape)
    set_weights_random(softmax, seed=100 + seed)
    np.testing.assert_allclose(ops.convert_to_numpy(softmax(x)), x, rtol=1e-6, atol=1e-6)

    sigmoid = SpatialAttention(spatial_dims=sd, kernel_size=3, activation="sigmoid")
    sigmoid.build(x.shape)
    for a, b in zip(softmax.weights, sigmoid.weights):
        b.assign(a)
    # same weights, sigmoid gate: the output differs from the input by a large margin
    assert np.abs(ops.convert_to_numpy(sigmoid(x)) - x).max() > 0.5


@pytest.mark.parametrize("sd", [2, 3])
def test_sigmoid_spatial_attention_matches_numpy(sd):
    """With a 1-voxel kernel the module is pointwise: y = x · σ(w₀·mean_c(x) + w₁·max_c(x) + b)."""
    x = rand(2, *SPATIAL[sd], F, seed=7)
    layer = SpatialAttention(spatial_dims=sd, kernel_size=1)
    layer.build(x.shape)
    layer.conv.kernel.assign(np.array([0.8, -1.3], "float32").reshape((1,) * sd + (2, 1)))
    layer.conv.bias.assign(np.array([0.25], "float32"))
    logits = 0.8 * x.mean(-1, keepdims=True) - 1.3 * x.max(-1, keepdims=True) + 0.25
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ConvBlock(4, spatial_dims=4), "spatial_dims"),
        (lambda: ConvBlock(4, spatial_dims=1), "spatial_dims"),
        (lambda: ConvBlock(0), "filters"),
        (lambda: ConvBlock(2.5), "filters"),
        (lambda: ConvBlock(4, norm="group"), "norm"),
        (lambda: ConvBlock(4, activation="relu7"), "activation"),
        (lambda: ConvBlock(4, activation=print), "activation"),
        (lambda: ConvBlock(4, dropout=1.0), "dropout"),
        (lambda: ConvBlock(4, dropout=0.1, repeats=1), "dropout"),
        (lambda: ConvBlock(4, repeats=0), "repeats"),
        (lambda: ConvBlock(4, spatial_dims=3, kernel_size=(3, 3)), "kernel_size"),
        (lambda: ConvBlock(4, kernel_initializer="no_such_init"), "kernel_initializer"),
        (lambda: ResidualBlock(0), "filters"),
        (lambda: ResidualBlock(4, spatial_dims=4), "spatial_dims"),
        (lambda: ResidualBlock(4, strides=0), "strides"),
        (lambda: ResidualBlock(4, norm="layer"), "norm"),
        (lambda: ResidualBlock(4, activation="nope"), "activation"),
        (lambda: ResidualBlock(4, shortcut="identity"), "shortcut"),
        (lambda: ResidualBlock(4, preactivation=False, stem=True), "stem"),
        (lambda: AttentionGate(0), "inter_filters"),
        (lambda: AttentionGate(4, spatial_dims=4), "spatial_dims"),
        (lambda: AttentionGate(4, interpolation="cubic"), "interpolation"),
        (lambda: AttentionGate(4, norm="weird"), "norm"),
        (lambda: AttentionGate(4, subsample=0), "subsample"),
        (lambda: SpatialAttention(spatial_dims=4), "spatial_dims"),
        (lambda: SpatialAttention(activation="relu"), "activation"),
        (lambda: SpatialAttention(kernel_size=-1), "kernel_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_rank_is_reported():
    with pytest.raises(ValueError, match="rank 5"):
        ConvBlock(4, spatial_dims=3)(rand(1, 16, 16, 2))


# ----------------------------------------------------------------------------------------------
# Serialisation and training
# ----------------------------------------------------------------------------------------------

CONFIGURED = [
    ConvBlock(7, spatial_dims=3, kernel_size=(3, 3, 1), norm="instance", activation="leaky_relu", dropout=0.3,
              repeats=3, use_bias=False, kernel_initializer="he_normal", name="cb"),
    ResidualBlock(5, spatial_dims=2, kernel_size=5, strides=(2, 1), norm="none", activation="elu",
                  preactivation=True, stem=True, shortcut="projection", dropout=0.1, name="rb"),
    AttentionGate(3, spatial_dims=3, subsample=(2, 2, 1), interpolation="nearest", output_projection=True,
                  norm="instance", use_bias=False, name="ag"),
    SpatialAttention(spatial_dims=2, kernel_size=5, activation="softmax", use_bias=False, name="sa"),
]


@pytest.mark.parametrize("layer", CONFIGURED, ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    json.dumps(config)  # plain JSON
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def tiny_model(sd, use_bias=True, output_projection=True):
    """Every layer of the package in one small segmentation-shaped model."""
    inputs = keras.Input(SPATIAL[sd] + (C,))
    c = ConvBlock(F, spatial_dims=sd, dropout=0.1, use_bias=use_bias, name="conv_block")(inputs)
    r = ResidualBlock(F, spatial_dims=sd, strides=2, use_bias=use_bias, name="res_down")(c)
    r = ResidualBlock(F, spatial_dims=sd, use_bias=use_bias, name="res_identity")(r)
    a = AttentionGate(C, spatial_dims=sd, output_projection=output_projection, name="gate")([c, r])
    s = SpatialAttention(spatial_dims=sd, kernel_size=3, name="spatial_attention")(a)
    h = ConvBlock(F, spatial_dims=sd, norm="instance", activation="leaky_relu", repeats=1, use_bias=use_bias,
                  name="head_block")(s)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax") if sd == 2 else keras.layers.Conv3D(
        3, 1, activation="softmax")
    return keras.Model(inputs, outputs(h), name=f"tiny{sd}d")


@pytest.mark.parametrize("sd", [2, 3])
def test_saved_model_reloads_without_custom_objects(sd, tmp_path):
    model = tiny_model(sd)
    x = rand(2, *SPATIAL[sd], C, seed=9)
    before = model.predict(x, verbose=0)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the layers are registered
    for name, cls in [("conv_block", ConvBlock), ("res_down", ResidualBlock), ("gate", AttentionGate),
                      ("spatial_attention", SpatialAttention)]:
        assert type(loaded.get_layer(name)) is cls
    assert loaded.get_layer("res_down").shortcut_conv is not None
    assert loaded.get_layer("res_identity").shortcut_conv is None
    assert len(loaded.weights) == len(model.weights)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sd", [2, 3])
def test_one_training_step_updates_every_weight(sd):
    """Gradients reach every trainable variable of every layer.

    Convolutions followed by batch or instance normalisation are built without bias here: such a
    bias is cancelled by the normalisation, so its gradient is zero by construction.
    """
    keras.utils.set_random_seed(0)
    model = tiny_model(sd, use_bias=False, output_projection=False)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    x = rand(2, *SPATIAL[sd], C, seed=10)
    y = keras.utils.to_categorical(np.random.default_rng(11).integers(0, 3, size=(2, *SPATIAL[sd])), 3)
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [v.path for v in model.trainable_variables
                 if np.array_equal(ops.convert_to_numpy(v), before[v.path])]
    assert unchanged == []
    assert len(before) >= 20  # the check covered the layers' weights, not just the head
