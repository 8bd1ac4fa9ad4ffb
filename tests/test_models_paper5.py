"""Paper 5's models (``brats_keras.models.paper5``): the EfficientNetB1 classifier's head, its [0, 1]
input agreeing with the base's own rescaling, frozen and trainable bases, the offline ImageNet rule;
the residual U-Net's structure counted against the paper's 23 convolutions and 10 residual blocks."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from brats_keras.errors import BratsKerasError
from brats_keras.layers import ResidualBlock
from brats_keras.models import create_model, list_models
from brats_keras.models.paper5 import conv_layer_counts

NAME = "efficientnet_b1_classifier"


def _classifier(**kw):
    return create_model(NAME, **{"input_shape": (64, 64, 3), "weights": None, **kw})


@pytest.mark.backend_agnostic
def test_classifier_head_follows_the_paper():
    assert NAME in list_models() and "residual_unet2d_binary" in list_models()
    model = _classifier()
    y = keras.ops.convert_to_numpy(model(np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")))
    assert y.shape == (2, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    assert model.get_layer(f"{NAME}_dense").units == 512 and model.get_layer(f"{NAME}_dense").activation.__name__ == "relu"
    assert model.get_layer(f"{NAME}_dropout").rate == 0.4
    assert isinstance(model.get_layer(f"{NAME}_gap"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer(f"{NAME}_head").units == 4
    assert model.get_layer(f"{NAME}_base").name == f"{NAME}_base"


def test_zero_one_inputs_reach_the_base_normalisation_as_imagenet_inputs_would():
    """The paper's [0, 1] images × 255 (our layer) / 255 (EfficientNet's own Rescaling) = the image
    itself, so the base's ImageNet Normalization sees exactly what it saw in pre-training."""
    model = _classifier()
    base = model.get_layer(f"{NAME}_base")
    rescaling = [layer for layer in base.layers if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescaling) == 1 and rescaling[0].scale == pytest.approx(1 / 255)
    assert isinstance(base.layers[base.layers.index(rescaling[0]) + 1], keras.layers.Normalization)
    x = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    ours = keras.Model(model.input, model.get_layer(f"{NAME}_rescale").output)
    into_base = keras.ops.convert_to_numpy(rescaling[0](ours(x)))
    np.testing.assert_allclose(into_base, x, atol=1e-6)
    # the whole network: our [0, 1] input equals feeding the bare base 0–255 images
    bare = keras.Model(base.input, base.output)
    features = keras.Model(model.input, model.get_layer(f"{NAME}_gap").input)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features(x)),
                               keras.ops.convert_to_numpy(bare(x * 255.0)), atol=1e-4)


def test_frozen_base_trains_only_the_head_and_a_random_base_trains_too():
    frozen = _classifier(freeze_base=True)
    assert not frozen.get_layer(f"{NAME}_base").trainable
    head = [w for name in ("dense", "head") for w in frozen.get_layer(f"{NAME}_{name}").trainable_weights]
    assert len(frozen.trainable_weights) == len(head) == 4
    before = [w.copy() for w in frozen.get_layer(f"{NAME}_base").get_weights()]
    frozen.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    x = np.random.default_rng(2).uniform(0, 1, (4, 64, 64, 3)).astype("float32")
    frozen.fit(x, np.eye(4, dtype="float32"), epochs=1, verbose=0)
    for a, b in zip(before, frozen.get_layer(f"{NAME}_base").get_weights()):  # batch-norm statistics too
        np.testing.assert_array_equal(a, b)
    # without ImageNet weights the base is trained (the paper's frozen random base would learn nothing)
    random_base = _classifier()
    assert random_base.get_layer(f"{NAME}_base").trainable
    assert len(random_base.trainable_weights) > 100


def test_with_imagenet_weights_the_base_is_frozen_by_default(monkeypatch):
    """The rule, with the weights file simulated: resolved "imagenet" → frozen (the paper's frozen
    base) unless freeze_base=False asks to fine-tune."""
    from brats_keras.models import paper5

    loaded = []
    real = keras.applications.EfficientNetB1

    def fake_b1(*, weights, **kw):  # stands in for the ImageNet file this machine does not have
        loaded.append(weights)
        return real(weights=None, **kw)

    monkeypatch.setattr(paper5, "resolve_imagenet_weights", lambda weights, variant: "imagenet")
    monkeypatch.setattr(keras.applications, "EfficientNetB1", fake_b1)
    assert not create_model(NAME, input_shape=(64, 64, 3), weights="auto").get_layer(f"{NAME}_base").trainable
    assert create_model(NAME, input_shape=(64, 64, 3), weights="auto", freeze_base=False).get_layer(
        f"{NAME}_base").trainable
    assert loaded == ["imagenet", "imagenet"]


def test_imagenet_weights_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(BratsKerasError, match="efficientnetb1_notop.h5"):
        create_model(NAME, input_shape=(64, 64, 3), weights="imagenet")
    with pytest.warns(UserWarning, match="EfficientNetB1 ImageNet weights not found"):
        model = create_model(NAME, input_shape=(64, 64, 3), weights="auto")
    assert model.get_layer(f"{NAME}_base").trainable  # random, so trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model(NAME, input_shape=(64, 64, 3), weights=None)


def test_classifier_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        _classifier(input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="dropout"):
        _classifier(dropout=1.5)
    with pytest.raises(ValueError, match="freeze_base"):
        _classifier(freeze_base="yes")


@pytest.mark.backend_agnostic
def test_residual_unet_structure_against_the_paper():
    model = create_model("residual_unet2d_binary", input_shape=(64, 64, 3))
    y = keras.ops.convert_to_numpy(model(np.zeros((1, 64, 64, 3), "float32")))
    assert y.shape == (1, 64, 64, 1) and 0 <= y.min() and y.max() <= 1  # one sigmoid filter
    assert model.get_layer("residual_unet2d_binary_bridge").filters == 1024  # §4.2's bottleneck
    assert [model.get_layer(f"residual_unet2d_binary_enc{i}").filters for i in range(1, 5)] == [64, 128, 256, 512]
    blocks = [layer for layer in model.layers if isinstance(layer, ResidualBlock)]
    assert all(not b.preactivation and b.norm == "batch" and b.activation == "relu" for b in blocks)
    counts = conv_layer_counts(model)
    # §4.2 "23 convolutional layers, consisting of 10 residual blocks": 18 3×3 + 4 transposed + 1 head = 23,
    # but the encoder / bottleneck / decoder layout has 9 residual blocks (docs/paper5.md)
    assert counts == {"conv3x3": 18, "conv1x1_shortcut": 9, "transposed": 4, "head": 1, "residual_blocks": 9,
                      "total": 32}
    assert counts["conv3x3"] + counts["transposed"] + counts["head"] == 23


def test_residual_unet_reloads_from_keras_file(tmp_path):
    model = create_model("residual_unet2d_binary", input_shape=(32, 32, 3), filters=4)
    x = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)
