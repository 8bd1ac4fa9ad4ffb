"""Paper 5's segmentation set (``brats_keras.data.lgg``): the kaggle_3m layout, image/mask pairing with
numeric slice order, masks stored as 0 / 255, a missing mask and a corrupt file reported and skipped,
the SYNTHETIC writer, and the single-channel target of the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brats_keras.data.lgg import LGGCache, discover_lgg, read_lgg_slice, write_lgg_dataset
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import DataError


def _tif(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="TIFF")
    return path


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgg") / "lgg-mri-segmentation"
    write_lgg_dataset(root, patients=3, slices=12, seed=2, size=64, progress=False)
    return root


def test_synthetic_set_has_the_release_layout(synthetic_set):
    assert is_synthetic_dataset(synthetic_set)
    patients = sorted(p for p in (synthetic_set / "kaggle_3m").iterdir() if p.is_dir())
    assert len(patients) == 3 and all(p.name.startswith("TCGA_SY_") for p in patients)
    first = patients[0] / f"{patients[0].name}_1.tif"
    with Image.open(first) as image, Image.open(patients[0] / f"{patients[0].name}_1_mask.tif") as mask:
        assert image.mode == "RGB" and image.size == (64, 64) and mask.mode == "L"
    slices, problems = discover_lgg(synthetic_set)
    assert len(slices) == 36 and problems == []
    masks = [read_lgg_slice(s)[1] for s in slices]
    with_tumour = sum(bool(m.any()) for m in masks)
    assert 0 < with_tumour < len(masks)  # slices with and without tumour, as in the release
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) == {0, 1}


def test_pairs_sort_numerically_and_a_missing_mask_is_reported(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    folder = tmp_path / "kaggle_3m" / "TCGA_AA_0001_20000101"
    for k in (1, 2, 10):
        _tif(folder / f"{folder.name}_{k}.tif", image)
        _tif(folder / f"{folder.name}_{k}_mask.tif", mask)
    _tif(folder / f"{folder.name}_3.tif", image)  # no mask beside it
    slices, problems = discover_lgg(tmp_path)
    assert [s.number for s in slices] == [1, 2, 10]  # not 1, 10, 2
    assert len(problems) == 1 and problems[0]["path"].endswith("_3.tif") and "no mask" in problems[0]["problem"]
    x, y = read_lgg_slice(slices[0])
    assert x.shape == (16, 16, 3) and y.dtype == np.uint8 and y.sum() == 16 and set(np.unique(y)) == {0, 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no LGG image/mask pairs"):
        discover_lgg(tmp_path / "empty")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # PIL, on the truncated file
def test_a_corrupt_slice_is_skipped_and_the_index_serves_a_binary_channel(synthetic_set, tmp_path):
    from brats_keras.data.pipeline import make_dataset

    slices, _ = discover_lgg(synthetic_set)
    broken = tmp_path / "TCGA_X_1.tif"
    broken.write_bytes(b"II*\x00 truncated")
    from brats_keras.data.lgg import LGGSlice

    items = [*slices[:6], LGGSlice(broken, slices[0].mask, "TCGA_X", 1)]
    index = LGGCache(size=32, cache_dir=tmp_path / "cache").index(items, progress=False)
    assert len(index) == 6 and len(index.skipped) == 1 and "not a readable TIFF" in index.skipped[0]["problem"]
    assert index.num_classes == 1 and index.x_shape == (32, 32, 3) and index.y_shape == (32, 32)
    x, y = next(iter(make_dataset(index, batch_size=6)))
    assert x.shape == (6, 32, 32, 3) and y.shape == (6, 32, 32, 1) and y.dtype.name == "float32"
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    assert index.patients == [s.patient for s in slices[:6]]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # PIL, on the truncated mask
def test_an_edited_mask_rebuilds_the_cache_and_a_corrupt_mask_is_named(synthetic_set, tmp_path):
    import shutil

    copy = tmp_path / "lgg"
    shutil.copytree(synthetic_set, copy)
    slices, _ = discover_lgg(copy)
    tumour = next(s for s in slices if read_lgg_slice(s)[1].any())
    items = [tumour, *[s for s in slices if s is not tumour][:3]]
    cache = LGGCache(size=32, cache_dir=tmp_path / "cache")
    first = cache.index(items, progress=False)
    assert first.targets()[0].any()
    _tif(tumour.mask, np.zeros((64, 64), np.uint8))  # the annotation corrected to "no tumour"
    second = cache.index(items, progress=False)
    assert not second.targets()[0].any() and np.array_equal(second.targets()[1:], first.targets()[1:])
    tumour.mask.write_bytes(b"II*\x00 truncated")
    third = cache.index(items, progress=False)
    assert len(third) == 3 and third.skipped[0]["path"] == str(tumour.mask.resolve())
    assert "not a readable TIFF" in third.skipped[0]["problem"]


def test_targets_are_the_masks_gather_serves(synthetic_set, tmp_path):
    slices, _ = discover_lgg(synthetic_set)
    index = LGGCache(size=32, cache_dir=tmp_path / "cache").index(slices[:8], progress=False)
    picks = np.array([5, 0, 3])
    assert np.array_equal(index.targets(picks), index.gather(picks)[1])
    assert np.array_equal(index.targets(), index.gather(np.arange(8))[1])
