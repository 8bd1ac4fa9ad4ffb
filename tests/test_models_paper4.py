"""Paper 4's models (``brats_keras.models.paper4``) at 64²: Table 3's baselines, the EfficientNet
attention U-Net, the LSTM + EfficientNet model; their structure (Table 1), registry entries,
serialisation and the offline handling of the ImageNet weights."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from brats_keras.errors import BratsKerasError
from brats_keras.layers import AttentionGate, ConvBlock, LSTMEnhancer, ResidualBlock
from brats_keras.models import create_model, list_models
from brats_keras.models import paper4
from brats_keras.models.paper4 import (
    EFFICIENTNET_SKIPS, enhancer_of, resolve_encoder_weights,
)

SIZE = 64
BASELINES = ("unet2d_binary", "attention_unet2d", "res_attention_unet2d")
ALL = BASELINES + ("efficientnet_attention_unet", "lstm_effunet")


@pytest.fixture
def no_imagenet(monkeypatch, tmp_path):
    """A Keras home without the EfficientNet weights file (the situation on this machine)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def _build(name, **overrides):
    options = {"input_shape": (SIZE, SIZE, 1), **overrides}
    if name in ("efficientnet_attention_unet", "lstm_effunet"):
        options.setdefault("weights", None)
    return create_model(name, **options)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, SIZE, SIZE, 1)).astype("float32")


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name", ALL)
def test_every_model_maps_a_slice_to_two_class_probabilities_at_64(name):
    assert name in list_models()
    model = _build(name, enhancer_units=4) if name == "lstm_effunet" else _build(name)
    y = keras.ops.convert_to_numpy(model(_images(), training=False))
    assert y.shape == (2, SIZE, SIZE, 2)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_follow_table1(name):
    model = _build(name)
    layers = {layer.name: layer for layer in model.layers}
    # 4 encoding levels, a bridge, 4 decoding levels
    assert {f"{name}_enc{i}" for i in range(1, 5)} <= set(layers) and f"{name}_enc5" not in layers
    assert {f"{name}_dec{j}" for j in range(1, 5)} <= set(layers) and f"{name}_bridge" in layers
    # max-pool kernel 3, stride 2; 24 filters in the first layer; Leaky-ReLU; dropout 0.5
    pool = layers[f"{name}_enc1_pool"]
    assert pool.pool_size == (3, 3) and pool.strides == (2, 2)
    assert layers[f"{name}_enc1"].filters == 24 and layers[f"{name}_bridge"].filters == 24 * 16
    assert layers[f"{name}_enc1"].activation == "leaky_relu"
    assert layers[f"{name}_bridge_dropout"].rate == 0.5
    gates = [layer for layer in model.layers if isinstance(layer, AttentionGate)]
    assert len(gates) == (0 if name == "unet2d_binary" else 4)
    block = ResidualBlock if name.startswith("res_") else ConvBlock
    assert all(isinstance(layers[f"{name}_enc{i}"], block) for i in range(1, 5))
    assert tuple(layers[f"{name}_bridge"].output.shape) == (None, SIZE // 16, SIZE // 16, 24 * 16)


def test_the_three_baselines_differ_only_by_attention_and_residual_blocks():
    counts = {name: _build(name).count_params() for name in BASELINES}
    assert counts["unet2d_binary"] < counts["attention_unet2d"] < counts["res_attention_unet2d"]


def test_efficientnet_unet_uses_efficientnetb0_features_and_attention_gated_skips():
    model = _build("efficientnet_attention_unet")
    encoder = model.get_layer("efficientnet_attention_unet_encoder")
    assert isinstance(encoder, keras.Model)
    assert [tuple(o.shape[1:3]) for o in encoder.outputs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert {layer.name for layer in encoder.layers} >= set(EFFICIENTNET_SKIPS) | {"top_activation"}
    gates = [layer for layer in model.layers if isinstance(layer, AttentionGate)]
    assert len(gates) == 4
    # decoder widths from the paper's 24 filters: 24·(16, 8, 4, 2), then 24 at full resolution
    widths = [model.get_layer(f"efficientnet_attention_unet_dec{j}").filters for j in range(1, 6)]
    assert widths == [384, 192, 96, 48, 24]
    assert model.get_layer("efficientnet_attention_unet_bridge_dropout").rate == 0.5


def test_block_summary_lists_the_encoder_outputs_and_the_decoder_levels():
    from brats_keras.models.common import block_summary

    model = _build("efficientnet_attention_unet")
    table = block_summary(model)
    assert "| `efficientnet_attention_unet_encoder` | Functional | 32×32×96, 16×16×144, 8×8×240, 4×4×672, 2×2×1280 |" in table
    assert f"**{model.count_params():,}**" in table and table.count("_dec") == 5


def test_missing_imagenet_weights_give_a_random_encoder_with_a_warning(no_imagenet):
    with pytest.warns(UserWarning, match="random initialisation"):
        assert resolve_encoder_weights("auto") is None
    with pytest.raises(BratsKerasError, match="cannot download"):
        resolve_encoder_weights("imagenet")
    with pytest.raises(BratsKerasError, match="efficientnetb0_notop.h5"):
        create_model("efficientnet_attention_unet", input_shape=(SIZE, SIZE, 1), weights="imagenet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_encoder_weights(None) is None  # asked for random: no warning
    with pytest.raises(ValueError, match="weights"):
        resolve_encoder_weights("random")


def test_local_imagenet_weights_are_used_when_present(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientnetb0_notop.h5").write_bytes(b"placeholder")
    assert paper4.efficientnet_weights_file() == tmp_path / "models" / "efficientnetb0_notop.h5"
    assert resolve_encoder_weights("auto") == "imagenet"
    assert resolve_encoder_weights("imagenet") == "imagenet"


def test_lstm_effunet_starts_as_the_effunet_behind_an_identity_enhancer():
    keras.utils.set_random_seed(1)
    model = _build("lstm_effunet", enhancer_units=4)
    assert isinstance(model.get_layer("lstm_effunet_enhancer"), LSTMEnhancer)
    x = _images(seed=3)
    enhanced = keras.ops.convert_to_numpy(enhancer_of(model)(x))
    np.testing.assert_array_equal(enhanced, x)  # zero-initialised residual projection


def test_under_one_seed_lstm_effunet_starts_as_exactly_the_effunet():
    """The ablation's two models: same seed → same initial network behind the (identity) enhancer."""
    keras.utils.set_random_seed(7)
    plain = _build("efficientnet_attention_unet")
    keras.utils.set_random_seed(7)
    combined = _build("lstm_effunet", enhancer_units=4)
    body = [w for layer in combined.layers if not isinstance(layer, LSTMEnhancer) for w in layer.get_weights()]
    reference = plain.get_weights()
    assert len(body) == len(reference) > 100
    for a, b in zip(body, reference):
        np.testing.assert_array_equal(a, b)
    x = _images(seed=6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(combined(x, training=False)),
                               keras.ops.convert_to_numpy(plain(x, training=False)), atol=1e-6)


def test_pretrained_enhancer_weights_copy_into_the_combined_model():
    enhancer = create_model("lstm_enhancer", input_shape=(SIZE, SIZE, 1), units=4)
    layer = next(layer for layer in enhancer.layers if isinstance(layer, LSTMEnhancer))
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(scale=0.1, size=w.shape).astype("float32") for w in layer.get_weights()])
    model = _build("lstm_effunet", enhancer_units=4)
    model.get_layer("lstm_effunet_enhancer").set_weights(layer.get_weights())
    x = _images(seed=4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(enhancer_of(model)(x)),
                               keras.ops.convert_to_numpy(enhancer(x)), atol=1e-6)


@pytest.mark.parametrize("name", ["attention_unet2d", "lstm_effunet"])
def test_keras_file_reloads_with_identical_outputs(name, tmp_path):
    model = _build(name, enhancer_units=4) if name == "lstm_effunet" else _build(name)
    x = _images(seed=5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    import brats_keras.models  # noqa: F401  (registers the custom layers)

    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    ({"input_shape": (48, 48, 1)}, "divisible by 2\\*\\*depth = 32"),
    ({"input_shape": (64, 64, 2)}, "1 \\(grey, repeated\\) or 3 channels"),
    ({"dropout": 1.0}, "dropout"),
    ({"weights": "random"}, "weights"),
])
def test_bad_arguments_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        create_model("efficientnet_attention_unet", **{"input_shape": (SIZE, SIZE, 1), "weights": None, **bad})


def test_paper_configuration_builds_at_256():
    model = create_model("unet2d_binary")
    assert model.input_shape == (None, 256, 256, 1) and model.output_shape == (None, 256, 256, 2)
    assert model.get_layer("unet2d_binary_bridge").output.shape[1:] == (16, 16, 384)


@pytest.mark.parametrize("name", ("efficientnet_attention_unet", "lstm_effunet"))
def test_norm_momentum_reaches_every_batch_norm_including_the_encoder(name, tmp_path):
    def momenta(model):
        found = []
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                found.append(layer.momentum)
        return found

    model = _build(name, norm_momentum=0.9)
    encoder = model.get_layer(f"{name}_encoder")
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in encoder.layers)
    assert set(momenta(model)) == {0.9} and len(momenta(model)) > 40
    assert set(momenta(_build(name))) == {0.99}
    model.save(tmp_path / "m.keras")
    assert set(momenta(keras.models.load_model(tmp_path / "m.keras"))) == {0.9}
