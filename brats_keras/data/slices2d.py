"""2D axial-slice preparation with an on-disk, memory-mapped cache (papers 1 and 3).

Per case: axial slices ``[start, start + count)`` of the chosen modalities, each channel normalised
over its whole volume, resized (bilinear, pixel-centre aligned like ``cv2.resize`` /
``tf.image.resize``) to ``size × size``; the label mapped 4 → 3 and resized with nearest neighbour,
so one-hot targets stay hard {0, 1}.

Decoding a ``.nii.gz`` case costs far more than training on its slices, so each case is decoded
once into ``<cache>/slices2d/<settings key>/<case>.{x,y}.npy`` (x: ``(n, S, S, C)`` float32,
y: ``(n, S, S)`` uint8 class indices) plus a JSON record of the source files' sizes and mtimes.
The key hashes the settings, so changing any setting uses a fresh cache; replacing a source file
rebuilds that case. Training reads the arrays memory-mapped, so memory stays bounded by the batch,
not the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_keras.data.brats import CaseFiles, load_case
from brats_keras.data.layout import MODALITIES, NUM_CLASSES, to_class_indices
from brats_keras.errors import DataError
from brats_keras.io import atomic_save_npy, atomic_write_json, default_cache_dir
from brats_keras.progress import progress_bar

CACHE_FORMAT_VERSION = 1
NORMALIZATIONS = ("max", "zscore", "none")


@dataclass(frozen=True)
class SliceSettings:
    """What a 2D slice cache holds. Defaults: paper 1 (REPLICATION.md, choices)."""

    modalities: tuple[str, ...] = ("flair", "t1ce")
    """Channels, in order (paper 1: FLAIR + T1ce; paper 3: all four)."""
    start: int = 22
    """First axial slice (paper 1 reference pipeline: 22)."""
    count: int = 100
    """Number of axial slices per case (paper 1: 100, i.e. 22..121)."""
    step: int = 1
    """Spacing of the chosen slices (1: consecutive). The window ``start .. start + count·step`` is
    what whole-volume inference predicts, every slice of it."""
    size: int = 128
    """Output height and width (paper 1: 240 → 128)."""
    normalization: str = "max"
    """``max``: each channel divided by its volume maximum (reference pipeline's scaling, per
    channel); ``zscore``: mean 0 / std 1 over the brain (non-zero) voxels, background 0; ``none``."""

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"modalities: {list(self.modalities)} invalid; choose from {list(MODALITIES)}")
        if self.start < 0 or self.count < 1 or self.step < 1:
            raise ValueError(
                f"start/count/step: need start >= 0, count >= 1, step >= 1; got {self.start}, {self.count}, {self.step}")
        if self.size < 1:
            raise ValueError(f"size: must be positive, got {self.size}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization: {self.normalization!r} not in {NORMALIZATIONS}")

    @property
    def channels(self) -> int:
        return len(self.modalities)

    @property
    def stop(self) -> int:
        """One past the last slice of the window."""
        return self.start + (self.count - 1) * self.step + 1

    def key(self) -> str:
        payload = json.dumps({"version": CACHE_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]


def linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out, in)`` matrix of 1D linear interpolation with pixel-centre alignment
    (source coordinate ``(i + 0.5) · in/out − 0.5``, clamped), as ``cv2.INTER_LINEAR``."""
    scale = in_size / out_size
    src = np.clip((np.arange(out_size) + 0.5) * scale - 0.5, 0, in_size - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    mat = np.zeros((out_size, in_size), np.float32)
    np.add.at(mat, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(mat, (np.arange(out_size), hi), frac)
    return mat


def nearest_resize_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing (pixel-centre aligned)."""
    return np.minimum(np.floor((np.arange(out_size) + 0.5) * in_size / out_size).astype(int), in_size - 1)


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(n, H, W, C)`` to ``(n, h, w, C)`` float32 (two matrix products);
    ``size`` is ``(h, w)`` or one side of a square."""
    _, h, w, _ = images.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    rows, cols = linear_resize_matrix(h, out_h), linear_resize_matrix(w, out_w)
    out = np.einsum("oh,nhwc->nowc", rows, images.astype(np.float32, copy=False), optimize=True)
    return np.einsum("pw,nowc->nopc", cols, out, optimize=True).astype(np.float32, copy=False)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of ``(n, H, W)`` to ``(n, size, size)``."""
    _, h, w = labels.shape
    return labels[:, nearest_resize_index(h, size)][:, :, nearest_resize_index(w, size)]


def normalization_stats(image: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(offset, scale)`` of ``(H, W, D, C)`` over the whole volume; the normalised
    value is ``(v - offset) / scale`` on brain (non-zero) voxels and 0 stays 0 for ``zscore``."""
    channels = image.shape[-1]
    offset, scale = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    for c in range(channels):
        chan = image[..., c]
        if method == "max":
            peak = float(chan.max(initial=0.0))
            scale[c] = peak if peak > 0 else 1.0
        elif method == "zscore":
            values = chan[chan != 0]
            if values.size:
                offset[c], scale[c] = values.mean(), max(float(values.std()), 1e-6)
        elif method != "none":
            raise ValueError(f"normalization: {method!r} not in {NORMALIZATIONS}")
    return offset, scale


def normalize_volume(image: np.ndarray, method: str, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Normalise each channel of ``(..., C)`` (float32, new array) with ``stats`` computed over the
    whole volume (default: over ``image`` itself). Background (0) stays 0 under ``zscore``."""
    offset, scale = stats if stats is not None else normalization_stats(image, method)
    out = (image.astype(np.float32, copy=False) - offset) / scale
    if method == "zscore":
        out[image == 0] = 0.0
    return out.astype(np.float32, copy=False)


def prepare_case_slices(files: CaseFiles, settings: SliceSettings) -> tuple[np.ndarray, np.ndarray]:
    """Decode one case into ``x (n, S, S, C)`` float32 and ``y (n, S, S)`` uint8 class indices."""
    case = load_case(files, settings.modalities, with_label=True)
    depth = case.image.shape[2]
    if settings.stop > depth:
        raise DataError(
            f"volume has {depth} axial slices; slices {settings.start}..{settings.stop - 1} were requested",
            case=files.case_id,
            path=files.folder,
        )
    chosen = slice(settings.start, settings.stop, settings.step)
    stats = normalization_stats(case.image, settings.normalization)
    image = normalize_volume(case.image[:, :, chosen], settings.normalization, stats)
    x = resize_images(np.transpose(image, (2, 0, 1, 3)), settings.size)
    labels = to_class_indices(case.label[:, :, chosen])
    y = resize_labels(np.ascontiguousarray(np.transpose(labels, (2, 0, 1))), settings.size)
    return x, y


@dataclass(frozen=True)
class CachedCase:
    case_id: str
    x_path: Path
    y_path: Path
    num_slices: int


class SliceCache:
    """Decode-once cache of prepared slices, one folder per settings key."""

    def __init__(self, settings: SliceSettings, cache_dir: str | Path | None = None):
        self.settings = settings
        self.root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dir = self.root / "slices2d" / settings.key()

    def _paths(self, case_id: str) -> tuple[Path, Path, Path]:
        return (self.dir / f"{case_id}.x.npy", self.dir / f"{case_id}.y.npy", self.dir / f"{case_id}.json")

    def lookup(self, files: CaseFiles) -> CachedCase | None:
        """The cached entry if it exists and was built from the current source files."""
        x_path, y_path, meta_path = self._paths(files.case_id)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("sources") != files.fingerprint() or not (x_path.is_file() and y_path.is_file()):
            return None
        return CachedCase(files.case_id, x_path, y_path, int(meta["num_slices"]))

    def build(self, files: CaseFiles) -> CachedCase:
        x, y = prepare_case_slices(files, self.settings)
        x_path, y_path, meta_path = self._paths(files.case_id)
        atomic_save_npy(x_path, x)
        atomic_save_npy(y_path, y)
        # The JSON record is written last: it is what marks the entry valid.
        atomic_write_json(
            meta_path,
            {
                "case_id": files.case_id,
                "settings": asdict(self.settings),
                "sources": files.fingerprint(),
                "num_slices": int(x.shape[0]),
            },
        )
        return CachedCase(files.case_id, x_path, y_path, int(x.shape[0]))

    def ensure(
        self, cases: Sequence[CaseFiles], *, workers: int | None = None, progress: bool = True
    ) -> list[CachedCase]:
        """Entries for ``cases`` in order, decoding only the missing or stale ones (in threads:
        gzip inflation and NumPy release the GIL)."""
        entries: list[CachedCase | None] = [self.lookup(f) for f in cases]
        todo = [i for i, e in enumerate(entries) if e is None]
        if todo:
            workers = workers or min(4, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=workers) as pool, progress_bar(
                total=len(todo), desc="caching 2D slices", unit="case", disable=not progress
            ) as bar:
                for i, entry in zip(todo, pool.map(lambda j: self.build(cases[j]), todo)):
                    entries[i] = entry
                    bar.update(1)
        return entries  # type: ignore[return-value]


class SliceIndex:
    """Random access to the slices of cached cases: ``gather(indices) → (x, y)``.

    ``x``: ``(B, S, S, C)`` float32; ``y``: ``(B, S, S)`` uint8 class indices. The arrays are
    memory-mapped; only the requested slices are copied.
    """

    def __init__(self, entries: Sequence[CachedCase], num_classes: int = NUM_CLASSES):
        if not entries:
            raise ValueError("entries: no cached cases")
        self.entries = list(entries)
        self.num_classes = num_classes
        self._x = [np.load(e.x_path, mmap_mode="r") for e in self.entries]
        self._y = [np.load(e.y_path, mmap_mode="r") for e in self.entries]
        counts = np.array([e.num_slices for e in self.entries])
        self.case_of = np.repeat(np.arange(len(self.entries)), counts).astype(np.int32)
        self.slice_of = np.concatenate([np.arange(n) for n in counts]).astype(np.int32)
        self.x_shape = tuple(self._x[0].shape[1:])
        self.y_shape = tuple(self._y[0].shape[1:])

    def __len__(self) -> int:
        return len(self.case_of)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        x = np.empty((len(indices), *self.x_shape), np.float32)
        y = np.empty((len(indices), *self.y_shape), np.uint8)
        for k, i in enumerate(indices):
            c, s = self.case_of[i], self.slice_of[i]
            x[k] = self._x[c][s]
            y[k] = self._y[c][s]
        return x, y
