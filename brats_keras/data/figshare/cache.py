"""Preparing the figshare set for training: normalised, resized arrays decoded once into a cache
(:class:`FigshareCache`) and random access to them (:class:`FigshareIndex`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_keras.data.figshare.reader import MIN_SIZE, FigshareSlice, read_figshare_mat
from brats_keras.data.prepared import PreparedArrayCache, PreparedArrays, PreparedIndex
from brats_keras.data.slices2d import nearest_resize_index, resize_images

NORMALIZATIONS = ("minmax", "zscore", "none")


# ------------------------------------------------------------------------------------- preparation
CACHE_FORMAT_VERSION = 2


@dataclass(frozen=True)
class FigshareSettings:
    """What a prepared figshare array set holds. Defaults: paper 4 (REPLICATION.md, choices)."""

    size: int = 256
    """Output height and width (paper 4, choice: 512 → 256)."""
    normalization: str = "minmax"
    """Per image. ``minmax``: the 0.5th and 99.5th percentiles of the image's intensities map to 0 and 1,
    clipped to [0, 1] (a few hot pixels do not compress the contrast); ``zscore``: mean 0, standard
    deviation 1 over the whole image; ``none``: raw intensities as float32."""

    def __post_init__(self):
        if int(self.size) < MIN_SIZE:
            raise ValueError(f"size: must be ≥ {MIN_SIZE}, got {self.size}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization: {self.normalization!r} not in {NORMALIZATIONS}")


def normalize_image(image: np.ndarray, method: str) -> np.ndarray:
    """One image, float32, normalised by ``method`` (see :attr:`FigshareSettings.normalization`)."""
    x = np.asarray(image, np.float32)
    if method == "minmax":
        lo, hi = np.percentile(x, (0.5, 99.5))
        if hi <= lo:
            return np.zeros_like(x)
        return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    if method == "zscore":
        return (x - np.float32(x.mean())) / np.float32(max(float(x.std()), 1e-6))
    if method == "none":
        return x
    raise ValueError(f"normalization: {method!r} not in {NORMALIZATIONS}")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square float image (H, H) to (size, size): area averaging when ``size`` divides H
    (512 → 256), else bilinear with pixel-centre alignment (data.slices2d.resize_images)."""
    h = image.shape[0]
    if h == size:
        return image.astype(np.float32, copy=True)
    if h % size == 0:
        f = h // size
        return image.reshape(size, f, size, f).mean(axis=(1, 3), dtype=np.float32)
    return resize_images(image[None, :, :, None], size)[0, :, :, 0]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square mask (H, H) to (size, size), uint8."""
    index = nearest_resize_index(mask.shape[0], size)
    return np.ascontiguousarray(mask[index][:, index], dtype=np.uint8)


def prepare_figshare_slice(slice_: FigshareSlice, settings: FigshareSettings) -> tuple[np.ndarray, np.ndarray]:
    """``x`` float32 (S, S, 1) normalised then resized, ``y`` uint8 (S, S) in {0, 1} (tumour)."""
    x = resize_square(normalize_image(slice_.image, settings.normalization), settings.size)
    return x[:, :, None], resize_mask(slice_.mask, settings.size)


@dataclass(frozen=True)
class FigshareArrays:
    """Prepared arrays on disk (:meth:`FigshareCache.ensure`): ``x_path`` (N, S, S, 1) float32,
    ``y_path`` (N, S, S) uint8, and per item its source file, patient id and tumour class (all read
    from the :class:`~brats_keras.data.prepared.PreparedArrays` record)."""

    prepared: PreparedArrays
    settings: FigshareSettings

    @property
    def folder(self) -> Path:
        return self.prepared.folder

    @property
    def x_path(self) -> Path:
        return self.prepared.arrays["x"]

    @property
    def y_path(self) -> Path:
        return self.prepared.arrays["y"]

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.prepared.paths

    @property
    def pids(self) -> tuple[str, ...]:
        return tuple(r["pid"] for r in self.prepared.records)

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(int(r["label"]) for r in self.prepared.records)


class FigshareCache:
    """Decode-once cache of prepared figshare slices: ``<cache>/figshare/<key>/{x,y}.npy`` + ``meta.json``
    (:class:`brats_keras.data.prepared.PreparedArrayCache`; a bad file stops the build).

    ``<key>`` hashes the settings and the list of files (resolved paths, in order), so another size,
    normalisation or file list uses another folder. ``meta.json`` records each file's size and mtime
    and is written last; when it is missing or any file changed, the arrays are rebuilt (each array
    written to a temporary file and moved into place). Reading 3064 slices takes well under a minute.
    """

    def __init__(self, size: int = 256, normalization: str = "minmax", cache_dir=None):
        self.settings = FigshareSettings(size=int(size), normalization=normalization)
        s = self.settings.size
        self._cache = PreparedArrayCache(
            "figshare", {"format": CACHE_FORMAT_VERSION, **asdict(self.settings)},
            {"x": ((s, s, 1), np.float32), "y": ((s, s), np.uint8)}, self._decode, root=cache_dir,
            desc="preparing figshare slices")
        self.root = self._cache.root

    def _decode(self, path: Path):
        slice_ = read_figshare_mat(path)
        x, y = prepare_figshare_slice(slice_, self.settings)
        return {"x": x, "y": y}, {"pid": slice_.pid, "label": slice_.label}

    def _arrays(self, prepared: PreparedArrays | None) -> FigshareArrays | None:
        return None if prepared is None else FigshareArrays(prepared, self.settings)

    def folder(self, paths: Sequence[Path]) -> Path:
        return self._cache.folder(paths)

    def lookup(self, paths: Sequence) -> FigshareArrays | None:
        """The prepared arrays of ``paths`` if they exist and are fresh."""
        return self._arrays(self._cache.lookup(paths))

    def ensure(self, paths: Sequence, *, progress: bool = True) -> FigshareArrays:
        """Prepared arrays for ``paths`` (in order), reading the files only when the cache is missing
        or stale. A bad file raises its :class:`DataError`; nothing half-written is left behind. No
        paths (an empty split part) give empty arrays."""
        return self._arrays(self._cache.ensure(paths, progress=progress))

    def index(self, paths: Sequence, *, progress: bool = True) -> FigshareIndex:
        """:class:`FigshareIndex` over :meth:`ensure` ``(paths)``."""
        return FigshareIndex(self.ensure(paths, progress=progress))


class FigshareIndex(PreparedIndex):
    """Random access to prepared slices for ``data.pipeline.make_dataset``: ``gather(indices) → (x, y)``.

    ``x``: (B, S, S, 1) float32; ``y``: (B, S, S) uint8 in {0, 1} (``num_classes`` 2: background,
    tumour). ``paths``, ``pids`` (str) and ``labels`` (int8 tumour class, :data:`FIGSHARE_LABELS`)
    describe item i. The arrays are memory-mapped; only the requested slices are copied.
    """

    def __init__(self, arrays: FigshareArrays):
        super().__init__(arrays.prepared, num_classes=2)
        self.arrays = arrays
        self.pids = np.asarray(arrays.pids, dtype=str)
        self.labels = np.asarray(arrays.labels, dtype=np.int8)
