"""Tests of the figshare brain-tumour set (paper 4): MATLAB v7.3 reader and writer, discovery, the
SYNTHETIC generator, the prepared-array index and the patient split (``brats_keras.data.figshare``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from brats_keras.data import figshare as fs
from brats_keras.data.figshare import (
    FIGSHARE_LABELS,
    FigshareCache,
    FigshareIndex,
    FigshareSlice,
    discover_figshare,
    ensure_synthetic_figshare,
    patient_ids,
    read_figshare_mat,
    read_figshare_meta,
    split_by_patient,
    synthesize_figshare_patient,
    write_figshare_dataset,
    write_figshare_mat,
)
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import BratsKerasError, DataError

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
PATIENTS, SLICES = 6, 3


def make_slice(size: int = 24, *, label: int = 2, pid: str = "100360", seed: int = 0) -> FigshareSlice:
    """A hand-made slice whose image is far from symmetric, so a missing transpose shows."""
    rng = np.random.default_rng(seed)
    image = (np.arange(size * size).reshape(size, size) * 3 + rng.integers(0, 50, (size, size))).astype(np.int16)
    mask = np.zeros((size, size), np.uint8)
    mask[3:9, 10:20] = 1  # a wide, short box: rows 3..8, columns 10..19
    border = fs.mask_border(mask)
    return FigshareSlice(path=None, label=label, pid=pid, image=image, mask=mask, border=border)


def matlab_file(path: Path, *, image=None, mask=None, label=2.0, pid="1234", border=(10.5, 4.0, 19.5, 8.0),
                drop=(), border_as_column=False, header=True, group="cjdata") -> Path:
    """Write a slice file by hand with raw h5py, the way MATLAB's save -v7.3 does (not via our writer).

    ``image`` / ``mask`` are given as MATLAB shows them (rows, columns) and stored transposed.
    """
    image = make_slice().image if image is None else np.asarray(image)
    mask = np.zeros(image.shape, np.uint8) if mask is None else np.asarray(mask)
    with h5py.File(path, "w", userblock_size=512) as f:
        g = f.create_group(group)
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        fields = {
            "label": (np.array([[label]], np.float64), "double", None),
            "PID": (np.array([[ord(c)] for c in pid], np.uint16).reshape(-1, 1), "char", 2),
            "image": (image.T.copy(), "int16", None),
            "tumorBorder": (np.array(border, np.float64).reshape((-1, 1) if border_as_column else (1, -1)), "double",
                            None),
            "tumorMask": (mask.T.astype(np.uint8), "logical", 1),
        }
        for name, (data, cls, decode) in fields.items():
            if name in drop:
                continue
            ds = g.create_dataset(name, data=data)
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
            if decode is not None:
                ds.attrs["MATLAB_int_decode"] = np.int32(decode)
    if header:
        text = b"MATLAB 7.3 MAT-file, Platform: PCWIN64, Created on: Mon Apr 10 10:00:00 2017 HDF5 schema 1.00 ."
        with open(path, "r+b") as fh:
            fh.write(text.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    return path


# ------------------------------------------------------------------------------ writer and reader
def test_round_trip_stores_the_matlab_layout(tmp_path):
    slice_ = make_slice(label=3, pid="MR0429")
    path = write_figshare_mat(tmp_path / "7.mat", slice_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.mat"]  # no temporary file left behind

    header = path.read_bytes()[:128]
    assert header.startswith(b"MATLAB 7.3 MAT-file, Platform: ") and b", Created on: " in header
    assert header[:116].rstrip().endswith(b"HDF5 schema 1.00 .")
    assert header[116:] == b"\0" * 8 + b"\x00\x02IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        g = f["cjdata"]
        assert g.attrs["MATLAB_class"] == b"struct"
        assert [b"".join(n).decode() for n in g.attrs["MATLAB_fields"]] == list(fs.FIGSHARE_FIELDS)
        np.testing.assert_array_equal(f["cjdata/image"][()], slice_.image.T)  # column-major: transposed
        np.testing.assert_array_equal(f["cjdata/tumorMask"][()], slice_.mask.T)
        pid = f["cjdata/PID"]
        assert pid.dtype == np.uint16 and pid.shape == (6, 1)
        assert "".join(map(chr, pid[()].ravel())) == "MR0429"
        assert (pid.attrs["MATLAB_class"], int(pid.attrs["MATLAB_int_decode"])) == (b"char", 2)
        label = f["cjdata/label"]
        assert label.dtype == np.float64 and label.shape == (1, 1) and label[0, 0] == 3.0
        border = f["cjdata/tumorBorder"]
        assert border.shape == (1, 2 * len(slice_.border)) and border.attrs["MATLAB_class"] == b"double"
        np.testing.assert_array_equal(border[0, 0::2], slice_.border[:, 0])  # x1, y1, x2, y2, ...
        mask = f["cjdata/tumorMask"]
        assert (mask.dtype, mask.attrs["MATLAB_class"], int(mask.attrs["MATLAB_int_decode"])) == (
            np.uint8, b"logical", 1)
        assert f["cjdata/image"].attrs["MATLAB_class"] == b"int16" and label.attrs["MATLAB_class"] == b"double"

    back = read_figshare_mat(path)
    assert (back.path, back.label, back.pid, back.tumour_type) == (path, 3, "MR0429", "pituitary")
    assert back.image.dtype == np.int16 and back.mask.dtype == np.uint8
    np.testing.assert_array_equal(back.image, slice_.image)
    np.testing.assert_array_equal(back.mask, slice_.mask)
    np.testing.assert_array_equal(back.border, slice_.border)
    assert read_figshare_meta(path) == fs.FigshareMeta(path, 3, "MR0429")


def test_border_is_the_mask_outline_in_matlab_coordinates():
    slice_ = make_slice()
    x, y = slice_.border[:, 0], slice_.border[:, 1]  # 1-based column, row
    assert x.min() == pytest.approx(10.5) and x.max() == pytest.approx(20.5)  # columns 10..19 (0-based)
    assert y.min() == pytest.approx(3.5) and y.max() == pytest.approx(9.5)  # rows 3..8


@pytest.mark.parametrize("border_as_column", [False, True])
def test_reads_a_file_written_the_way_matlab_does(tmp_path, border_as_column):
    image = np.zeros((20, 20), np.int16)
    image[2, 15] = 700  # row 2, column 15 as MATLAB shows it
    mask = np.zeros((20, 20), np.uint8)
    mask[1:4, 14:17] = 1
    path = matlab_file(tmp_path / "1.mat", image=image, mask=mask, label=1.0, pid="112649",
                       border_as_column=border_as_column)
    got = read_figshare_mat(path)
    assert (got.label, got.pid) == (1, "112649")
    assert got.image[2, 15] == 700 and got.image.sum() == 700
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.border, [[10.5, 4.0], [19.5, 8.0]])


def test_writer_refuses_bad_slices(tmp_path):
    good = make_slice()
    changes = [({"label": 4}, "label 4"), ({"pid": " "}, "empty PID"), ({"mask": good.mask[:-1]}, "mask shape"),
               ({"image": good.image.astype(np.float32)}, "int16")]
    for change, words in changes:
        bad = FigshareSlice(**{**good.__dict__, **change})
        with pytest.raises(DataError, match=words):
            write_figshare_mat(tmp_path / "1.mat", bad)
    assert not any(tmp_path.iterdir())


def _v5_file(path: Path) -> Path:
    path.write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Apr 10 2017".ljust(116)
                     + b"\0" * 8 + b"\x00\x01IM" + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p, "file not found"),
        (_v5_file, r"v5/v7.*not v7\.3.*-v7\.3.*scipy\.io\.loadmat"),
        (lambda p: (p.write_text("just some text, not MATLAB\n"), p)[1], "not a MATLAB v7.3"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
        (lambda p: matlab_file(p, group="data"), "no 'cjdata' struct"),
        (lambda p: matlab_file(p, drop=("tumorMask",)), "missing field cjdata.tumorMask"),
        (lambda p: matlab_file(p, drop=("PID",)), "missing field cjdata.PID"),
        (lambda p: matlab_file(p, image=np.zeros((20, 24), np.int16)), "20×24, not square"),
        (lambda p: matlab_file(p, image=np.zeros((20, 20, 2), np.int16)), "must be 2D"),
        (lambda p: matlab_file(p, image=np.zeros((20, 20), np.int16), mask=np.zeros((20, 18))),
         "tumorMask has shape"),
        (lambda p: matlab_file(p, label=4.0), r"label 4 not in \{1, 2, 3\}"),
        (lambda p: matlab_file(p, mask=np.full((24, 24), 2)), r"outside \{0, 1\}: 2"),
        (lambda p: matlab_file(p, pid="   "), "empty cjdata.PID"),
    ],
    ids=["missing", "v5", "text", "empty", "no-cjdata", "no-mask", "no-pid", "non-square", "3d", "mask-shape",
         "label", "mask-values", "pid"],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path, make, words):
    path = make(tmp_path / "12.mat")
    with pytest.raises(DataError, match=words) as info:
        read_figshare_mat(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------ discovery
def test_discover_reads_the_release_folders_and_skips_cvind(tmp_path):
    for folder, number in [("brainTumorDataPublic_767-1532", 10), ("brainTumorDataPublic_1-766", 2),
                           ("brainTumorDataPublic_1-766", 1)]:
        (tmp_path / folder).mkdir(exist_ok=True)
        matlab_file(tmp_path / folder / f"{number}.mat")
    for name in ("cvind.mat", "README.txt", "notes.mat", ".10.mat.abc.tmp"):
        (tmp_path / name).write_bytes(b"x")
    found = discover_figshare(tmp_path)
    assert [p.name for p in found] == ["1.mat", "2.mat", "10.mat"]
    assert found[2].parent.name == "brainTumorDataPublic_767-1532"

    matlab_file(tmp_path / "2.mat")  # the same slice unpacked twice
    with pytest.raises(DataError, match="slice 2 found twice"):
        discover_figshare(tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        discover_figshare(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no figshare slice files"):
        discover_figshare(tmp_path / "empty")


# ------------------------------------------------------------------------------------- synthetic set
@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figshare") / "set"
    write_figshare_dataset(root, patients=PATIENTS, slices_per_patient=SLICES, seed=1, size=SIZE, progress=False)
    return root


def _head_region(image: np.ndarray) -> np.ndarray:
    """Everything inside the scalp: pixels above a tenth of the bright level, holes filled."""
    bright = ndimage.uniform_filter(image.astype(np.float32), 3) > 0.1 * np.percentile(image, 99)
    return ndimage.binary_fill_holes(bright)


def test_synthetic_set_layout_classes_and_patients(synthetic_set):
    files = discover_figshare(synthetic_set)
    assert [p.name for p in files] == [f"{n}.mat" for n in range(1, PATIENTS * SLICES + 1)]
    assert is_synthetic_dataset(synthetic_set)
    assert sorted(p.name for p in synthetic_set.iterdir() if not p.name.endswith(".mat")) == ["SYNTHETIC_DATA.json"]
    slices = [read_figshare_mat(p) for p in files]
    pids = [s.pid for s in slices]
    # A patient's slices are consecutive files; every patient has its own PID and one tumour type.
    per_patient = [pids[i * SLICES:(i + 1) * SLICES] for i in range(PATIENTS)]
    assert all(len(set(group)) == 1 for group in per_patient)
    assert len({group[0] for group in per_patient}) == PATIENTS
    assert all(p.isdigit() and len(p) == 6 for p in pids)
    labels = [slices[i * SLICES].label for i in range(PATIENTS)]
    assert all(len({s.label for s in slices[i * SLICES:(i + 1) * SLICES]}) == 1 for i in range(PATIENTS))
    assert {k: labels.count(k) for k in FIGSHARE_LABELS} == {1: 2, 2: 2, 3: 2}

    for s in slices:
        assert s.image.shape == s.mask.shape == (SIZE, SIZE) and s.image.dtype == np.int16
        assert s.image.min() >= 0 and s.mask.any()
        head = _head_region(s.image)
        assert head.mean() > 0.2 and not (s.mask.astype(bool) & ~head).any(), s.path  # tumour inside the head
        assert len(s.border) >= 3
        rows, cols = np.rint(s.border[:, 1] - 1).astype(int), np.rint(s.border[:, 0] - 1).astype(int)
        near = ndimage.binary_dilation(s.mask, iterations=1)
        assert near[np.clip(rows, 0, SIZE - 1), np.clip(cols, 0, SIZE - 1)].all()  # the outline hugs the mask
        if s.label in (1, 3):  # meningioma and pituitary tumours enhance brightly
            assert s.image[s.mask > 0].mean() > s.image[head & (s.mask == 0)].mean()


def test_synthetic_patient_is_reproducible_and_neighbouring():
    a = synthesize_figshare_patient(np.random.default_rng([5, 2]), 2, 3, 48, pid="123456")
    b = synthesize_figshare_patient(np.random.default_rng([5, 2]), 2, 3, 48, pid="123456")
    assert len(a) == 3 and {s.pid for s in a} == {"123456"} and all(s.path is None for s in a)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
    # Neighbouring slices: consecutive images are more alike than the first and last.
    corr = [np.corrcoef(a[i].image.ravel(), a[j].image.ravel())[0, 1] for i, j in ((0, 1), (0, 2))]
    assert corr[0] > corr[1] > 0.5
    with pytest.raises(BratsKerasError, match="label"):
        synthesize_figshare_patient(np.random.default_rng(0), 4, 1, 48)


def test_rewriting_a_smaller_set_removes_old_slices_and_cache_generation(tmp_path):
    write_figshare_dataset(tmp_path / "s", patients=2, slices_per_patient=2, size=32, progress=False)
    first = (tmp_path / "s" / "2.mat").read_bytes()
    write_figshare_dataset(tmp_path / "s", patients=1, slices_per_patient=2, size=32, progress=False)
    assert [p.name for p in discover_figshare(tmp_path / "s")] == ["1.mat", "2.mat"]
    assert (tmp_path / "s" / "2.mat").read_bytes() == first  # same seed, same bytes
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "9.mat").write_bytes(b"x")
    with pytest.raises(BratsKerasError, match="not a synthetic set"):
        write_figshare_dataset(foreign, patients=1, slices_per_patient=2, size=32, progress=False)

    folder = ensure_synthetic_figshare(tmp_path / "cache", patients=1, slices_per_patient=2, seed=3, size=32,
                                       progress=False)
    assert folder == tmp_path / "cache" / "synthetic" / "figshare_1p_2s_seed3_32"
    assert (folder / ".complete.json").is_file() and is_synthetic_dataset(folder)
    stamp = (folder / "1.mat").stat().st_mtime_ns
    assert ensure_synthetic_figshare(tmp_path / "cache", patients=1, slices_per_patient=2, seed=3, size=32,
                                     progress=False) == folder
    assert (folder / "1.mat").stat().st_mtime_ns == stamp  # reused, not regenerated


# -------------------------------------------------------------------------------- prepared arrays
def test_index_shapes_normalisation_and_cache_reuse(synthetic_set, tmp_path, monkeypatch):
    files = discover_figshare(synthetic_set)
    cache = FigshareCache(size=32, normalization="minmax", cache_dir=tmp_path)
    index = cache.index(files, progress=False)
    assert isinstance(index, FigshareIndex) and len(index) == len(files)
    assert (index.num_classes, index.x_shape, index.y_shape) == (2, (32, 32, 1), (32, 32))
    x, y = index.gather(np.array([4, 0, 4]))
    assert x.dtype == np.float32 and x.shape == (3, 32, 32, 1) and y.dtype == np.uint8 and y.shape == (3, 32, 32)
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) <= {0, 1} and y.any()
    np.testing.assert_array_equal(x[0], x[2])
    meta = [read_figshare_meta(p) for p in files]
    assert list(index.pids) == [m.pid for m in meta] and list(index.labels) == [m.label for m in meta]
    assert index.paths == [p.resolve() for p in files]

    # The expected values: 0.5/99.5 percentiles → [0, 1], clipped, then 2×2 area averaging (64 → 32).
    image = read_figshare_mat(files[4]).image.astype(np.float64)
    lo, hi = np.percentile(image, (0.5, 99.5))
    expected = np.clip((image - lo) / (hi - lo), 0, 1).reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(x[0, :, :, 0], expected, atol=1e-5)

    # Reused without reading a file; a replaced file rebuilds.
    monkeypatch.setattr(fs, "read_figshare_mat", lambda p: pytest.fail("cache not reused"))
    assert cache.ensure(files, progress=False).folder == index.arrays.folder
    monkeypatch.undo()
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.lookup(files) is None
    rebuilt = cache.ensure(files, progress=False)
    assert rebuilt.folder == index.arrays.folder and cache.lookup(files) is not None

    empty = cache.index([], progress=False)  # an empty part of a split
    assert len(empty) == 0 and empty.x_shape == (32, 32, 1) and empty.gather(np.arange(0))[0].shape == (0, 32, 32, 1)

    z = FigshareCache(size=32, normalization="zscore", cache_dir=tmp_path).index(files[:2], progress=False)
    zx, _ = z.gather(np.arange(2))
    assert z.arrays.folder != index.arrays.folder
    assert abs(float(zx[0].mean())) < 1e-4  # area averaging keeps the mean of the z-scored image


def test_any_square_size_is_resized(tmp_path):
    for number, size in ((1, 256), (2, 48)):
        slice_ = make_slice(size, seed=number)
        slice_.mask = np.zeros((size, size), np.uint8)
        slice_.mask[size // 4:size // 2, size // 4:size // 2] = 1
        write_figshare_mat(tmp_path / f"{number}.mat", slice_)
    assert read_figshare_mat(tmp_path / "1.mat").image.shape == (256, 256)
    index = FigshareCache(size=32, cache_dir=tmp_path / "cache").index(discover_figshare(tmp_path), progress=False)
    x, y = index.gather(np.arange(2))
    assert x.shape == (2, 32, 32, 1) and y.shape == (2, 32, 32)
    assert y[0].sum() == 8 * 8 and y[1, 8:16, 8:16].all() and y[1].sum() == 8 * 8  # nearest neighbour


def test_make_dataset_accepts_the_index(synthetic_set, tmp_path):
    from brats_keras.data.pipeline import make_dataset

    index = FigshareCache(size=32, cache_dir=tmp_path).index(discover_figshare(synthetic_set)[:5], progress=False)
    batches = list(make_dataset(index, batch_size=4).as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 32, 32, 1), (1, 32, 32, 1)]
    assert batches[0][1].shape == (4, 32, 32, 2)  # one-hot background / tumour


# ----------------------------------------------------------------------------------------- splits
def test_split_by_patient_keeps_each_patient_in_one_part(synthetic_set):
    files = discover_figshare(synthetic_set)
    parts = split_by_patient(files, test_fraction=0.34, val_fraction=0.25, seed=0)
    assert sorted(p for part in parts.values() for p in part) == sorted(files)
    pid_of = fs.read_patient_ids(files)
    assert list(pid_of) == files and list(pid_of.values()) == patient_ids(files)
    owners = {}
    for name, part in parts.items():
        assert part == [f for f in files if f in part]  # input order kept
        for path in part:
            assert owners.setdefault(pid_of[path], name) == name  # a PID never spans two parts
    assert all(parts[name] for name in ("train", "val", "test"))
    metas = [read_figshare_meta(p) for p in reversed(files)]
    assert {k: sorted(v) for k, v in split_by_patient(metas, test_fraction=0.34, val_fraction=0.25).items()} == {
        k: sorted(v) for k, v in parts.items()}  # same split whatever the order or the item type


# -------------------------------------------------------------------------------------------- CLI
def _cli():
    sys.path.insert(0, str(REPO / "data_prep"))
    try:
        import synthesize
    finally:
        sys.path.remove(str(REPO / "data_prep"))
    return synthesize


def test_cli_writes_a_figshare_set(tmp_path, capsys):
    cli = _cli()
    out = tmp_path / "cli"
    code = cli.main(["--dataset", "figshare", "--out", str(out), "--cases", "2", "--slices-per-patient", "2",
                     "--size", "32", "--seed", "4", "--no-progress"])
    assert code == 0
    assert "SYNTHETIC figshare" in capsys.readouterr().out
    files = discover_figshare(out)
    assert [p.name for p in files] == ["1.mat", "2.mat", "3.mat", "4.mat"]
    assert [read_figshare_meta(p).label for p in files] == [1, 1, 2, 2]
    assert read_figshare_mat(files[0]).image.shape == (32, 32)
    for argv in (["--dataset", "figshare", "--shape", "32", "32", "32"], ["--dataset", "brats2020", "--size", "32"],
                 ["--dataset", "figshare", "--slices-per-patient", "0"]):
        with pytest.raises(SystemExit) as info:
            cli.parse_args([*argv, "--out", str(out), "--cases", "1"])
        assert info.value.code == 2
    assert "applies to" in capsys.readouterr().err
