"""Paper 3's model (``brats_keras.models.paper3``): the multimodal U-Net at 32², its structure,
registry entry and serialisation; the paper configuration (128² × 4) is built, never run."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brats_keras.models import create_model, list_models
from brats_keras.models.paper1 import unet2d
from brats_keras.models.paper3 import PAPER3_INPUT_SHAPE, unet2d_multimodal

agnostic = pytest.mark.backend_agnostic


@agnostic
def test_tiny_model_maps_four_modalities_to_class_probabilities():
    model = unet2d_multimodal(input_shape=(32, 32, 4), filters=4)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)  # softmax over the four classes


@agnostic
def test_structure_is_four_encoders_a_bridge_and_four_decoders():
    model = unet2d_multimodal(input_shape=(32, 32, 4), filters=4)
    names = {layer.name for layer in model.layers}
    prefix = "unet2d_multimodal"
    assert {f"{prefix}_enc{i}" for i in range(1, 5)} <= names and f"{prefix}_bridge" in names
    assert {f"{prefix}_dec{j}" for j in range(1, 5)} <= names and f"{prefix}_enc5" not in names
    # two 3×3 convolutions per block, ReLU, no normalisation (the paper names none)
    convs = [w for w in model.weights if "kernel" in w.path and len(w.shape) == 4 and w.shape[0] == 3]
    assert len(convs) == 2 * 4 + 2 + 2 * 4
    assert not any("batch_norm" in w.path or "gamma" in w.path for w in model.weights)
    assert tuple(model.get_layer(f"{prefix}_bridge").output.shape) == (None, 2, 2, 64)  # 32 / 2**4, 4 · 2**4


@agnostic
def test_registered_and_reloads_from_keras_file(tmp_path):
    assert "unet2d_multimodal" in list_models()
    model = create_model("unet2d_multimodal", input_shape=(32, 32, 4), filters=4)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 4)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_paper_configuration_and_the_shared_unet_body():
    model = unet2d_multimodal()
    assert PAPER3_INPUT_SHAPE == (128, 128, 4) and model.input_shape == (None, 128, 128, 4)
    assert model.output_shape == (None, 128, 128, 4)
    assert tuple(model.get_layer("unet2d_multimodal_bridge").output.shape) == (None, 8, 8, 512)
    # the same network as paper 1's U-Net with four input channels: equal parameter count
    assert model.count_params() == unet2d(input_shape=(128, 128, 4), filters=32).count_params() == 7_760_484


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="input_shape"):
        unet2d_multimodal(input_shape=(30, 30, 4))
