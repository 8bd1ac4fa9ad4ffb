"""Paper 2's 3D pre-processing (the widely used BraTS-2020 3D reference pipeline) and its loader.

Reference steps, per case (REPLICATION.md, paper 2):

1. FLAIR, T1ce, T2 each scaled with ``MinMaxScaler().fit_transform(v.reshape(-1, v.shape[-1]))``:
   the reshape makes every axial slice a column, so **each axial slice is min-max scaled on its
   own** (reproduced exactly by ``scaling="per_slice"``; ``"per_volume"`` is offered as an option);
2. label to uint8, 4 → 3;
3. channels stacked in the order (FLAIR, T1ce, T2);
4. crop ``[56:184, 56:184, 13:141]`` → 128³;
5. keep the case only if more than 1 % of the cropped voxels are tumour
   (``1 - counts[0] / counts.sum() > 0.01``);
6. one-hot with 4 classes.

Storage differs from the reference only in representation: images are saved as float32 (the
reference saves float64 from ``get_fdata``) and masks as uint8 class indices, one-hot encoded when
batches are built — a quarter of the disk and identical values to float32 precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_keras.data.brats import CaseFiles, discover_cases, load_case
from brats_keras.data.layout import NUM_CLASSES, to_class_indices
from brats_keras.errors import DataError
from brats_keras.io import atomic_save_npy, atomic_write_json, read_json_or_none
from brats_keras.progress import progress_bar

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
REFERENCE_CROP: tuple[tuple[int, int], ...] = ((56, 184), (56, 184), (13, 141))
SCALINGS = ("per_slice", "per_volume")


@dataclass(frozen=True)
class Preprocess3DSettings:
    """Paper 2 pre-processing settings (defaults = the reference pipeline)."""

    modalities: tuple[str, ...] = ("flair", "t1ce", "t2")
    """Channel order of the saved arrays (reference: FLAIR, T1ce, T2)."""
    scaling: str = "per_slice"
    """``per_slice``: MinMaxScaler on ``reshape(-1, depth)`` as the reference; ``per_volume``."""
    crop: tuple[tuple[int, int], ...] = REFERENCE_CROP
    """``((x0, x1), (y0, y1), (z0, z1))`` half-open voxel ranges."""
    min_tumour_fraction: float | None = 0.01
    """Keep a case only if its cropped label has more than this fraction of non-zero voxels;
    ``None`` keeps every case (an external test cohort must not be selected by its labels)."""

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "crop", tuple(tuple(int(v) for v in r) for r in self.crop))
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling: {self.scaling!r} not in {SCALINGS}")
        if len(self.crop) != 3 or any(lo < 0 or hi <= lo for lo, hi in self.crop):
            raise ValueError(f"crop: need three (start, stop) ranges with 0 <= start < stop, got {self.crop}")
        if self.min_tumour_fraction is not None and not 0.0 <= self.min_tumour_fraction < 1.0:
            raise ValueError(f"min_tumour_fraction must be in [0, 1), got {self.min_tumour_fraction}")

    def to_json(self) -> dict:
        return {**asdict(self), "modalities": list(self.modalities), "crop": [list(r) for r in self.crop]}


def parse_crop(text: str) -> tuple[tuple[int, int], ...]:
    """``"56:184,56:184,13:141"`` → ``((56, 184), (56, 184), (13, 141))``."""
    try:
        ranges = tuple(tuple(int(v) for v in part.split(":")) for part in text.split(","))
    except ValueError:
        ranges = ()
    if len(ranges) != 3 or any(len(r) != 2 for r in ranges):
        raise ValueError(f"crop {text!r}: expected three start:stop ranges, e.g. 56:184,56:184,13:141")
    return ranges  # type: ignore[return-value]


def minmax_per_slice(volume: np.ndarray) -> np.ndarray:
    """The reference's ``MinMaxScaler().fit_transform(v.reshape(-1, v.shape[-1]))``: every index of
    the last axis scaled to [0, 1] on its own; a constant slice becomes 0 (sklearn's zero-range rule)."""
    v = volume.astype(np.float32, copy=False)
    axes = tuple(range(v.ndim - 1))
    lo = v.min(axis=axes)
    rng = v.max(axis=axes) - lo
    return (v - lo) / np.where(rng == 0, 1.0, rng).astype(np.float32)


def minmax_per_volume(volume: np.ndarray) -> np.ndarray:
    v = volume.astype(np.float32, copy=False)
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo if hi > lo else 1.0)


def scale_channels(image: np.ndarray, scaling: str) -> np.ndarray:
    """Scale every channel of a whole ``(X, Y, Z, C)`` volume as the reference does (``scaling``:
    ``per_slice`` or ``per_volume``), before any crop: training crops the result, whole-volume
    inference slides windows over it."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling: {scaling!r} not in {SCALINGS}")
    scale = minmax_per_slice if scaling == "per_slice" else minmax_per_volume
    return np.stack([scale(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def preprocess_case_3d(files: CaseFiles, settings: Preprocess3DSettings) -> tuple[np.ndarray, np.ndarray, float]:
    """One case → ``(image (X, Y, Z, C) float32, mask (X, Y, Z) uint8 classes, tumour fraction)``."""
    case = load_case(files, settings.modalities, with_label=True)
    shape = case.image.shape[:3]
    if any(hi > n for (_, hi), n in zip(settings.crop, shape)):
        raise DataError(f"crop {settings.crop} does not fit the volume shape {shape}", case=files.case_id, path=files.folder)
    window = tuple(slice(lo, hi) for lo, hi in settings.crop)
    image = scale_channels(case.image, settings.scaling)[window]
    mask = to_class_indices(case.label)[window]
    tumour_fraction = float(np.count_nonzero(mask)) / mask.size
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), tumour_fraction


def preprocess_dataset_3d(
    data_dir: str | Path,
    out_dir: str | Path,
    settings: Preprocess3DSettings = Preprocess3DSettings(),
    *,
    progress: bool = True,
    cases: Sequence[CaseFiles] | None = None,
) -> dict:
    """Pre-process every case of ``data_dir`` into ``out_dir/{images,masks}/<case>.npy`` and
    ``out_dir/manifest.json`` (kept cases with their tumour fraction, skipped cases with the reason).

    The manifest is rewritten after every case, so an interrupted run keeps what it finished and a
    re-run skips cases whose sources and settings are unchanged. ``cases``: the cases of
    ``data_dir`` when the caller has already discovered them (the folder is not walked again).
    """
    out_dir = Path(out_dir)
    if cases is None:
        cases = discover_cases(data_dir, modalities=settings.modalities)
    manifest_path = out_dir / MANIFEST_NAME
    previous = read_json_or_none(manifest_path)
    done: dict[str, dict] = {}
    if previous and previous.get("settings") == settings.to_json() and previous.get("format") == MANIFEST_FORMAT:
        for entry in [*previous.get("kept", []), *previous.get("skipped", [])]:
            done[entry["case_id"]] = entry
    manifest = {
        "format": MANIFEST_FORMAT,
        "data_dir": str(Path(data_dir).resolve()),
        "settings": settings.to_json(),
        "kept": [],
        "skipped": [],
    }
    for files in progress_bar(cases, desc="pre-processing 3D", unit="case", disable=not progress):
        entry = done.get(files.case_id)
        if not (entry and entry.get("sources") == files.fingerprint() and _outputs_exist(out_dir, entry)):
            entry = _process_one(files, settings, out_dir)
        manifest["kept" if entry["kept"] else "skipped"].append(entry)
        atomic_write_json(manifest_path, manifest)
    atomic_write_json(manifest_path, manifest)
    return manifest


def _outputs_exist(out_dir: Path, entry: dict) -> bool:
    return not entry["kept"] or ((out_dir / entry["image"]).is_file() and (out_dir / entry["mask"]).is_file())


def _process_one(files: CaseFiles, settings: Preprocess3DSettings, out_dir: Path) -> dict:
    image, mask, fraction = preprocess_case_3d(files, settings)
    entry = {"case_id": files.case_id, "tumour_fraction": round(fraction, 6), "sources": files.fingerprint()}
    if settings.min_tumour_fraction is None or fraction > settings.min_tumour_fraction:
        entry.update(kept=True, image=f"images/{files.case_id}.npy", mask=f"masks/{files.case_id}.npy")
        atomic_save_npy(out_dir / entry["image"], image)
        atomic_save_npy(out_dir / entry["mask"], mask)
    else:
        entry.update(
            kept=False,
            reason=f"tumour fraction {fraction:.4%} <= {settings.min_tumour_fraction:.0%} of the cropped voxels",
        )
    return entry


class VolumeIndex:
    """Random access to pre-processed 3D cases: ``gather(indices) → (x, y)``.

    ``x``: ``(B, X, Y, Z, C)`` float32; ``y``: ``(B, X, Y, Z)`` uint8 class indices.
    """

    def __init__(self, out_dir: str | Path, case_ids: Sequence[str] | None = None, num_classes: int = NUM_CLASSES):
        out_dir = Path(out_dir)
        manifest = read_json_or_none(out_dir / MANIFEST_NAME)
        if manifest is None:
            raise DataError(f"no readable {MANIFEST_NAME}; run data_prep/preprocess_3d.py first", path=out_dir)
        kept = {e["case_id"]: e for e in manifest["kept"]}
        ids = list(kept) if case_ids is None else list(case_ids)
        missing = [c for c in ids if c not in kept]
        if missing:
            raise DataError(f"cases not among the kept pre-processed cases: {missing[:5]}", path=out_dir / MANIFEST_NAME)
        if not ids:
            raise DataError("no pre-processed cases to load", path=out_dir / MANIFEST_NAME)
        self.case_ids = ids
        self.num_classes = num_classes
        self.image_paths = [out_dir / kept[c]["image"] for c in ids]
        self.mask_paths = [out_dir / kept[c]["mask"] for c in ids]
        first = np.load(self.image_paths[0], mmap_mode="r")
        self.x_shape = tuple(first.shape)
        self.y_shape = tuple(first.shape[:-1])

    def __len__(self) -> int:
        return len(self.case_ids)

    def _read(self, path: Path, shape: tuple[int, ...], dtype) -> np.ndarray:
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable array ({exc})", path=path) from None
        if arr.shape != shape or arr.dtype != dtype:
            raise DataError(f"array {arr.shape} {arr.dtype}, expected {shape} {np.dtype(dtype)}", path=path)
        return arr

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        x = np.empty((len(indices), *self.x_shape), np.float32)
        y = np.empty((len(indices), *self.y_shape), np.uint8)
        for k, i in enumerate(indices):
            x[k] = self._read(self.image_paths[i], self.x_shape, np.float32)
            y[k] = self._read(self.mask_paths[i], self.y_shape, np.uint8)
        return x, y
