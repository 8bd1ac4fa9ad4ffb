"""2D slice preparation, its on-disk cache, and the tf.data / PyDataset pipelines over it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from brats_keras.data.brats import discover_cases, load_case
from brats_keras.data.pipeline import make_dataset
from brats_keras.data.pydataset import IndexPyDataset
from brats_keras.data.slices2d import (
    SliceCache,
    SliceIndex,
    SliceSettings,
    normalize_volume,
    prepare_case_slices,
    resize_images,
    resize_labels,
)
from brats_keras.errors import DataError
from tests.helpers import save_nifti

SMALL = SliceSettings(start=4, count=30, size=32)


def test_bilinear_resize_matches_tensorflow():
    x = np.random.default_rng(0).random((3, 48, 40, 2)).astype(np.float32)
    ours = resize_images(x, 32)
    ref = tf.image.resize(x, (32, 32), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_nearest_resize_matches_tensorflow_and_keeps_labels_hard():
    y = np.random.default_rng(1).integers(0, 4, (2, 48, 48)).astype(np.uint8)
    ours = resize_labels(y, 32)
    ref = tf.image.resize(y[..., None], (32, 32), method="nearest").numpy()[..., 0]
    np.testing.assert_array_equal(ours, ref)
    assert set(np.unique(ours)) <= {0, 1, 2, 3}


def test_normalisations():
    vol = np.zeros((4, 4, 4, 2), np.float32)
    vol[1:3, 1:3, 1:3, 0] = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    vol[1:3, 1:3, 1:3, 1] = 10
    out = normalize_volume(vol, "max")
    assert out[..., 0].max() == 1.0 and out[..., 1].max() == 1.0 and out.min() == 0.0
    z = normalize_volume(vol, "zscore")
    brain = vol[..., 0] != 0
    assert abs(z[..., 0][brain].mean()) < 1e-6 and abs(z[..., 0][brain].std() - 1) < 1e-5
    assert (z[..., 0][~brain] == 0).all() and (z[..., 1] == 0).all()  # constant channel → 0, no NaN
    np.testing.assert_array_equal(normalize_volume(vol, "none"), vol)


def test_prepare_case_matches_straightforward_computation(synthetic_brats):
    files = discover_cases(synthetic_brats)[0]
    x, y = prepare_case_slices(files, SMALL)
    assert x.shape == (30, 32, 32, 2) and x.dtype == np.float32
    assert y.shape == (30, 32, 32) and y.dtype == np.uint8
    case = load_case(files, ["flair", "t1ce"])
    for k, s in ((0, 4), (17, 21), (29, 33)):
        for c in range(2):
            vol = case.image[..., c]
            ref = tf.image.resize(vol[:, :, s, None] / vol.max(), (32, 32)).numpy()[..., 0]
            np.testing.assert_allclose(x[k, :, :, c], ref, atol=1e-5)
        lab = case.label[:, :, s].copy()
        lab[lab == 4] = 3
        np.testing.assert_array_equal(y[k], tf.image.resize(lab[..., None], (32, 32), "nearest").numpy()[..., 0])


def test_slice_range_outside_volume_is_a_data_error(synthetic_brats):
    files = discover_cases(synthetic_brats)[0]
    with pytest.raises(DataError, match=r"40 axial slices; slices 22\.\.121"):
        prepare_case_slices(files, SliceSettings(size=32))


def test_settings_validation():
    with pytest.raises(ValueError, match="modalities"):
        SliceSettings(modalities=("dwi",))
    with pytest.raises(ValueError, match="normalization"):
        SliceSettings(normalization="minmax")
    assert SliceSettings().key() != SliceSettings(size=64).key()
    assert SliceSettings().key() == SliceSettings(modalities=["flair", "t1ce"]).key()


def test_cache_reuses_and_invalidates(synthetic_brats, tmp_path, monkeypatch):
    cases = discover_cases(synthetic_brats)[:3]
    cache = SliceCache(SMALL, tmp_path / "cache")
    built = []
    original = SliceCache.build
    monkeypatch.setattr(SliceCache, "build", lambda self, f: built.append(f.case_id) or original(self, f))

    first = cache.ensure(cases, progress=False)
    assert sorted(built) == [c.case_id for c in cases]
    x0 = np.load(first[0].x_path)

    built.clear()
    again = cache.ensure(cases, progress=False)
    assert built == [] and again == first

    # replacing a source file rebuilds exactly that case
    flair = cases[1].images["flair"]
    data = np.asanyarray(__import__("nibabel").load(str(flair)).dataobj)
    save_nifti(flair, (data * 2).astype(np.int16))
    os.utime(flair, ns=(1, 1))  # a different mtime even on coarse-timestamp filesystems
    fresh = discover_cases(synthetic_brats)[:3]
    cache.ensure(fresh, progress=False)
    assert built == [cases[1].case_id]

    # a different setting lives in a different folder and does not disturb the first
    other = SliceCache(SliceSettings(start=4, count=30, size=16), tmp_path / "cache")
    assert other.dir != cache.dir
    other.ensure(fresh[:1], progress=False)
    np.testing.assert_array_equal(np.load(first[0].x_path), x0)


def test_stale_entry_without_record_is_rebuilt(synthetic_brats, tmp_path):
    cases = discover_cases(synthetic_brats)[:1]
    cache = SliceCache(SMALL, tmp_path)
    (entry,) = cache.ensure(cases, progress=False)
    (cache.dir / f"{entry.case_id}.json").unlink()  # e.g. killed between the arrays and the record
    assert cache.lookup(cases[0]) is None
    assert cache.ensure(cases, progress=False)[0].num_slices == 30


@pytest.fixture
def slice_index(synthetic_brats, tmp_path):
    return SliceIndex(SliceCache(SMALL, tmp_path).ensure(discover_cases(synthetic_brats)[:2], progress=False))


def test_index_gather(slice_index):
    assert len(slice_index) == 60
    assert all(isinstance(a, np.memmap) for a in slice_index._x + slice_index._y)  # never all in RAM
    x, y = slice_index.gather(np.array([0, 31, 59]))
    np.testing.assert_array_equal(x[1], np.load(slice_index.entries[1].x_path)[1])
    np.testing.assert_array_equal(y[2], np.load(slice_index.entries[1].y_path)[29])


def test_tf_dataset_shapes_one_hot_and_epoch_coverage(slice_index):
    ds = make_dataset(slice_index, batch_size=8, shuffle=True, seed=1)
    batches = list(ds)
    assert len(batches) == 8  # 60 slices → 7 full batches + 1 of 4
    x, y = batches[0]
    assert x.shape == (8, 32, 32, 2) and x.dtype == tf.float32
    assert y.shape == (8, 32, 32, 4) and y.dtype == tf.float32
    np.testing.assert_array_equal(tf.reduce_sum(y, -1).numpy(), 1.0)
    # every slice exactly once per epoch: compare multisets of per-slice checksums
    all_x = np.concatenate([b[0].numpy() for b in batches])
    ref_x, _ = slice_index.gather(np.arange(60))
    assert sorted(all_x.sum(axis=(1, 2, 3)).round(3)) == sorted(ref_x.sum(axis=(1, 2, 3)).round(3))
    assert not np.array_equal(all_x, ref_x)  # shuffled
    # the same seed gives the same order; epochs reshuffle
    again = np.concatenate([b[0].numpy() for b in make_dataset(slice_index, batch_size=8, shuffle=True, seed=1)])
    np.testing.assert_array_equal(all_x, again)
    two = [np.concatenate([b[0].numpy() for b in ds]) for _ in range(2)]
    assert not np.array_equal(two[0], two[1])


def test_tf_dataset_unshuffled_order_and_labels(slice_index):
    ds = make_dataset(slice_index, batch_size=16, drop_remainder=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    assert len(xs) == 3
    ref_x, ref_y = slice_index.gather(np.arange(48))
    np.testing.assert_array_equal(np.concatenate(xs), ref_x)
    np.testing.assert_array_equal(np.concatenate(ys).argmax(-1), ref_y)


def test_pydataset_matches_index(slice_index):
    seq = IndexPyDataset(slice_index, batch_size=16, shuffle=False)
    assert len(seq) == 4
    x, y = seq[3]
    assert x.shape == (12, 32, 32, 2) and y.shape == (12, 32, 32, 4)
    ref_x, ref_y = slice_index.gather(np.arange(48, 60))
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y.argmax(-1), ref_y)
    with pytest.raises(IndexError):
        seq[4]
    shuffled = IndexPyDataset(slice_index, batch_size=60, shuffle=True, seed=0)
    first = shuffled[0][0].copy()
    shuffled.on_epoch_end()
    assert not np.array_equal(first, shuffled[0][0])
    assert np.isclose(first.sum(), shuffled[0][0].sum(), rtol=1e-5)
