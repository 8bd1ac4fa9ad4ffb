"""Paper 5's classification set (``brats_keras.data.brain_mri``): the release's folder layout, mixed
image sizes and channels, a corrupt file reported and skipped, the splits, the SYNTHETIC writer, and
augmentation of per-image-labelled batches in both pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brats_keras.data.brain_mri import (
    CLASSES,
    BrainMRICache,
    discover_brain_mri,
    read_brain_mri_image,
    split_images,
    write_brain_mri_dataset,
)
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import DataError


def _save(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("btm") / "brain-tumor-mri"
    write_brain_mri_dataset(root, per_class=5, test_per_class=2, seed=1, max_size=128, progress=False)
    return root


def test_synthetic_set_has_the_release_layout_and_mixed_images(synthetic_set):
    assert is_synthetic_dataset(synthetic_set)
    for part, count in (("Training", 5), ("Testing", 2)):
        for c in CLASSES:
            files = sorted((synthetic_set / part / c).glob("*.jpg"))
            assert len(files) == count, (part, c)
            assert files[0].name.startswith("Tr-" if part == "Training" else "Te-")
    modes, sizes = set(), set()
    for path in synthetic_set.rglob("*.jpg"):
        with Image.open(path) as image:
            modes.add(image.mode)
            sizes.add(image.size)
    assert modes == {"L", "RGB"} and len(sizes) > 1  # grey and RGB files, several sizes
    items = discover_brain_mri(synthetic_set)
    assert len(items) == 4 * 7 and {it.part for it in items} == {"Training", "Testing"}
    assert [it.label for it in items if it.part == "Training"] == sorted(it.label for it in items if it.part == "Training")


def test_reader_gives_rgb_at_any_size_and_names_a_bad_file(tmp_path):
    grey = _save(tmp_path / "g.png", (np.arange(40 * 60) % 256).reshape(40, 60).astype(np.uint8), "L")
    rgb = _save(tmp_path / "c.jpg", np.full((50, 50, 3), (200, 10, 10), np.uint8), "RGB")
    x = read_brain_mri_image(grey, 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey repeated to three channels
    y = read_brain_mri_image(rgb, 16)
    assert y.shape == (16, 16, 3) and abs(int(y[..., 0].mean()) - 200) < 5 and y[..., 1].mean() < 30
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg: not a readable image"):
        read_brain_mri_image(bad, 32)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(rgb.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.jpg"):
        read_brain_mri_image(truncated, 32)


def test_discovery_reads_old_class_names_and_refuses_unknown_ones(tmp_path):
    pixel = np.zeros((20, 20), np.uint8)
    for name in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        _save(tmp_path / "archive" / "Training" / name / "1.jpg", pixel, "L")
    items = discover_brain_mri(tmp_path)  # the archive's own folder one level down
    assert sorted(it.label for it in items) == [0, 1, 2, 3]
    _save(tmp_path / "archive" / "Training" / "astrocytoma" / "1.jpg", pixel, "L")
    with pytest.raises(DataError, match="unknown class folder 'astrocytoma'"):
        discover_brain_mri(tmp_path)
    with pytest.raises(DataError, match="no Training/ folder"):
        discover_brain_mri(tmp_path / "archive" / "Training")


def test_a_corrupt_file_is_skipped_and_counted(synthetic_set, tmp_path):
    items = discover_brain_mri(synthetic_set)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a? no")
    from brats_keras.data.brain_mri import ImageItem

    index = BrainMRICache(size=32, cache_dir=tmp_path / "cache").index([*items[:5], ImageItem(broken, 0, "Training")],
                                                                      progress=False)
    assert len(index) == 5 and len(index.skipped) == 1 and index.skipped[0]["path"] == str(broken.resolve())
    assert "not a readable image" in index.skipped[0]["problem"]
    x, y = index.gather(np.arange(5))
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    assert list(y) == [it.label for it in items[:5]] and y.shape == (5,)
    again = BrainMRICache(size=32, cache_dir=tmp_path / "cache").index(items[:5], progress=False)
    assert again.skipped == [] and len(again) == 5


def test_splits_are_stratified_and_seeded(synthetic_set):
    items = discover_brain_mri(synthetic_set)  # 7 images per class
    paper = split_images(items, mode="paper", seed=3)
    assert sum(len(v) for v in paper.values()) == len(items)
    assert len({id(it) for v in paper.values() for it in v}) == len(items)
    for part in ("train", "val", "test"):
        assert sorted({it.label for it in paper[part]}) == [0, 1, 2, 3]
    assert [len(paper[p]) for p in ("train", "val", "test")] == [20, 4, 4]  # 7 → 1 + 1 + 5 per class
    assert paper == split_images(list(reversed(items)), mode="paper", seed=3)
    assert paper != split_images(items, mode="paper", seed=4)
    folders = split_images(items, mode="folders", seed=3)
    assert {it.part for it in folders["test"]} == {"Testing"} and len(folders["test"]) == 8
    assert {it.part for it in folders["train"] + folders["val"]} == {"Training"}


def test_per_image_labels_are_kept_while_the_images_are_augmented(synthetic_set, tmp_path):
    from brats_keras.data.augment import AugmentSettings
    from brats_keras.data.pipeline import make_dataset
    from brats_keras.data.pydataset import IndexPyDataset

    index = BrainMRICache(size=32, cache_dir=tmp_path).index(discover_brain_mri(synthetic_set)[:8], progress=False)
    settings = AugmentSettings(elastic_alpha=0.0, flip_vertical=True)
    plain = next(iter(make_dataset(index, batch_size=8)))
    augmented = next(iter(make_dataset(index, batch_size=8, augment=settings)))
    assert augmented[0].shape == (8, 32, 32, 3) and augmented[1].shape == (8, 4)
    np.testing.assert_array_equal(augmented[1].numpy(), plain[1].numpy())  # the one-hot labels are untouched
    assert not np.allclose(augmented[0].numpy(), plain[0].numpy())
    x, y = IndexPyDataset(index, batch_size=8, augment=settings)[0]
    np.testing.assert_array_equal(y, plain[1].numpy())
    assert x.shape == (8, 32, 32, 3)
    assert not np.allclose(x, plain[0].numpy())


def test_synthesize_cli_writes_both_paper5_sets(tmp_path, capsys):
    import importlib.util

    from brats_keras.data.lgg import discover_lgg
    from tests.helpers import REPO

    spec = importlib.util.spec_from_file_location("synthesize_cli", REPO / "data_prep" / "synthesize.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--dataset", "brain-tumor-mri", "--out", str(tmp_path / "btm"), "--cases", "2",
                     "--test-cases", "1", "--size", "64", "--no-progress"]) == 0
    assert "SYNTHETIC brain-tumour MRI images (2 + 1 per class)" in capsys.readouterr().out
    assert len(discover_brain_mri(tmp_path / "btm")) == 4 * 3
    assert cli.main(["--dataset", "lgg", "--out", str(tmp_path / "lgg"), "--cases", "2", "--slices-per-patient", "3",
                     "--size", "32", "--no-progress"]) == 0
    assert len(discover_lgg(tmp_path / "lgg")[0]) == 6
    for argv in (["--dataset", "lgg", "--test-cases", "2"], ["--dataset", "brain-tumor-mri", "--shape", "8", "8", "8"]):
        with pytest.raises(SystemExit) as info:
            cli.parse_args([*argv, "--out", str(tmp_path / "x"), "--cases", "1"])
        assert info.value.code == 2
    assert "applies to --dataset" in capsys.readouterr().err
