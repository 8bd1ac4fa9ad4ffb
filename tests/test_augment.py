"""Joint image + label augmentation (paper 4): settings, the TensorFlow sampler, its NumPy mirror, and
both pipelines with ``augment=``. Tiny images (32² / 64²)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from brats_keras.configs.base import config_to_dict
from brats_keras.data.augment import (
    AugmentSettings,
    augment_batch,
    augment_batch_numpy,
    augment_seeds,
    control_grid_shape,
    cubic_interpolation_matrix,
    draw_params,
    elastic_field,
    sampling_coordinates,
    sampling_coordinates_numpy,
    warp,
    warp_numpy,
)
from brats_keras.data.pipeline import make_dataset
from brats_keras.data.pydataset import IndexPyDataset

OFF = AugmentSettings(rotation_deg=0, flip_horizontal=False, flip_vertical=False, zoom=(1, 1), elastic_alpha=0)
"""Every transform off: switch on one at a time with ``dataclasses.replace``-style keywords."""


def only(**kwargs) -> AugmentSettings:
    return AugmentSettings(**{**config_to_dict(OFF), **kwargs})


def seeds(n: int, start: int = 0) -> tf.Tensor:
    return tf.constant(np.stack([np.arange(start, start + n), np.full(n, 7)], axis=1), tf.int64)


def squares(n: int = 8, size: tuple[int, int] = (64, 64), channels: int = 1):
    """Bright squares (value 1, background 0) of random position; label 2 on the square, 3 inside it."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, *size, channels), np.float32)
    y = np.zeros((n, *size), np.uint8)
    for b in range(n):
        r, c = rng.integers(size[0] // 4, size[0] // 2), rng.integers(size[1] // 4, size[1] // 2)
        x[b, r:r + 20, c:c + 20] = 1.0
        y[b, r:r + 20, c:c + 20] = 2
        y[b, r + 6:r + 14, c + 6:c + 14] = 3
    return x, y


def run(x, y, settings, s=None):
    s = seeds(len(x)) if s is None else s
    out_x, out_y = augment_batch(tf.constant(x), tf.constant(y), s, settings)
    return out_x.numpy(), out_y.numpy()


# ------------------------------------------------------------------------------------------ settings


def test_settings_validation_names_the_field():
    for kwargs, field in [
        ({"rotation_deg": -1}, "rotation_deg"), ({"rotation_deg": 181}, "rotation_deg"),
        ({"rotation_deg": float("nan")}, "rotation_deg"), ({"rotation_deg": "15"}, "rotation_deg"),
        ({"zoom": (0.0, 1.1)}, "zoom"), ({"zoom": (1.2, 1.1)}, "zoom"), ({"zoom": (1.1,)}, "zoom"),
        ({"zoom": "ab"}, "zoom"), ({"elastic_alpha": -0.5}, "elastic_alpha"),
        ({"elastic_spacing": 0}, "elastic_spacing"), ({"probability": 1.5}, "probability"),
        ({"probability": -0.1}, "probability"), ({"flip_horizontal": "yes"}, "flip_horizontal"),
        ({"flip_vertical": 1}, "flip_vertical"),
    ]:
        with pytest.raises(ValueError, match=field):
            AugmentSettings(**kwargs)
    with pytest.raises(ValueError, match="unknown fields.*'shear'"):
        AugmentSettings.from_dict({"shear": 3})


def test_settings_defaults_enabled_and_json_round_trip():
    default = AugmentSettings()
    assert default.enabled and default.zoom == (0.9, 1.1) and default.rotation_deg == 15.0
    assert not OFF.enabled
    assert not AugmentSettings(probability=0).enabled
    assert only(zoom=(1.0, 1.2)).enabled and only(flip_vertical=True).enabled and only(elastic_alpha=1).enabled
    # as a nested config: config_to_dict → JSON → from_dict gives equal (and equally hashed) settings
    text = json.dumps(config_to_dict({"augment": default}))
    again = AugmentSettings.from_dict(json.loads(text)["augment"])
    assert again == default and hash(again) == hash(default) and isinstance(again.zoom, tuple)
    assert default.to_dict() == config_to_dict(default)


def test_augment_batch_argument_checks():
    x, y = squares(2, (32, 32))
    with pytest.raises(ValueError, match="x:"):
        augment_batch(tf.constant(x[..., 0]), tf.constant(y), seeds(2), AugmentSettings())
    with pytest.raises(ValueError, match="y:"):
        augment_batch(tf.constant(x), tf.constant(y[:, :16]), seeds(2), AugmentSettings())
    with pytest.raises(ValueError, match="y:"):
        augment_batch(tf.constant(x), tf.constant(y.astype(np.float32)), seeds(2), AugmentSettings())
    with pytest.raises(ValueError, match="seeds"):
        augment_batch(tf.constant(x), tf.constant(y), tf.zeros((2, 3), tf.int64), AugmentSettings())
    with pytest.raises(TypeError, match="settings"):
        augment_batch(tf.constant(x), tf.constant(y), seeds(2), {"rotation_deg": 15})
    with pytest.raises(TypeError, match="seed"):
        augment_seeds(1.5)


# ------------------------------------------------------------------------------------------ sampler


def test_disabled_is_exact_identity_and_unselected_samples_are_untouched():
    x, y = squares(8, (32, 32), channels=2)
    x[..., 1] = np.random.default_rng(1).random(x.shape[:3])  # not just 0/1
    for settings in (OFF, AugmentSettings(probability=0)):
        out_x, out_y = run(x, y, settings)
        np.testing.assert_array_equal(out_x, x)
        np.testing.assert_array_equal(out_y, y)
    # through the resampler: identity coordinates are the pixel grid exactly, and reproduce the input
    coords = sampling_coordinates(32, 32, tf.zeros(8), tf.ones(8), tf.zeros(8, tf.bool), tf.zeros(8, tf.bool))
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="ij"), -1)
    np.testing.assert_array_equal(coords.numpy(), np.broadcast_to(grid, (8, 32, 32, 2)))
    wx, wy = warp(tf.constant(x), tf.constant(y), coords)
    np.testing.assert_array_equal(wx.numpy(), x)
    np.testing.assert_array_equal(wy.numpy(), y)
    # probability 0.5: the samples not drawn go through the sampler and come out bit for bit
    out_x, out_y = run(x, y, AugmentSettings(probability=0.5), seeds(8))
    same = [np.array_equal(out_x[b], x[b]) and np.array_equal(out_y[b], y[b]) for b in range(8)]
    assert 0 < sum(same) < 8


def test_seeded_determinism_and_variation():
    x, y = squares(6, (32, 32))
    settings = AugmentSettings(rotation_deg=30, elastic_alpha=1.5, elastic_spacing=8)
    a, b = run(x, y, settings, seeds(6)), run(x, y, settings, seeds(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = run(x, y, settings, seeds(6, start=100))
    assert all(not np.array_equal(a[0][k], c[0][k]) for k in range(6))
    # a sample's augmentation depends on its own seed only, not on the rest of the batch
    part = run(x[2:4], y[2:4], settings, seeds(6)[2:4])
    np.testing.assert_allclose(part[0], a[0][2:4], atol=1e-5)
    assert (part[1] != a[1][2:4]).mean() < 1e-3  # float rounding may flip a nearest-neighbour tie
    # graph mode with an unknown batch size gives the same numbers
    spec = (tf.TensorSpec((None, 32, 32, 1), tf.float32), tf.TensorSpec((None, 32, 32), tf.uint8),
            tf.TensorSpec((None, 2), tf.int64))
    graph = tf.function(lambda x, y, s: augment_batch(x, y, s, settings), input_signature=spec)
    gx, gy = graph(x, y, seeds(6))
    np.testing.assert_allclose(gx.numpy(), a[0], atol=1e-5)  # graph optimisations round differently
    assert (gy.numpy() != a[1]).mean() < 1e-3


def test_labels_stay_in_input_label_set_and_dtypes_kept():
    x, y = squares(8, (48, 32))  # non-square
    out_x, out_y = run(x, y, AugmentSettings(rotation_deg=45, zoom=(0.7, 1.3), elastic_alpha=2, elastic_spacing=8))
    assert out_x.dtype == np.float32 and out_y.dtype == np.uint8
    assert out_x.shape == x.shape and out_y.shape == y.shape
    assert set(np.unique(out_y)) <= {0, 2, 3} and 3 in out_y
    assert 0.0 <= out_x.min() and out_x.max() <= 1.0 + 1e-6  # bilinear: a convex combination


def test_image_and_mask_move_together():
    x, y = squares(8, (64, 64), channels=2)
    x[..., 1] *= 5.0
    settings = AugmentSettings(rotation_deg=45, flip_vertical=True, zoom=(0.8, 1.25), elastic_alpha=2,
                               elastic_spacing=16)
    out_x, out_y = run(x, y, settings)
    np.testing.assert_allclose(out_x[..., 1], 5 * out_x[..., 0], rtol=1e-5, atol=1e-5)  # channels alike
    changed = 0
    for b in range(8):
        mask = out_y[b] > 0
        bright = out_x[b, ..., 0] > 0.5
        boundary = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        assert not (mask ^ bright)[~boundary].any(), f"sample {b}: mask and image disagree off the boundary"
        assert (mask ^ bright).sum() <= 0.1 * mask.sum()
        changed += not np.array_equal(mask, y[b] > 0)
    assert changed == 8


def test_pure_flips_are_exact_mirrors():
    x, y = squares(16, (32, 48))
    x += np.random.default_rng(2).random(x.shape).astype(np.float32)
    for settings, axis in ((only(flip_horizontal=True), 2), (only(flip_vertical=True), 1)):
        out_x, out_y = run(x, y, settings)
        flipped = 0
        for b in range(16):
            mirror = np.array_equal(out_x[b], np.flip(x[b], axis - 1))
            assert mirror or np.array_equal(out_x[b], x[b])
            np.testing.assert_array_equal(out_y[b], np.flip(y[b], axis - 1) if mirror else y[b])
            flipped += mirror
        assert 3 <= flipped <= 13  # p = 0.5 per sample


def test_fixed_rotations_match_numpy():
    x, y = squares(2, (32, 32), channels=3)
    x += np.random.default_rng(3).random(x.shape).astype(np.float32)
    coords = sampling_coordinates(32, 32, tf.constant([math.pi / 2, -math.pi / 2]), tf.ones(2))
    out_x, out_y = (t.numpy() for t in warp(tf.constant(x), tf.constant(y), coords))
    np.testing.assert_allclose(out_x[0], np.rot90(x[0]), atol=1e-5)  # counter-clockwise
    np.testing.assert_allclose(out_x[1], np.rot90(x[1], -1), atol=1e-5)
    np.testing.assert_array_equal(out_y[0], np.rot90(y[0]))
    np.testing.assert_array_equal(out_y[1], np.rot90(y[1], -1))
    # non-square: a half turn about the centre
    x2, y2 = squares(1, (32, 48))
    coords = sampling_coordinates(32, 48, tf.constant([math.pi]), tf.ones(1))
    out_x, out_y = (t.numpy() for t in warp(tf.constant(x2), tf.constant(y2), coords))
    np.testing.assert_allclose(out_x[0], x2[0, ::-1, ::-1], atol=1e-5)
    np.testing.assert_array_equal(out_y[0], y2[0, ::-1, ::-1])
    # a rotation range of 90 draws angles in [-90, 90]: the squares' area is kept up to the border
    out_x, out_y = run(*squares(8, (64, 64)), only(rotation_deg=90))
    np.testing.assert_allclose((out_y > 0).sum(axis=(1, 2)), 400, rtol=0.1)


@pytest.mark.parametrize("zoom", [0.6, 1.5])
def test_zoom_scales_area_by_zoom_squared(zoom):
    x, y = squares(4, (64, 64))
    out_x, out_y = run(x, y, only(zoom=(zoom, zoom)))
    area = (out_y > 0).sum(axis=(1, 2))
    np.testing.assert_allclose(area, 400 * zoom**2, rtol=0.12)
    np.testing.assert_allclose(out_x[..., 0].sum(axis=(1, 2)), 400 * zoom**2, rtol=0.05)


def test_elastic_alone_keeps_area_and_bounds_the_motion():
    alpha = 2.0
    settings = only(elastic_alpha=alpha, elastic_spacing=32)  # the defaults' ratio (4 px / 64 px)
    _, out_y = run(*squares(8, (64, 64)), settings)
    area = (out_y > 0).sum(axis=(1, 2))
    np.testing.assert_allclose(area, 400, rtol=0.2)
    assert (area != 400).any()
    # warp an image of its own coordinates: bilinear interpolation of a linear function is exact,
    # so the output is the source coordinate of each pixel (interior only: 0 is filled outside)
    grid = np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"), -1).astype(np.float32)
    coords_img = np.broadcast_to(grid, (8, 64, 64, 2)).copy()
    moved, _ = run(coords_img, out_y, settings)
    motion = np.linalg.norm(moved - grid, axis=-1)[:, 8:-8, 8:-8]
    assert motion.max() <= 3 * alpha
    assert motion.mean() > 0.3 * alpha  # it does move
    # the dense field: never beyond the truncation (2α per axis), control points interpolated exactly
    params = draw_params(seeds(8), only(elastic_alpha=alpha, elastic_spacing=16), 64, 64)
    assert params["control"].shape == (8, *control_grid_shape(64, 64, 16), 2) == (8, 5, 5, 2)
    field = elastic_field(params["control"], 65, 65).numpy()  # 65 px: knots on pixels 0, 16, ..., 64
    assert np.abs(field).max() <= 2 * alpha + 1e-5
    np.testing.assert_allclose(field[:, ::16, ::16], params["control"].numpy(), atol=1e-5)


def test_cubic_interpolation_matrix():
    mat = cubic_interpolation_matrix(5, 65)
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mat[::16], np.eye(5), atol=1e-6)  # knots at 0, 16, ..., 64
    linear = mat @ np.arange(5.0)
    np.testing.assert_allclose(linear[16:49], np.arange(16, 49) / 16, atol=1e-5)  # kept between inner knots
    assert control_grid_shape(256, 256, 64) == (5, 5) and control_grid_shape(32, 300, 64) == (2, 6)


def test_numpy_mirror_matches_tensorflow_for_the_same_parameters():
    rng = np.random.default_rng(4)
    settings = AugmentSettings(rotation_deg=40, flip_vertical=True, zoom=(0.8, 1.2), elastic_alpha=2,
                               elastic_spacing=12)
    x, y = squares(4, (40, 56), channels=2)
    x[..., 1] = rng.random(x.shape[:3])
    params = {k: (None if v is None else v.numpy()) for k, v in draw_params(seeds(4), settings, 40, 56).items()}
    c_tf = sampling_coordinates(40, 56, **params).numpy()
    c_np = sampling_coordinates_numpy(40, 56, **params)
    np.testing.assert_allclose(c_np, c_tf, atol=1e-4)
    t_x, t_y = warp(tf.constant(x), tf.constant(y), tf.constant(c_np))
    n_x, n_y = warp_numpy(x, y, c_np)
    np.testing.assert_allclose(n_x, t_x.numpy(), atol=1e-5)
    assert (n_y != t_y.numpy()).mean() < 1e-3  # nearest-neighbour ties only
    # the NumPy augmentation itself: reproducible for a generator seed, labels in the input set
    a = augment_batch_numpy(x, y, np.random.default_rng(1), settings)
    b = augment_batch_numpy(x, y, np.random.default_rng(1), settings)
    np.testing.assert_array_equal(a[0], b[0])
    assert set(np.unique(a[1])) <= {0, 2, 3} and not np.array_equal(a[1], y)
    np.testing.assert_array_equal(augment_batch_numpy(x, y, rng, OFF)[0], x)


# ------------------------------------------------------------------------------------------ pipelines


class StubIndex:
    """An in-memory :class:`~brats_keras.data.pipeline.ArrayIndex` of 2D samples."""

    num_classes = 4

    def __init__(self, n: int = 20, size: tuple[int, int] = (32, 32)):
        self.x, self.y = squares(n, size, channels=2)
        self.x_shape, self.y_shape = self.x.shape[1:], self.y.shape[1:]

    def __len__(self) -> int:
        return len(self.x)

    def gather(self, indices):
        return self.x[indices], self.y[indices]


def epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_make_dataset_with_augment():
    index = StubIndex()
    settings = AugmentSettings(rotation_deg=30, elastic_alpha=1.5, elastic_spacing=8)
    ds = make_dataset(index, batch_size=8, shuffle=True, seed=5, augment=settings)
    assert ds.cardinality().numpy() == 3
    first, second = epoch(ds), epoch(ds)
    x, y = next(iter(ds))
    assert x.shape == (8, 32, 32, 2) and x.dtype == tf.float32
    assert y.shape == (8, 32, 32, 4) and y.dtype == tf.float32
    np.testing.assert_array_equal(first[1].sum(-1), 1.0)  # still one-hot
    assert set(np.unique(first[1].argmax(-1))) <= {0, 2, 3}
    again = epoch(make_dataset(index, batch_size=8, shuffle=True, seed=5, augment=settings))
    np.testing.assert_array_equal(first[0], again[0])  # reproducible for a seed
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], second[0])  # every epoch differs
    other = epoch(make_dataset(index, batch_size=8, shuffle=True, seed=6, augment=settings))
    assert not np.array_equal(np.sort(first[0].sum(axis=(1, 2, 3))), np.sort(other[0].sum(axis=(1, 2, 3))))
    # unshuffled: augmented, yet image and mask still agree; class indices stay uint8 without one-hot
    ax, ay = epoch(make_dataset(index, batch_size=8, one_hot=False, augment=settings))
    assert ay.dtype == np.uint8 and ax.shape == index.x.shape
    assert not np.array_equal(ax, index.x)
    assert ((ax[..., 0] > 0.5) != (ay > 0)).mean() < 0.03


def test_make_dataset_without_augment_is_unchanged():
    index = StubIndex()
    for augment in (None, OFF):
        x, y = epoch(make_dataset(index, batch_size=8, one_hot=False, augment=augment))
        np.testing.assert_array_equal(x, index.x)
        np.testing.assert_array_equal(y, index.y)
    volumes = StubIndex()
    volumes.x_shape, volumes.y_shape = (8, 8, 8, 1), (8, 8, 8)
    with pytest.raises(ValueError, match="augment"):
        make_dataset(volumes, batch_size=2, augment=AugmentSettings())


def test_pydataset_with_augment():
    index = StubIndex(size=(32, 40))
    settings = AugmentSettings(rotation_deg=30, elastic_alpha=1.5, elastic_spacing=8)
    seq = IndexPyDataset(index, batch_size=8, seed=3, augment=settings)
    x, y = seq[1]
    assert x.shape == (8, 32, 40, 2) and x.dtype == np.float32 and y.shape == (8, 32, 40, 4)
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    assert set(np.unique(y.argmax(-1))) <= {0, 2, 3}
    np.testing.assert_array_equal(seq[1][0], x)  # the same batch again: the same augmentation
    np.testing.assert_array_equal(IndexPyDataset(index, batch_size=8, seed=3, augment=settings)[1][0], x)
    assert not np.array_equal(x, index.x[8:16])
    seq.on_epoch_end()
    assert not np.array_equal(seq[1][0], x)  # a new epoch augments differently
    plain = IndexPyDataset(index, batch_size=8, augment=OFF)[1][0]
    np.testing.assert_array_equal(plain, index.x[8:16])
    with pytest.raises(ValueError, match="seed"):
        IndexPyDataset(index, batch_size=8, seed=-1, augment=settings)
