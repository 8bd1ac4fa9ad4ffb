"""Paper 4's LSTM enhancer: the layer (2D rows/columns, 3D ConvLSTM over slices), the registered model,
the noise model and the denoising pre-training (``brats_keras.layers.lstm``, ``brats_keras.models.enhancer``,
``brats_keras.enhancement``).

Everything except the pre-training acceptance test is backend-agnostic (keras.ops and NumPy only) and
re-runs under ``KERAS_BACKEND=jax``. Shapes are tiny: 12 × 20 slices, 8 × 6 × 4 volumes, 32² images
for the pre-training.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops
from scipy import ndimage

import brats_keras.layers.lstm as lstm_module
from brats_keras import enhancement
from brats_keras.enhancement import (
    DenoisingPairs,
    NoiseSettings,
    corrupt,
    denoising_report,
    pretrain_enhancer,
    psnr,
)
from brats_keras.layers import LSTMEnhancer
from brats_keras.models import create_model, list_models
from brats_keras.models.enhancer import lstm_enhancer

agnostic = pytest.mark.backend_agnostic

SHAPES = {2: (12, 20), 3: (8, 6, 4)}  # non-square slices; volumes (H, W, D) with D the slice axis


def rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype("float32")


def randomize(layer, seed, scale=0.5):
    """Random weights everywhere, the projection included (an untrained enhancer is the identity)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(scale * rng.normal(size=w.shape).astype("float32"))


def np_(x):
    return ops.convert_to_numpy(x)


def blob_images(n, size=32, seed=0):
    """Smooth synthetic "slices" in [0, 1]: an ellipse of tissue with one to three bright round lesions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype("float32")
    out = np.zeros((n, size, size, 1), "float32")
    for k in range(n):
        cy, cx = rng.uniform(0.4, 0.6, 2) * size
        ry, rx = rng.uniform(0.3, 0.45, 2) * size
        img = 0.4 * ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1)
        for _ in range(rng.integers(1, 4)):
            by, bx = rng.uniform(0.25, 0.75, 2) * size
            radius = rng.uniform(2, 6)
            img = img + rng.uniform(0.2, 0.6) * (((yy - by) ** 2 + (xx - bx) ** 2) <= radius**2)
        img = ndimage.gaussian_filter(img, 1.0)
        out[k, ..., 0] = img / max(img.max(), 1e-6) * rng.uniform(0.7, 1.0)
    return out


# ----------------------------------------------------------------------------------------------
# Layer: shapes, identity at initialisation, structure
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize("sd, channels", [(2, 1), (2, 3), (3, 2)])
def test_shapes_and_identity_at_initialisation(sd, channels):
    x = rand(2, *SHAPES[sd], channels)
    layer = LSTMEnhancer(units=4, spatial_dims=sd)
    y = np_(layer(x))
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, x)  # zero-initialised projection: exactly the identity
    assert not np.any(np_(layer.residual(x)))
    assert np_(layer.features(x)).shape == x.shape[:-1] + (layer.feature_channels(channels),)
    assert layer.compute_output_shape((None, *SHAPES[sd], channels)) == (None, *SHAPES[sd], channels)


@agnostic
def test_2d_accepts_unknown_sizes_and_3d_an_unknown_slice_count():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, LSTMEnhancer(4)(inputs))
    assert model.output_shape == (None, None, None, 2)
    x = rand(3, 6, 9, 2, seed=1)
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    inputs = keras.Input((8, 6, None, 1))
    model3 = keras.Model(inputs, LSTMEnhancer(4, spatial_dims=3)(inputs))
    assert model3.output_shape == (None, 8, 6, None, 1)
    assert model3.predict(rand(2, 8, 6, 3, 1), verbose=0).shape == (2, 8, 6, 3, 1)


@agnostic
def test_2d_features_are_row_lstms_then_column_lstms():
    """The batched reshape/transpose equals running the sub-layers row by row, then column by column."""
    x = rand(2, 3, 4, 2, seed=2)
    layer = LSTMEnhancer(units=4)
    layer(x)
    z = np_(layer.standardized(x))
    rows = np.stack([np_(layer.row_lstm(z[:, i])) for i in range(3)], axis=1)            # (B, H, W, 2u)
    column_in = np.concatenate([rows, z], axis=-1)
    cols = np.stack([np_(layer.column_lstm(column_in[:, :, j])) for j in range(4)], axis=2)
    np.testing.assert_allclose(np_(layer.features(x)), np.concatenate([z, rows, cols], -1), atol=1e-5)
    assert [w.path.split("/")[1] for w in layer.weights][::2] == ["row_lstm"] * 3 + ["column_lstm"] * 3 + [
        "projection"]


@agnostic
def test_3d_features_are_a_bidirectional_convlstm_over_the_slices():
    x = rand(2, 8, 6, 4, 2, seed=3)
    layer = LSTMEnhancer(units=3, spatial_dims=3, kernel_size=(3, 1))
    layer(x)
    z = np_(layer.standardized(x))
    seq = np.transpose(z, (0, 3, 1, 2, 4))  # slices along D become the time axis
    f = np.transpose(np_(layer.slice_lstm(seq)), (0, 2, 3, 1, 4))
    np.testing.assert_allclose(np_(layer.features(x)), np.concatenate([z, f], -1), atol=1e-5)
    assert tuple(layer.slice_lstm.forward_layer.kernel_size) == (3, 1)


@agnostic
@pytest.mark.parametrize("sd", [2, 3])
def test_every_output_sees_the_whole_sequence(sd):
    """2D: one changed pixel moves the residual of every pixel (rows, then columns, both directions).
    3D: one changed voxel in the first slice moves the last slice (the ConvLSTM runs over slices).
    Small grids: the influence fades with distance (the forget gates) below float32 resolution."""
    x = rand(1, *{2: (4, 5), 3: (3, 3, 4)}[sd], 1, seed=4)
    layer = LSTMEnhancer(units=4, spatial_dims=sd, standardize=False)
    layer(x)
    randomize(layer, seed=5)
    x2 = x.copy()
    x2[(0,) + (0,) * sd + (0,)] += 0.5
    change = np.abs(np_(layer.residual(x2)) - np_(layer.residual(x)))
    if sd == 2:
        assert change.min() > 0
    else:
        assert change[0, 0, 0, -1].max() > 0 and change[..., -1, :].max() > 0


@agnostic
def test_standardisation_makes_the_residual_invariant_to_intensity_scaling():
    x = rand(2, 6, 8, 2, seed=6)
    layer = LSTMEnhancer(units=4)
    layer(x)
    randomize(layer, seed=7)
    z = np_(layer.standardized(x))
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1, atol=1e-2)
    # (a·x + b) standardises to the same z, up to the 1e-3 added to the standard deviation
    np.testing.assert_allclose(np_(layer.residual(3 * x + 0.2)), np_(layer.residual(x)), rtol=2e-2, atol=2e-3)
    plain = LSTMEnhancer(units=4, standardize=False)
    plain(x)
    np.testing.assert_array_equal(np_(plain.standardized(x)), x)


# ----------------------------------------------------------------------------------------------
# Validation, serialisation, model, registry
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LSTMEnhancer(units=0), "units"),
        (lambda: LSTMEnhancer(units=2.5), "units"),
        (lambda: LSTMEnhancer(units=True), "units"),
        (lambda: LSTMEnhancer(spatial_dims=1), "spatial_dims"),
        (lambda: LSTMEnhancer(spatial_dims=4), "spatial_dims"),
        (lambda: LSTMEnhancer(kernel_size=0), "kernel_size"),
        (lambda: LSTMEnhancer(spatial_dims=3, kernel_size=(3, 3, 3)), "kernel_size"),
        (lambda: LSTMEnhancer(standardize="yes"), "standardize"),
        (lambda: lstm_enhancer(input_shape=(32, 32)), "input_shape"),
        (lambda: lstm_enhancer(input_shape=(32, 32, None)), "input_shape"),
        (lambda: lstm_enhancer(input_shape=(None, 32, 8, 1)), "input_shape"),
        (lambda: lstm_enhancer(input_shape=(32, 32, 0)), "input_shape"),
        (lambda: lstm_enhancer(input_shape=(32, 32, 1), units=-1), "units"),
        (lambda: lstm_enhancer(input_shape=(32, 32, 1), kernel_size=(3, 3, 3)), "kernel_size"),
        (lambda: lstm_enhancer(input_shape=(32, 32, 1), name=""), "name"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@agnostic
@pytest.mark.parametrize(
    "sd, shape, match",
    [(3, (1, 16, 16, 2), "rank 5"), (2, (1, 8, 8, 4, 1), "rank 4"), (2, (1, 8, 8, None), "channel"),
     (3, (1, None, 8, 4, 1), "known H and W")],
)
def test_wrong_inputs_are_reported_in_build(sd, shape, match):
    with pytest.raises(ValueError, match=match):
        LSTMEnhancer(units=2, spatial_dims=sd).build(shape)


@agnostic
@pytest.mark.parametrize(
    "layer",
    [LSTMEnhancer(units=5, name="e2"), LSTMEnhancer(units=3, spatial_dims=3, kernel_size=(5, 3), standardize=False,
                                                     name="e3")],
    ids=["2d", "3d"],
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    json.dumps(config)
    clone = LSTMEnhancer.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is LSTMEnhancer and restored.get_config() == config


@agnostic
@pytest.mark.parametrize("input_shape", [(12, 20, 2), (8, 6, 4, 1)], ids=["2d", "3d"])
def test_model_reloads_from_keras_file_with_identical_outputs(input_shape, tmp_path):
    model = create_model("lstm_enhancer", input_shape=input_shape, units=3, name="enh")
    layer = model.get_layer("enh_enhancer")
    assert isinstance(layer, LSTMEnhancer) and layer.spatial_dims == len(input_shape) - 1
    randomize(layer, seed=8, scale=0.3)
    x = rand(2, *input_shape, seed=9)
    before = model.predict(x, verbose=0)
    assert np.abs(before - x).max() > 1e-3  # trained-looking weights: no longer the identity
    model.save(tmp_path / "enh.keras")
    loaded = keras.models.load_model(tmp_path / "enh.keras")  # registered layer: no custom_objects
    assert type(loaded.get_layer("enh_enhancer")) is LSTMEnhancer
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)


@agnostic
def test_registry_and_paper_configuration():
    assert "lstm_enhancer" in list_models()
    small = create_model("lstm_enhancer", input_shape=(32, 32, 1))
    assert small.input_shape == small.output_shape == (None, 32, 32, 1)
    assert [layer.name for layer in small.layers] == ["lstm_enhancer_input", "lstm_enhancer_enhancer"]
    paper = lstm_enhancer()  # 256 × 256 × 1, units 16: built, never run
    assert paper.input_shape == (None, 256, 256, 1)
    u, c = 16, 1
    lstm_params = 2 * 4 * (u * (c + u) + u) + 2 * 4 * (u * (2 * u + c + u) + u)
    assert paper.count_params() == lstm_params + (c + 4 * u) * c + c == 8_770
    volume = create_model("lstm_enhancer", input_shape=(16, 16, 8, 1), units=4)
    assert volume.get_layer("lstm_enhancer_enhancer").spatial_dims == 3


@agnostic
@pytest.mark.parametrize("sd", [2, 3])
def test_two_rmsprop_steps_update_every_weight(sd):
    """Step 1 moves the zero projection; from step 2 the gradient reaches every LSTM weight."""
    keras.utils.set_random_seed(0)
    model = create_model("lstm_enhancer", input_shape=SHAPES[sd] + (1,), units=2)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss="mse")
    x, y = rand(2, *SHAPES[sd], 1, seed=10), rand(2, *SHAPES[sd], 1, seed=11)
    before = {v.path: np_(v).copy() for v in model.trainable_variables}
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    unchanged = [v.path for v in model.trainable_variables if np.array_equal(np_(v), before[v.path])]
    assert unchanged == [] and len(before) == (14 if sd == 2 else 8)


@agnostic
def test_layer_and_training_modules_import_no_backend_library():
    """Only keras / keras.ops / numpy: the enhancer runs on every Keras backend."""
    for module in (lstm_module, enhancement):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"tensorflow", "jax", "torch"}, (module.__name__, imported)


# ----------------------------------------------------------------------------------------------
# Noise model and training pairs
# ----------------------------------------------------------------------------------------------


@agnostic
@pytest.mark.parametrize(
    "kwargs, match",
    [({"kind": "poisson"}, "kind"), ({"sigma": (0.1, 0.05)}, "sigma"), ({"sigma": -0.1}, "sigma"),
     ({"sigma": "a"}, "sigma"), ({"robust_percentile": 0}, "robust_percentile"), ({"seed": -1}, "seed")],
)
def test_noise_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSettings(**kwargs)


@agnostic
def test_noise_settings_defaults_and_json():
    settings = NoiseSettings(sigma=0.05)
    assert settings.sigma == (0.05, 0.05) and hash(settings) == hash(NoiseSettings(sigma=(0.05, 0.05)))
    default = NoiseSettings()
    assert default.kind == "rician" and default.sigma == (0.03, 0.08)
    assert json.loads(json.dumps(default.to_dict())) == {"kind": "rician", "sigma": [0.03, 0.08],
                                                         "robust_percentile": 99.5, "seed": 0}


@agnostic
def test_gaussian_noise_has_the_requested_level_relative_to_the_robust_max():
    clean = np.zeros((4, 64, 64, 2), "float32")
    clean[..., 0] = 0.5  # robust max 0.5
    clean[..., 1] = 1.0  # robust max 1
    noisy = corrupt(clean, NoiseSettings(kind="gaussian", sigma=0.04), np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    std = (noisy - clean).std(axis=(1, 2))
    np.testing.assert_allclose(std[:, 0], 0.02, rtol=0.05)
    np.testing.assert_allclose(std[:, 1], 0.04, rtol=0.05)
    # per-image draws from the default range 3–8 %
    levels = (corrupt(clean, NoiseSettings(kind="gaussian"), np.random.default_rng(1)) - clean)[..., 1].std(
        axis=(1, 2))
    assert np.all((levels > 0.028) & (levels < 0.083)) and np.ptp(levels) > 1e-3


@agnostic
def test_rician_noise_is_a_magnitude_biased_up_in_the_background():
    clean = np.zeros((2, 64, 64, 1), "float32")
    clean[:, 16:48, 16:48] = 0.8
    noisy = corrupt(clean, NoiseSettings(kind="rician", sigma=0.05), np.random.default_rng(2))
    assert noisy.min() >= 0
    background = noisy[:, :8].mean()
    np.testing.assert_allclose(background, 0.05 * 0.8 * np.sqrt(np.pi / 2), rtol=0.05)  # Rayleigh mean
    np.testing.assert_allclose(noisy[:, 20:44, 20:44].mean(), 0.8, atol=0.005)  # high SNR: nearly unbiased


@agnostic
def test_corrupt_is_seeded_and_checks_its_input():
    clean = blob_images(3, size=16)
    settings = NoiseSettings(seed=4)
    np.testing.assert_array_equal(corrupt(clean, settings), corrupt(clean, settings))
    assert not np.array_equal(corrupt(clean, settings), corrupt(clean, NoiseSettings(seed=5)))
    assert corrupt(rand(1, 4, 4, 3, 1), settings).shape == (1, 4, 4, 3, 1)  # volumes too
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(clean * 2, settings)
    with pytest.raises(ValueError, match="images"):
        corrupt(clean[0], settings)
    with pytest.raises(ValueError, match="dtype"):
        corrupt((clean * 255).astype("uint8"), settings)
    with pytest.raises(TypeError, match="NoiseSettings"):
        corrupt(clean, "rician")


@agnostic
@pytest.mark.parametrize("kwargs, error, match",
                         [({"epochs": 0}, ValueError, "epochs"), ({"learning_rate": 0.0}, ValueError, "learning_rate"),
                          ({"batch_size": 0}, ValueError, "batch_size"), ({"noise": None}, TypeError, "noise")])
def test_pretrain_enhancer_checks_its_arguments(kwargs, error, match):
    model = create_model("lstm_enhancer", input_shape=(8, 8, 1), units=2)
    args = {"noise": NoiseSettings(), "epochs": 1, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        pretrain_enhancer(model, blob_images(4, size=8), **args)


@agnostic
def test_denoising_pairs_fresh_seeded_noise_every_epoch():
    clean = blob_images(10, size=8)
    pairs = DenoisingPairs(clean, NoiseSettings(), batch_size=4, seed=1)
    assert len(pairs) == 3
    epoch0 = [pairs[i] for i in range(len(pairs))]
    assert [len(b[0]) for b in epoch0] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in epoch0])
    assert sorted(map(bytes, seen)) == sorted(map(bytes, clean))  # every image once per epoch
    np.testing.assert_array_equal(pairs[1][0], epoch0[1][0])  # same batch, same noise within the epoch
    pairs.on_epoch_end()
    assert not np.array_equal(pairs[0][1], epoch0[0][1]) or not np.array_equal(pairs[0][0], epoch0[0][0])
    again = DenoisingPairs(clean, NoiseSettings(), batch_size=4, seed=1)
    np.testing.assert_array_equal(again[2][0], epoch0[2][0])  # reproducible from the seed
    with pytest.raises(IndexError):
        pairs[3]


# ----------------------------------------------------------------------------------------------
# Acceptance: RMSprop pre-training reduces the noise of held-out images
# ----------------------------------------------------------------------------------------------


def test_pretraining_denoises_held_out_images():
    keras.utils.set_random_seed(0)
    train, val, held_out = blob_images(64, seed=1), blob_images(8, seed=2), blob_images(16, seed=3)
    noise = NoiseSettings()  # Rician, 3–8 % of the robust maximum
    model = create_model("lstm_enhancer", input_shape=(32, 32, 1), units=8)
    history = pretrain_enhancer(model, train, val, noise=noise, epochs=10, batch_size=8, seed=0, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert set(history) == {"loss", "val_loss"} and len(history["loss"]) == 10
    assert history["val_loss"][-1] < history["val_loss"][0]

    report = denoising_report(model, held_out, noise=noise, seed=1)
    assert report["images"] == 16
    assert report["enhanced_mse"] < 0.7 * report["noisy_mse"]
    assert report["psnr_gain_db"] >= 1.0, report
    assert report["psnr_gain_db"] == pytest.approx(report["enhanced_psnr_db"] - report["noisy_psnr_db"])

    layer = model.get_layer("lstm_enhancer_enhancer")
    noisy = corrupt(held_out, noise, np.random.default_rng(0))
    residual = np_(layer.residual(noisy))
    assert np.abs(residual).mean() > 5e-3  # trained: the correction is no longer zero
    # the correction points at the clean image: it removes more error than it adds
    assert psnr(noisy + residual, held_out).mean() > psnr(noisy, held_out).mean() + 1.0
