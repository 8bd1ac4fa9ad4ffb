"""The figshare set's layout and reader: records, MATLAB v7.3 ``.mat`` slice files, discovery and the
patient-level split (the package docstring, :mod:`brats_keras.data.figshare`, describes the files)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from brats_keras.data.splits import SPLIT_NAMES, split_cases
from brats_keras.errors import DataError
from brats_keras.labels import FIGSHARE
from brats_keras.progress import progress_bar

FIGSHARE_LABELS = {c.code: c.key for c in FIGSHARE}
"""``cjdata.label`` → tumour type: ``{1: "meningioma", 2: "glioma", 3: "pituitary"}``
(:data:`brats_keras.labels.FIGSHARE`)."""

FIGSHARE_FIELDS = ("label", "PID", "image", "tumorBorder", "tumorMask")
"""Fields of the ``cjdata`` struct, in the order MATLAB lists them."""

MAT73_USERBLOCK = 512
"""Bytes before the HDF5 data in a v7.3 MAT-file; the first 128 are the MATLAB header."""

MIN_SIZE = 16
"""Smallest image side :func:`synthesize_figshare_patient` and :class:`FigshareCache` accept."""

_SLICE_NAME = re.compile(r"^(\d+)\.mat$", re.IGNORECASE)
_V5_TEXT = b"MATLAB 5.0 MAT-file"
_V73_TEXT = b"MATLAB 7.3 MAT-file"


# ----------------------------------------------------------------------------------------- records
@dataclass
class FigshareSlice:
    """One slice of the figshare set, as MATLAB shows it.

    ``border`` holds the ``tumorBorder`` points in file order, one row per point: column 0 is the
    README's ``x`` (odd entries of the vector), column 1 its ``y`` (even entries). They are MATLAB
    image coordinates, 1-based: ``x`` runs along the columns of ``image`` and ``y`` down its rows, so
    ``plot(x, y)`` over ``imshow(image)`` draws the outline (that is how the SYNTHETIC writer fills
    it; see docs/data.md for the caveat on the real files). The mask, not the border, is what the
    pipelines use.
    """

    path: Path | None
    label: int  # 1 meningioma, 2 glioma, 3 pituitary (FIGSHARE_LABELS)
    pid: str  # patient id, e.g. "100360"
    image: np.ndarray  # int16 (H, W), H == W
    mask: np.ndarray  # uint8 (H, W) in {0, 1}
    border: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # float64 (k, 2): (x, y) per point

    @property
    def tumour_type(self) -> str:
        return FIGSHARE_LABELS[self.label]


@dataclass(frozen=True)
class FigshareMeta:
    """What :func:`read_figshare_meta` reads from a slice file without decoding its image."""

    path: Path
    label: int
    pid: str


# ----------------------------------------------------------------------------------------- reading
def _check_container(path: Path) -> None:
    """Refuse, naming ``path``, a missing file, a v5/v7 MAT-file, or anything that is not HDF5."""
    if not path.exists():
        raise DataError("file not found", path=path)
    if not path.is_file():
        raise DataError("not a file", path=path)
    import h5py

    with open(path, "rb") as fh:
        head = fh.read(128)
    if not head:
        raise DataError("empty file (a truncated download?)", path=path)
    if head.startswith(_V5_TEXT):
        raise DataError(
            "a MATLAB v5/v7 MAT-file (header 'MATLAB 5.0 MAT-file'), not v7.3 (HDF5) as the figshare release "
            "ships: re-save it in MATLAB with save(f, 'cjdata', '-v7.3'), or read it with scipy.io.loadmat",
            path=path,
        )
    if not h5py.is_hdf5(path):
        what = "MATLAB 7.3 header but no HDF5 data after it (truncated?)" if head.startswith(_V73_TEXT) else (
            f"not a MATLAB v7.3 (HDF5) MAT-file (starts with {head[:16]!r})")
        raise DataError(what, path=path)


def _open_h5(path: Path):
    import h5py

    _check_container(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"unreadable or truncated HDF5 data ({type(exc).__name__}: {exc})", path=path) from None


def _struct(f, path: Path):
    import h5py

    group = f.get("cjdata")
    if not isinstance(group, h5py.Group):
        found = ", ".join(sorted(f.keys())) or "nothing"
        raise DataError(f"no 'cjdata' struct (the file holds: {found}); not a figshare slice file", path=path)
    return group


def _dataset(group, name: str, path: Path) -> tuple[np.ndarray, bool]:
    """``cjdata.<name>`` as stored (h5py's transposed view) and whether MATLAB marked it empty."""
    import h5py

    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"missing field cjdata.{name}", path=path)
    try:
        data = obj[()]
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cjdata.{name}: unreadable ({type(exc).__name__}: {exc})", path=path) from None
    return np.asarray(data), bool(np.asarray(obj.attrs.get("MATLAB_empty", 0)).any())


def _read_label(group, path: Path) -> int:
    data, empty = _dataset(group, "label", path)
    values = data.reshape(-1)
    if empty or values.size != 1 or values.dtype.kind not in "uif":
        raise DataError(f"cjdata.label must be one number, got {values.size} value(s) of {values.dtype}", path=path)
    value = float(values[0])
    if not value.is_integer() or int(value) not in FIGSHARE_LABELS:
        known = ", ".join(f"{code} {name}" for code, name in FIGSHARE_LABELS.items())
        raise DataError(f"cjdata.label {value:g} not in {set(FIGSHARE_LABELS)} ({known})", path=path)
    return int(value)


def _read_pid(group, path: Path) -> str:
    data, empty = _dataset(group, "PID", path)
    if empty or data.size == 0:
        raise DataError("empty cjdata.PID (patient id)", path=path)
    values = data.reshape(-1)
    if values.dtype.kind in "ui":  # MATLAB char: UTF-16 code units
        pid = "".join(map(chr, values.tolist()))
    elif values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):  # a numeric PID
        pid = "".join(str(int(v)) for v in values)
    elif values.dtype.kind in "SO":
        pid = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in values).decode("utf-8", "replace")
    else:
        raise DataError(f"cjdata.PID has unexpected type {values.dtype}", path=path)
    pid = pid.strip().strip("\x00").strip()
    if not pid:
        raise DataError("empty cjdata.PID (patient id)", path=path)
    return pid


def _read_image(group, path: Path) -> np.ndarray:
    data, _ = _dataset(group, "image", path)
    if data.ndim != 2:
        raise DataError(f"cjdata.image must be 2D, got shape {data.shape}", path=path)
    image = data.T  # column-major MATLAB storage → (rows, columns)
    if image.shape[0] != image.shape[1]:
        raise DataError(f"cjdata.image is {image.shape[0]}×{image.shape[1]}, not square", path=path)
    if image.shape[0] < MIN_SIZE:
        raise DataError(f"cjdata.image is {image.shape[0]}×{image.shape[1]}, smaller than {MIN_SIZE}²", path=path)
    if image.dtype != np.int16:
        if image.dtype.kind not in "uif" or not np.all(np.isfinite(image)):
            raise DataError(f"cjdata.image has type {image.dtype} (or non-finite values); expected int16", path=path)
        info = np.iinfo(np.int16)
        if image.min() < info.min or image.max() > info.max or np.any(np.mod(image, 1) != 0):
            raise DataError(f"cjdata.image ({image.dtype}) holds values that are not int16", path=path)
        image = image.astype(np.int16)
    return np.ascontiguousarray(image)


def _read_mask(group, path: Path, shape: tuple[int, int]) -> np.ndarray:
    data, _ = _dataset(group, "tumorMask", path)
    mask = data.T
    if mask.shape != shape:
        raise DataError(f"cjdata.tumorMask has shape {mask.shape}, the image {shape}", path=path)
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask, dtype=np.uint8)
    bad = mask[(mask != 0) & (mask != 1)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(bad)[:5].astype(float))
        raise DataError(f"cjdata.tumorMask holds values outside {{0, 1}}: {shown}", path=path)
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _read_border(group, path: Path) -> np.ndarray:
    data, empty = _dataset(group, "tumorBorder", path)
    values = np.zeros(0) if empty else data.reshape(-1)  # (1, 2k) and (2k, 1) flatten alike
    if values.dtype.kind not in "uif":
        raise DataError(f"cjdata.tumorBorder has type {values.dtype}; expected numbers", path=path)
    if values.size % 2:
        raise DataError(f"cjdata.tumorBorder has {values.size} values, not x/y pairs", path=path)
    return values.astype(np.float64).reshape(-1, 2)


def read_figshare_mat(path) -> FigshareSlice:
    """Read one figshare slice file (MATLAB v7.3) into a :class:`FigshareSlice`.

    Returns ``image`` int16 (H, W), ``mask`` uint8 (H, W) in {0, 1} (both transposed back from
    MATLAB's column-major storage), ``label`` in {1, 2, 3}, ``pid`` and ``border`` (k, 2).

    Raises:
        DataError: naming the file, when it is missing, empty, a v5/v7 MAT-file, not HDF5, has no
            ``cjdata`` struct or misses a field, when the image is not a square 2D array, the mask's
            shape differs from the image's, the label is not 1, 2 or 3, the mask holds values other
            than 0 and 1, or the PID is empty.
    """
    path = Path(path)
    with _open_h5(path) as f:
        group = _struct(f, path)
        label = _read_label(group, path)
        pid = _read_pid(group, path)
        image = _read_image(group, path)
        mask = _read_mask(group, path, image.shape)
        border = _read_border(group, path)
    return FigshareSlice(path=path, label=label, pid=pid, image=image, mask=mask, border=border)


def read_figshare_meta(path) -> FigshareMeta:
    """Label and patient id of a slice file, reading only those two datasets (about a millisecond)."""
    path = Path(path)
    with _open_h5(path) as f:
        group = _struct(f, path)
        return FigshareMeta(path=path, label=_read_label(group, path), pid=_read_pid(group, path))


def discover_figshare(root) -> list[Path]:
    """Every slice file ``<number>.mat`` below ``root`` (any depth, so the four folders of the release
    work as they unpack), sorted by number. ``cvind.mat``, the README and anything else not named
    ``<number>.mat`` are skipped.

    Raises:
        DataError: ``root`` is missing or not a folder, holds no slice file, or holds the same
            number twice (e.g. an archive unpacked into two places).
    """
    root = Path(root)
    if not root.exists():
        raise DataError("folder not found", path=root)
    if not root.is_dir():
        raise DataError("not a folder (expected the folder holding 1.mat … 3064.mat)", path=root)
    found: dict[int, Path] = {}
    for path in root.rglob("*"):
        match = _SLICE_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        number = int(match.group(1))
        if number in found:
            raise DataError(f"slice {number} found twice: {found[number]} and {path}", path=root)
        found[number] = path
    if not found:
        raise DataError("no figshare slice files (<number>.mat) below this folder", path=root)
    return [found[n] for n in sorted(found)]



# ------------------------------------------------------------------------------------------ splits
def patient_ids(items: Iterable) -> list[str]:
    """The patient id of each item: a :class:`FigshareSlice` / :class:`FigshareMeta` (its ``pid``) or
    a path (read with :func:`read_figshare_meta`, PID and label only)."""
    return [item.pid if hasattr(item, "pid") else read_figshare_meta(item).pid for item in items]


def read_figshare_metas(paths: Iterable, *, progress: bool = False) -> list[FigshareMeta]:
    """:func:`read_figshare_meta` of every slice file (PID and label only), in order."""
    return [read_figshare_meta(p) for p in progress_bar([Path(p) for p in paths], desc="reading patient ids", unit="file",
                                                disable=not progress)]


def read_patient_ids(paths: Iterable, *, progress: bool = False) -> dict[Path, str]:
    """``{path: PID}`` for slice files (:func:`read_figshare_meta`: PID and label only; the keys are
    the paths as given, as :class:`~pathlib.Path`)."""
    return {meta.path: meta.pid for meta in read_figshare_metas(paths, progress=progress)}


def patient_tumour_types(metas: Iterable[FigshareMeta]) -> dict[str, int]:
    """``{PID: label}``: each patient's tumour class, the most frequent among its slices (the
    smallest label on a tie; in the release every patient has one type)."""
    from collections import Counter

    counts: dict[str, Counter] = {}
    for meta in metas:
        counts.setdefault(meta.pid, Counter())[meta.label] += 1
    return {pid: min(c, key=lambda label: (-c[label], label)) for pid, c in counts.items()}


def split_by_patient(slices_meta: Sequence, *, test_fraction: float = 0.2, val_fraction: float = 0.15,
                     seed: int = 0) -> dict[str, list[Path]]:
    """Split slice files into ``train`` / ``val`` / ``test`` by patient (PID), never by slice.

    ``slices_meta``: paths, :class:`FigshareMeta` or :class:`FigshareSlice` (with a ``path``). The
    patients are split by :func:`brats_keras.data.splits.split_cases` (fractions of patients, seeded,
    independent of order); each part lists its files in the input order.
    """
    items = list(slices_meta)
    if any(hasattr(item, "pid") and item.path is None for item in items):
        raise ValueError("slices_meta: every FigshareSlice needs a path (write it first)")
    pids = patient_ids(items)
    paths = [Path(item.path) if hasattr(item, "pid") else Path(item) for item in items]
    parts = split_cases(sorted(set(pids)), test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    part_of = {pid: name for name, ids in parts.items() for pid in ids}
    out: dict[str, list[Path]] = {name: [] for name in SPLIT_NAMES}
    for pid, path in zip(pids, paths):
        out[part_of[pid]].append(path)
    return out
