"""Discover and read BraTS 2020 / 2021 training cases, validating every file.

Every problem is raised as :class:`brats_keras.errors.DataError` whose message names the case, the
file and the problem: a missing modality, modalities of different shapes, NaN/Inf voxels, a file
that cannot be decoded (truncated download, not NIfTI), labels outside {0, 1, 2, 4}, or a label file
that uses 3 for enhancing tumour (the BraTS 2023 convention), which would otherwise be silently
trained as the wrong class.

Tensor layout of what :func:`load_case` returns: images ``(H, W, D, C)`` float32 in the order of
the requested modalities (BraTS: 240×240×155, axial slices along the last axis), label ``(H, W, D)``
uint8 with the original BraTS values {0, 1, 2, 4}.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from brats_keras.data.layout import (
    BRATS_LABELS,
    LABEL_KEY,
    LAYOUTS,
    MISNAMED_LABELS,
    MODALITIES,
    NIFTI_SUFFIXES,
    DatasetLayout,
)
from brats_keras.errors import DataError
from brats_keras.io import atomic_path
from brats_keras.labels import BRATS

_DECODE_ERRORS = (
    nib.filebasedimages.ImageFileError,
    EOFError,
    OSError,
    zlib.error,
    gzip.BadGzipFile,
    ValueError,
)


@dataclass(frozen=True)
class CaseFiles:
    """The files of one patient: image path per modality and the label path (or None)."""

    case_id: str
    folder: Path
    images: dict[str, Path]
    label: Path | None
    layout: str

    def files(self) -> list[Path]:
        return [*self.images.values(), *([self.label] if self.label is not None else [])]

    def fingerprint(self) -> list[list]:
        """(name, size, mtime_ns) of every file: changes whenever a source file is replaced."""
        out = []
        for path in self.files():
            st = path.stat()
            out.append([path.name, st.st_size, st.st_mtime_ns])
        return out


@dataclass
class Case:
    """One loaded, validated case."""

    case_id: str
    image: np.ndarray  # (H, W, D, C) float32
    modalities: tuple[str, ...]
    label: np.ndarray | None  # (H, W, D) uint8, BraTS values {0, 1, 2, 4}
    affine: np.ndarray
    spacing: tuple[float, float, float]
    files: CaseFiles = field(repr=False)
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    """Header of the first loaded modality: the grid (shape, affine, units) predictions are written on."""


def detect_layout(folder_name: str) -> DatasetLayout | None:
    for layout in LAYOUTS.values():
        if layout.matches(folder_name):
            return layout
    return None


def _find_nifti(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def case_files(folder: str | Path, *, modalities: Sequence[str] = MODALITIES, require_label: bool = True) -> CaseFiles:
    """Locate the files of one case folder (``.nii`` or ``.nii.gz``); raise if any is missing."""
    folder = Path(folder)
    case_id = folder.name
    layout = detect_layout(case_id)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"modalities: unknown {unknown}; valid are {list(MODALITIES)}")
    images: dict[str, Path] = {}
    for modality in modalities:
        found = _find_nifti(folder, f"{case_id}_{modality}")
        if found is None:
            raise DataError(
                f"missing {modality} image (expected {case_id}_{modality}.nii.gz or .nii)",
                case=case_id,
                path=folder,
            )
        images[modality] = found
    label = _find_nifti(folder, f"{case_id}_{LABEL_KEY}")
    if label is None and case_id in MISNAMED_LABELS and (folder / MISNAMED_LABELS[case_id]).is_file():
        label = folder / MISNAMED_LABELS[case_id]
    if label is None and require_label:
        raise DataError(
            f"missing label file (expected {case_id}_{LABEL_KEY}.nii.gz or .nii)", case=case_id, path=folder
        )
    return CaseFiles(case_id, folder, images, label, layout.name if layout else "unknown")


def case_folders(root: Path, depth: int = 2) -> list[Path]:
    """Case folders directly under ``root`` or, as in the Kaggle copies
    (``BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/...``), up to ``depth`` levels below."""
    found = sorted(p for p in root.iterdir() if p.is_dir() and detect_layout(p.name) is not None)
    if found or depth == 0:
        return found
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(case_folders(sub, depth - 1))
    return found


def discover_cases(
    root: str | Path, *, modalities: Sequence[str] = MODALITIES, require_label: bool = True
) -> list[CaseFiles]:
    """All BraTS 2020 / 2021 cases under ``root``, sorted by case id, each with its files checked."""
    return [case_files(f, modalities=modalities, require_label=require_label) for f in _case_folders_of(root)]


def _case_folders_of(root: str | Path, *, allow_case_folder: bool = False) -> list[Path]:
    """:func:`case_folders` of ``root`` (or ``[root]`` itself when ``allow_case_folder`` and it is a
    case folder); a missing folder or one without cases is a :class:`DataError`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("data directory does not exist or is not a directory", path=root)
    folders = [root] if allow_case_folder and detect_layout(root.name) is not None else case_folders(root)
    if not folders:
        patterns = " or ".join(layout.case_regex for layout in LAYOUTS.values())
        raise DataError(f"no BraTS case folders found (folder names matching {patterns})", path=root)
    return folders


def find_cases(root: str | Path, *, modalities: Sequence[str] = MODALITIES,
               require_label: bool = False) -> tuple[list[CaseFiles], dict[str, str]]:
    """Like :func:`discover_cases` for tools that go on past a broken case (predict, correction):
    ``(cases, {case_id: problem})``. ``root`` may also be a single case folder."""
    cases, failed = [], {}
    for folder in _case_folders_of(root, allow_case_folder=True):
        try:
            cases.append(case_files(folder, modalities=modalities, require_label=require_label))
        except DataError as exc:
            failed[folder.name] = str(exc)
    return cases, failed


def _load_nifti(path: Path, case_id: str) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except _DECODE_ERRORS as exc:
        raise DataError(f"unreadable NIfTI file ({type(exc).__name__}: {exc})", case=case_id, path=path) from None
    if len(img.shape) != 3:
        raise DataError(f"expected a 3D volume, got shape {tuple(img.shape)}", case=case_id, path=path)
    return img


def _decode(img: nib.Nifti1Image, path: Path, case_id: str, dtype=None) -> np.ndarray:
    try:
        if dtype is None:
            return np.asanyarray(img.dataobj)
        return np.asarray(img.dataobj, dtype=dtype)
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"unreadable or truncated NIfTI data ({type(exc).__name__}: {exc})", case=case_id, path=path
        ) from None


def read_image(path: str | Path, *, case_id: str = "?") -> np.ndarray:
    """Read one image volume as float32, rejecting NaN/Inf voxels."""
    path = Path(path)
    return _image_data(_load_nifti(path, case_id), path, case_id)


def _image_data(img: nib.Nifti1Image, path: Path, case_id: str) -> np.ndarray:
    data = _decode(img, path, case_id, np.float32)
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(f"{bad} non-finite voxels (NaN/Inf)", case=case_id, path=path)
    return data


def validate_labels(label: np.ndarray, *, case_id: str = "?", path: str | Path | None = None) -> np.ndarray:
    """Check a label volume holds BraTS values {0, 1, 2, 4} and return it as uint8.

    A file holding 3 but no 4 uses the BraTS 2023 convention (3 = enhancing): training it as
    class 3 after the usual 4 → 3 mapping would look right and be wrong for any 2017–2021 reader,
    so it is refused with its own message.
    """
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError("label file holds NaN/Inf", case=case_id, path=path)
        if not np.array_equal(arr, np.round(arr)):
            raise DataError("label file holds non-integer values", case=case_id, path=path)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        values = sorted(set(np.unique(arr).tolist()) - set(BRATS_LABELS))
        raise DataError(f"labels {values[:8]} outside {{0, 1, 2, 4}}", case=case_id, path=path)
    arr = arr.astype(np.uint8, copy=False)
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    extra = sorted(set(present.tolist()) - set(BRATS_LABELS))
    if extra == [3] and 4 not in present:
        raise DataError(
            f"label 3 present and no label 4: this looks like the BraTS 2023 convention (3 = "
            f"{BRATS.by_key('ET').title}); BraTS 2020/2021 use 4 — convert 3 → 4 before training",
            case=case_id,
            path=path,
        )
    if extra:
        raise DataError(f"labels {extra} outside {{0, 1, 2, 4}}", case=case_id, path=path)
    return arr


def read_label(path: str | Path, *, case_id: str = "?") -> np.ndarray:
    path = Path(path)
    img = _load_nifti(path, case_id)
    return validate_labels(_decode(img, path, case_id), case_id=case_id, path=path)


def read_label_with_grid(path: str | Path, *, case_id: str = "?") -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A validated label volume (BraTS values) with its voxel size (mm) and affine."""
    path = Path(path)
    img = _load_nifti(path, case_id)
    label = validate_labels(_decode(img, path, case_id), case_id=case_id, path=path)
    return label, tuple(float(z) for z in img.header.get_zooms()[:3]), np.asarray(img.affine)


def load_label(files: CaseFiles) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The validated label volume of a case with its voxel size (mm) and affine, without decoding
    any image (what whole-volume scoring needs)."""
    if files.label is None:
        raise DataError("no label file", case=files.case_id, path=files.folder)
    return read_label_with_grid(files.label, case_id=files.case_id)


def load_case(
    files: CaseFiles, modalities: Sequence[str] | None = None, *, with_label: bool = True
) -> Case:
    """Load and validate the requested modalities (default: all found) and the label."""
    modalities = tuple(modalities or files.images.keys())
    cid = files.case_id
    volumes = []
    reference: tuple[str, tuple[int, ...]] | None = None
    affine = header = None
    spacing = None
    for modality in modalities:
        if modality not in files.images:
            raise DataError(f"modality {modality!r} not available for this case", case=cid, path=files.folder)
        path = files.images[modality]
        img = _load_nifti(path, cid)
        if reference is None:
            reference = (modality, tuple(img.shape))
            affine = img.affine
            header = img.header
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
        elif tuple(img.shape) != reference[1]:
            raise DataError(
                f"shape {tuple(img.shape)} differs from {reference[0]}'s {reference[1]}", case=cid, path=path
            )
        volumes.append(_image_data(img, path, cid))
    label = None
    if with_label:
        if files.label is None:
            raise DataError("no label file", case=cid, path=files.folder)
        label_img = _load_nifti(files.label, cid)
        if reference is not None and tuple(label_img.shape) != reference[1]:
            raise DataError(
                f"shape {tuple(label_img.shape)} differs from {reference[0]}'s {reference[1]}",
                case=cid,
                path=files.label,
            )
        label = validate_labels(_decode(label_img, files.label, cid), case_id=cid, path=files.label)
    image = np.stack(volumes, axis=-1) if volumes else np.zeros((0,), np.float32)
    return Case(cid, image, modalities, label, affine, spacing, files, header)


def write_nifti_like(path: str | Path, array: np.ndarray, affine: np.ndarray, header=None, *, dtype=np.float32,
                     description: str | None = None) -> Path:
    """Write ``array`` to ``path`` (``.nii.gz`` or ``.nii``) atomically on the grid of ``affine`` and
    ``header`` (a source image's: shape, qform/sform codes, voxel size, units), stored as ``dtype``
    without intensity scaling, so readers get ``array`` back exactly. The gzip header carries no
    time stamp or name: identical arrays give identical files."""
    path = Path(path)
    header = nib.Nifti1Header() if header is None else header.copy()
    img = nib.Nifti1Image(np.asarray(array).astype(dtype, copy=False), affine, header)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if description is not None:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_label_nifti(path: str | Path, labels: np.ndarray, affine: np.ndarray, header=None, *,
                      description: str | None = None) -> Path:
    """:func:`write_nifti_like` for a 3D BraTS label volume, as uint8, so every viewer and BraTS
    scorer reads {0, 1, 2, 4} back."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D volume, got shape {labels.shape}")
    return write_nifti_like(path, labels, affine, header, dtype=np.uint8, description=description)
