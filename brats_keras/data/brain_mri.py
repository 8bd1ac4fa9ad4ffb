"""The 4-class brain-tumour MRI image set (paper 5's classification data): reader, SYNTHETIC stand-in,
prepared-array index.

The public set (Nickparvar, "Brain Tumor MRI Dataset", Kaggle; figshare + SARTAJ + Br35H) is two
folders of class folders of JPEG images::

    <root>/Training/{glioma,meningioma,notumor,pituitary}/*.jpg
    <root>/Testing/{glioma,meningioma,notumor,pituitary}/*.jpg

Images have mixed sizes (mostly 512², some 200–1400 px, not all square) and mixed channels (8-bit
grey and RGB). Older copies name the classes ``glioma_tumor``, ``meningioma_tumor``, ``no_tumor``,
``pituitary_tumor``; both spellings are read. :func:`read_brain_mri_image` decodes any of them to an
RGB uint8 ``(size, size, 3)`` array; a file PIL cannot decode (truncated, not an image) is a
:class:`DataError` naming it, which :class:`BrainMRICache` reports and skips (paper 5's run counts them).

Everything :func:`write_brain_mri_dataset` writes is SYNTHETIC: the same MNI152-based head as the
figshare stand-in (:mod:`brats_keras.data.figshare`), with that module's meningioma (extra-axial, at
the brain surface or falx), glioma (intra-axial, ring-enhancing, with edema) and pituitary (midline,
sellar) tumours, plus tumour-free slices; saved as JPEG in the real layout with the real mixture of
sizes and grey / RGB files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_keras.data.figshare import synthesize_figshare_patient, synthesize_tumour_free_slices
from brats_keras.data.prepared import PreparedArrayCache, PreparedIndex
from brats_keras.data.synthetic import SYNTHETIC_MARKER, write_atomic
from brats_keras.errors import BratsKerasError, DataError
from brats_keras.io import atomic_write_json, default_cache_dir
from brats_keras.labels import BRAIN_MRI, FIGSHARE
from brats_keras.progress import progress_bar

CLASSES = BRAIN_MRI.keys
"""Class index → the release's folder name (alphabetical, as Keras' ``image_dataset_from_directory`` orders
them): ``("glioma", "meningioma", "notumor", "pituitary")`` (:data:`brats_keras.labels.BRAIN_MRI`)."""
CLASS_TITLES = {c.key: c.title for c in BRAIN_MRI}
"""Folder name → title in tables and figures (``"notumor"`` → ``"no tumour"``)."""
FOLDER_ALIASES = BRAIN_MRI.spellings()
"""Folder name, in either spelling (``glioma`` or the older copies' ``glioma_tumor`` …) → its class."""
PARTS = ("Training", "Testing")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_SIZE = 16


@dataclass(frozen=True)
class ImageItem:
    """One image of the set: its file, class index (:data:`CLASSES`) and release part."""

    path: Path
    label: int
    part: str  # "Training" or "Testing"


def _find_parts(root: Path) -> dict[str, Path]:
    """``{"Training": folder, "Testing": folder}`` (case-insensitive) in ``root`` or one level below
    (the Kaggle archive unpacks into a folder of its own)."""
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        found = {part: p for p in base.iterdir() if p.is_dir() for part in PARTS if p.name.lower() == part.lower()}
        if "Training" in found:
            return found
    raise DataError("no Training/ folder (expected <root>/Training/<class>/*.jpg and <root>/Testing/...)", path=root)


def discover_brain_mri(root) -> list[ImageItem]:
    """Every image below ``Training/<class>/`` and ``Testing/<class>/`` (``.jpg``, ``.jpeg``, ``.png``),
    sorted by part, class and file name. ``Testing/`` may be missing (then only the paper's own
    70/15/15 split applies).

    Raises:
        DataError: ``root`` is missing, has no ``Training/`` folder, a class folder of an unknown
            name (a misspelt class silently dropped would bias the table), or a part without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("folder not found" if not root.exists() else "not a folder", path=root)
    items: list[ImageItem] = []
    for part, folder in sorted(_find_parts(root).items(), key=lambda kv: PARTS.index(kv[0])):
        count = 0
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            name = FOLDER_ALIASES.get(class_dir.name.lower())
            if name is None:
                raise DataError(f"unknown class folder {class_dir.name!r}; expected one of "
                                f"{', '.join(CLASSES)} (or {', '.join(k for k in FOLDER_ALIASES if k not in CLASSES)})",
                                path=class_dir)
            for path in sorted(class_dir.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    items.append(ImageItem(path, CLASSES.index(name), part))
                    count += 1
        if count == 0:
            raise DataError("no images (.jpg, .jpeg, .png) in its class folders", path=folder)
    return items


def read_brain_mri_image(path, size: int) -> np.ndarray:
    """Decode one image to RGB uint8 ``(size, size, 3)``: grey images are repeated to three channels,
    RGBA / palette images converted, and every image resized to ``size`` × ``size`` (bilinear with
    PIL's antialiasing; a non-square image is stretched, as Keras' ``image_dataset_from_directory``
    does).

    Raises:
        DataError: naming the file, when it is missing, empty, truncated or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"not a readable image ({type(exc).__name__}: {exc})", path=path) from None
    if min(rgb.size) < MIN_SIZE:
        raise DataError(f"image is {rgb.size[0]}×{rgb.size[1]}, smaller than {MIN_SIZE}²", path=path)
    return np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)


class BrainMRICache:
    """Decode-once cache of the image set at ``size``²: ``<cache>/brain_tumor_mri/<key>/{x,y}.npy``
    (``x`` uint8 (N, S, S, 3), ``y`` uint8 class index), unreadable files reported and skipped
    (:class:`~brats_keras.data.prepared.PreparedArrayCache`), decoded in ``workers`` threads."""

    def __init__(self, size: int = 240, cache_dir=None, workers: int = 2):
        if int(size) < MIN_SIZE:
            raise ValueError(f"size: must be ≥ {MIN_SIZE}, got {size}")
        self.size = int(size)
        self._labels: dict[Path, int] = {}
        self._cache = PreparedArrayCache(
            "brain_tumor_mri", {"size": self.size}, {"x": ((self.size, self.size, 3), np.uint8), "y": ((), np.uint8)},
            self._decode, root=cache_dir, on_error="skip", workers=workers, desc="preparing images")

    def _decode(self, path: Path):
        return {"x": read_brain_mri_image(path, self.size), "y": self._labels[path]}, {}

    def index(self, items: Sequence[ImageItem], *, progress: bool = True) -> BrainMRIIndex:
        """:class:`BrainMRIIndex` over ``items`` (decoded once; skipped files in ``index.skipped``)."""
        paths = [Path(item.path).resolve() for item in items]
        self._labels = {p: int(item.label) for p, item in zip(paths, items)}
        return BrainMRIIndex(self._cache.ensure(paths, progress=progress))


class BrainMRIIndex(PreparedIndex):
    """``gather(indices) → (x, y)``: ``x`` float32 (B, S, S, 3) in [0, 1] (the paper's normalisation),
    ``y`` uint8 class indices (B,) (``num_classes`` 4, one-hot in the pipeline). ``labels`` is ``y`` of
    every item, ``skipped`` the files that could not be decoded (``{"path", "problem"}``)."""

    def __init__(self, arrays):
        super().__init__(arrays, num_classes=len(CLASSES), x_scale=1.0 / 255.0)
        self.skipped = list(arrays.skipped)
        self.labels = self.targets()


# ---------------------------------------------------------------------------------------- synthetic
TABLE1_COUNTS = {"Training": BRAIN_MRI.per_class(glioma=1321, meningioma=1339, notumor=1595, pituitary=1457),
                 "Testing": BRAIN_MRI.per_class(glioma=300, meningioma=306, notumor=405, pituitary=300)}
"""Paper 5, Table 1 (the release's counts)."""

_SIZES = (512, 512, 512, 256, 350, 630, 225)
"""Image sides the synthetic set draws from (the release is mostly 512², with a tail of other sizes)."""


def _synthetic_image(rng: np.random.Generator, label_name: str, base: int) -> tuple[np.ndarray, bool]:
    """One SYNTHETIC slice of class ``label_name`` as uint8 grey ``(h, w)`` (windowed to 0–255, some
    cropped to a non-square field of view), and whether to save it as grey (else RGB)."""
    if label_name in FIGSHARE.keys:  # a tumour type of the figshare stand-in, drawn by its label
        image = synthesize_figshare_patient(rng, FIGSHARE.by_key(label_name).code, 1, base)[0].image
    else:
        image = synthesize_tumour_free_slices(rng, 1, base)[0]
    x = image.astype(np.float32)
    hi = np.percentile(x, rng.uniform(99.0, 99.9))
    x = np.clip(x / max(hi, 1.0) * 255.0, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:  # a non-square crop, as some of the release's images are
        h = int(base * rng.uniform(0.8, 0.95))
        top = int(rng.integers(0, base - h + 1))
        x = x[top:top + h]
    return x, bool(rng.random() < 0.5)


def write_brain_mri_dataset(out_dir, *, per_class: dict[str, int] | int, test_per_class: dict[str, int] | int,
                            seed: int = 0, max_size: int | None = None, progress: bool = True) -> list[Path]:
    """Write a SYNTHETIC 4-class set in the release's layout: ``Training/<class>/Tr-<c>_NNNN.jpg`` and
    ``Testing/<class>/Te-<c>_NNNN.jpg`` (the release's naming), JPEG quality 90, sizes drawn from
    :data:`_SIZES` (capped at ``max_size``), half grey and half RGB files. Image ``k`` of class ``c`` in
    a part is drawn from ``default_rng([seed, part, c, k])``. ``SYNTHETIC_DATA.json`` marks the folder.

    Returns:
        The files written.
    """
    from PIL import Image
    counts = {}
    for part, spec in (("Training", per_class), ("Testing", test_per_class)):
        counts[part] = {c: int(spec if isinstance(spec, int) else spec.get(c, 0)) for c in CLASSES}
        if any(v < 0 for v in counts[part].values()):
            raise BratsKerasError(f"{part}: image counts must be ≥ 0, got {counts[part]}")
    if sum(counts["Training"].values()) == 0:
        raise BratsKerasError("the Training part needs at least one image")
    out_dir = Path(out_dir)
    written = []
    jobs = [(part, c, k) for part in PARTS for c in CLASSES for k in range(counts[part][c])]
    short = BRAIN_MRI.per_class(glioma="gl", meningioma="me", notumor="no", pituitary="pi")  # the release's file names
    for part, c, k in progress_bar(jobs, desc="synthetic brain-tumor-mri", unit="image", disable=not progress):
        rng = np.random.default_rng([int(seed), PARTS.index(part), CLASSES.index(c), k])
        base = int(rng.choice(_SIZES))
        base = min(base, max_size) if max_size else base
        pixels, grey = _synthetic_image(rng, c, max(base, 64))
        image = Image.fromarray(pixels, "L")
        if not grey:
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        path = out_dir / part / c / f"{'Tr' if part == 'Training' else 'Te'}-{short[c]}_{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
        written.append(path)
    write_atomic(out_dir / SYNTHETIC_MARKER, (
        '{"synthetic": true, "generator": "brats_keras.data.brain_mri", "note": "not patient data"}\n').encode())
    return written


def ensure_synthetic_brain_mri(cache_dir=None, *, per_class: int = 60, test_per_class: int = 15, seed: int = 0,
                               max_size: int = 256, progress: bool = True) -> Path:
    """A synthetic image set generated once into
    ``<cache>/synthetic/brain_tumor_mri_<per_class>x<test_per_class>_seed<seed>_<max_size>`` and reused
    (a ``.complete.json`` marker is written last)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / f"brain_tumor_mri_{per_class}x{test_per_class}_seed{seed}_{max_size}"
    marker = folder / ".complete.json"
    if not marker.is_file():
        write_brain_mri_dataset(folder, per_class=per_class, test_per_class=test_per_class, seed=seed,
                                max_size=max_size, progress=progress)
        atomic_write_json(marker, {"dataset": "brain-tumor-mri", "per_class": per_class,
                                   "test_per_class": test_per_class, "seed": seed, "max_size": max_size,
                                   "synthetic": True})
    return folder


# ------------------------------------------------------------------------------------------- splits
def split_images(items: Sequence[ImageItem], *, mode: str = "paper", fractions=(0.70, 0.15, 0.15),
                 val_fraction: float = 0.15, seed: int = 0) -> dict[str, list[ImageItem]]:
    """``{"train", "val", "test"}`` lists of items, stratified by class, seeded.

    ``mode="paper"``: every image of both parts pooled and split ``fractions`` (paper 5: "70 for
    training, 15 for validation, and 15 for testing"); ``mode="folders"``: the release's ``Testing/``
    is the test set and ``val_fraction`` of ``Training/`` the validation set. The set has no patient
    ids, so neither split can keep one patient's slices together (docs/paper5.md). The result depends
    on the set of items and the seed, not on their order.
    """
    if mode not in ("paper", "folders"):
        raise ValueError(f"mode: {mode!r} not in ('paper', 'folders')")
    rng = np.random.default_rng(seed)
    out: dict[str, list[ImageItem]] = {"train": [], "val": [], "test": []}

    def cut(pool: list[ImageItem], shares: dict[str, float]) -> None:
        for label in range(len(CLASSES)):
            members = sorted((it for it in pool if it.label == label), key=lambda it: str(it.path))  # order-free
            order = rng.permutation(len(members))
            start = 0
            names = list(shares)
            for j, name in enumerate(names):
                n = len(members) - start if j == len(names) - 1 else int(round(shares[name] * len(members)))
                out[name].extend(members[i] for i in order[start:start + n])
                start += n

    if mode == "paper":
        train, val, test = fractions
        if abs(train + val + test - 1.0) > 1e-6 or min(fractions) < 0:
            raise ValueError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
        cut(list(items), {"val": val, "test": test, "train": train})
    else:
        testing = [it for it in items if it.part == "Testing"]
        if not testing:
            raise DataError("mode 'folders' needs a Testing/ part", path=items[0].path.parents[2] if items else None)
        out["test"] = testing
        cut([it for it in items if it.part == "Training"], {"val": val_fraction, "train": 1.0 - val_fraction})
    for name in out:
        out[name].sort(key=lambda it: (it.label, str(it.path)))
    return out
