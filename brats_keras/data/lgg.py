"""The LGG FLAIR segmentation set (Buda et al., Kaggle "lgg-mri-segmentation"; paper 5's segmentation
data): reader, SYNTHETIC stand-in, prepared-array index.

The release (``kaggle_3m``) holds one folder per patient (110 TCGA lower-grade-glioma patients,
3929 slices, 1373 with tumour) and a ``data.csv`` of genomic clusters::

    <root>/kaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1.tif        256×256×3 uint8
    <root>/kaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1_mask.tif   256×256 uint8, 0 / 255

The image's three channels are pre-contrast, FLAIR and post-contrast; the mask outlines the FLAIR
abnormality. Slices are numbered 1 … n per patient (sorting them as strings puts 10 before 2, so the
reader sorts by number). :func:`discover_lgg` pairs images with masks; an image without its mask,
or a file PIL cannot decode, is reported and skipped (paper 5's run counts them), not silently used.

Everything :func:`write_lgg_dataset` writes is SYNTHETIC: axial slices of data.synthetic's BraTS-like
volumes (T1 → pre-contrast, FLAIR, T1ce → post-contrast, each scaled to 0–255 per patient), the whole
tumour as the mask, in the release's layout and file formats.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_keras.data.prepared import PreparedArrayCache, PreparedIndex
from brats_keras.data.slices2d import resize_images
from brats_keras.data.synthetic import SYNTHETIC_MARKER, synthesize_case, write_atomic
from brats_keras.errors import BratsKerasError, DataError
from brats_keras.io import atomic_write_json, default_cache_dir
from brats_keras.progress import progress_bar

LGG_SIZE = 256
_IMAGE = re.compile(r"^(?P<patient>.+)_(?P<k>\d+)\.tif$", re.IGNORECASE)
_MASK = re.compile(r"^(?P<patient>.+)_(?P<k>\d+)_mask\.tif$", re.IGNORECASE)


@dataclass(frozen=True)
class LGGSlice:
    """One slice: its image and mask files, patient id (the folder name) and slice number."""

    image: Path
    mask: Path
    patient: str
    number: int

    @classmethod
    def of(cls, image: Path, mask: Path) -> LGGSlice:
        """The slice of an image file and its mask: the patient is the image's folder, the number the
        ``_<k>`` of its name (the release's naming, as :func:`discover_lgg` reads it)."""
        m = _IMAGE.match(Path(image).name)
        if m is None:
            raise DataError("not an LGG slice name (<patient>_<k>.tif)", path=image)
        return cls(Path(image), Path(mask), Path(image).parent.name, int(m.group("k")))


def discover_lgg(root) -> tuple[list[LGGSlice], list[dict]]:
    """Every ``<patient>/<patient>_<k>.tif`` with its ``_mask.tif`` below ``root`` (the folder holding
    ``kaggle_3m`` or ``kaggle_3m`` itself; any depth), sorted by patient and slice number.

    Returns:
        The slices, and ``{"path", "problem"}`` for images without a mask and masks without an image
        (reported and skipped).

    Raises:
        DataError: ``root`` is missing or holds no image/mask pair.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("folder not found" if not root.exists() else "not a folder", path=root)
    images: dict[tuple[Path, int], Path] = {}
    masks: dict[tuple[Path, int], Path] = {}
    for path in root.rglob("*.tif"):
        m = _MASK.match(path.name)
        if m:
            masks[(path.parent, int(m.group("k")))] = path
            continue
        m = _IMAGE.match(path.name)
        if m:
            images[(path.parent, int(m.group("k")))] = path
    slices, problems = [], []
    for key in sorted(set(images) | set(masks), key=lambda k: (k[0].name, k[1])):
        if key not in masks:
            problems.append({"path": str(images[key]), "problem": "no mask file (<name>_mask.tif) beside it"})
        elif key not in images:
            problems.append({"path": str(masks[key]), "problem": "a mask without its image"})
        else:
            slices.append(LGGSlice.of(images[key], masks[key]))
    if not slices:
        raise DataError("no LGG image/mask pairs (<patient>/<patient>_<k>.tif + <patient>_<k>_mask.tif) below "
                        "this folder", path=root)
    return slices, problems


def _open(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image)
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"not a readable TIFF ({type(exc).__name__}: {exc})", path=path) from None


def read_lgg_slice(item: LGGSlice) -> tuple[np.ndarray, np.ndarray]:
    """``image`` uint8 (H, W, 3) and ``mask`` uint8 (H, W) in {0, 1} (the file's 0 / 255, any non-zero
    value counting as tumour).

    Raises:
        DataError: naming the file, when it cannot be decoded, the image is not 3-channel, or the
            mask's size differs from the image's.
    """
    image = _open(item.image)
    if image.ndim == 2:  # a grey copy of the set: repeat to the three channels the models take
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"image has shape {image.shape}; expected (H, W, 3)", path=item.image)
    mask = _open(item.mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask is {mask.shape}, its image {image.shape[:2]}", path=item.mask)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8), (mask > 0).astype(np.uint8)


def _resize(image: np.ndarray, size: int, *, nearest: bool) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == image.shape[1] == size:
        return image
    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), mode))


class LGGCache:
    """Decode-once cache at ``size``²: ``<cache>/lgg/<key>/{x,y}.npy`` (``x`` uint8 (N, S, S, 3),
    ``y`` uint8 (N, S, S) in {0, 1}); unreadable slices are reported and skipped."""

    def __init__(self, size: int = LGG_SIZE, cache_dir=None, workers: int = 2):
        self.size = int(size)
        self._cache = PreparedArrayCache(
            "lgg", {"size": self.size}, {"x": ((self.size, self.size, 3), np.uint8), "y": ((self.size, self.size), np.uint8)},
            self._decode, root=cache_dir, on_error="skip", workers=workers, desc="preparing LGG slices")

    def _decode(self, files: tuple[Path, Path]):
        item = LGGSlice.of(*files)
        image, mask = read_lgg_slice(item)
        return ({"x": _resize(image, self.size, nearest=False), "y": _resize(mask, self.size, nearest=True)},
                {"patient": item.patient, "number": item.number, "mask": str(item.mask)})

    def index(self, items: Sequence[LGGSlice], *, progress: bool = True) -> LGGIndex:
        """:class:`LGGIndex` over ``items``, each row decoded from its image and mask (both files are
        fingerprinted: an edited mask rebuilds the set)."""
        return LGGIndex(self._cache.ensure([(it.image, it.mask) for it in items], progress=progress))


class LGGIndex(PreparedIndex):
    """``gather(indices) → (x, y)``: ``x`` float32 (B, S, S, 3) in [0, 1], ``y`` uint8 (B, S, S) in
    {0, 1}. ``num_classes`` is 1: a single sigmoid channel (paper 5), so the pipeline is built with
    ``one_hot=False``. ``patients[i]`` is item i's patient, ``skipped`` the files left out."""

    def __init__(self, arrays):
        super().__init__(arrays, num_classes=1, x_scale=1.0 / 255.0)
        self.skipped = list(arrays.skipped)
        self.patients = self.field("patient")


# ---------------------------------------------------------------------------------------- synthetic
def _tiff_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def synthetic_patient_id(seed: int, n: int) -> str:
    """A TCGA-like id, ``TCGA_SY_<4 digits>_<date>`` (SY: synthetic), distinct per patient number."""
    number = 1000 + (n * 7919 + seed * 104729) % 9000
    day = 19900101 + (n % 12) * 100 + (n % 28)
    return f"TCGA_SY_{number:04d}_{day}"


def write_lgg_dataset(out_dir, *, patients: int, slices: int = 24, seed: int = 0, size: int = LGG_SIZE,
                      progress: bool = True) -> list[Path]:
    """Write a SYNTHETIC LGG-like set: ``<out_dir>/kaggle_3m/<patient>/<patient>_<k>.tif`` (RGB uint8:
    T1, FLAIR, T1ce of a data.synthetic volume, each scaled to its 99.5th percentile → 255) and
    ``<patient>_<k>_mask.tif`` (0 / 255: the whole tumour), ``slices`` axial slices per patient evenly
    through the brain, so about a third hold tumour, as in the release; patient ``n`` drawn from
    ``default_rng([seed, n])``. ``SYNTHETIC_DATA.json`` marks the folder.

    Returns:
        The image files written.
    """
    if int(patients) < 1 or int(slices) < 1 or int(size) < 16:
        raise BratsKerasError(f"need patients ≥ 1, slices ≥ 1, size ≥ 16, got {patients}, {slices}, {size}")
    out_dir = Path(out_dir)
    root = out_dir / "kaggle_3m"
    written = []
    grid = (96, 96, 60)  # a coarse BraTS-like volume per patient; slices are resized to ``size``
    for n in progress_bar(range(int(patients)), desc="synthetic lgg", unit="patient", disable=not progress):
        case = synthesize_case(np.random.default_rng([int(seed), n]), grid)
        channels = []
        for modality in ("t1", "flair", "t1ce"):
            v = case[modality].astype(np.float32)
            hi = np.percentile(v[v > 0], 99.5) if np.any(v > 0) else 1.0
            channels.append(np.clip(v / hi * 255.0, 0, 255))
        volume = np.stack(channels, axis=-1)  # (X, Y, Z, 3)
        brain = np.flatnonzero(case["flair"].any(axis=(0, 1)))
        ks = np.linspace(brain[0] + 2, brain[-1] - 2, int(slices)).round().astype(int)
        patient = synthetic_patient_id(seed, n)
        for k_index, z in enumerate(ks, start=1):
            image = np.rot90(volume[:, :, z])  # radiological view: anterior up
            mask = np.rot90(case["seg"][:, :, z] > 0).astype(np.float32)
            image = resize_images(image[None].copy(), size)[0]
            mask = resize_images(mask[None, :, :, None].copy(), size)[0, :, :, 0] >= 0.5
            folder = root / patient
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{patient}_{k_index}.tif"
            write_atomic(path, _tiff_bytes(np.clip(np.rint(image), 0, 255).astype(np.uint8)))
            write_atomic(folder / f"{patient}_{k_index}_mask.tif", _tiff_bytes(mask.astype(np.uint8) * 255))
            written.append(path)
    write_atomic(out_dir / SYNTHETIC_MARKER, (
        '{"synthetic": true, "generator": "brats_keras.data.lgg", "note": "not patient data"}\n').encode())
    return written


def ensure_synthetic_lgg(cache_dir=None, *, patients: int = 12, slices: int = 24, seed: int = 0,
                         size: int = LGG_SIZE, progress: bool = True) -> Path:
    """A synthetic LGG set generated once into ``<cache>/synthetic/lgg_<patients>p_<slices>s_seed<seed>_<size>``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / f"lgg_{patients}p_{slices}s_seed{seed}_{size}"
    marker = folder / ".complete.json"
    if not marker.is_file():
        write_lgg_dataset(folder, patients=patients, slices=slices, seed=seed, size=size, progress=progress)
        atomic_write_json(marker, {"dataset": "lgg", "patients": patients, "slices": slices, "seed": seed,
                                   "size": size, "synthetic": True})
    return folder
