"""The figshare brain-tumour set (Cheng et al., figshare 1512427; paper 4): reader, writer, SYNTHETIC
stand-in and a prepared-array index.

The real release: 3064 T1-weighted contrast-enhanced (T1ce) slices of 233 patients, one MATLAB v7.3
``.mat`` file per slice (``1.mat`` … ``3064.mat``, shipped in four folders
``brainTumorDataPublic_1-766`` … ``_2299-3064``, beside ``cvind.mat`` — cross-validation indices, not
a slice — and a README). A v7.3 MAT-file is an HDF5 file behind a 512-byte MATLAB header; each slice
file holds the struct ``cjdata``:

- ``label``: float64 (1, 1), ``MATLAB_class`` double → :attr:`FigshareSlice.label` int, 1 meningioma,
  2 glioma, 3 pituitary;
- ``PID``: uint16 (n, 1) character codes, char → ``pid`` str, e.g. ``"100360"``;
- ``image``: int16 (W, H), the transpose → ``image`` int16 (H, W), 512² (a few 256²);
- ``tumorBorder``: float64 (1, 2k) holding x1, y1, x2, y2, … → ``border`` float64 (k, 2), one (x, y) per row;
- ``tumorMask``: uint8 (W, H), logical → ``mask`` uint8 (H, W) in {0, 1}.

MATLAB stores arrays column-major, so h5py sees every 2D array transposed; the reader transposes back,
so ``image[row, column]`` is what MATLAB's ``imshow(cjdata.image)`` shows at that row and column.

Everything made by :func:`synthesize_figshare_patient` / :func:`write_figshare_dataset` is SYNTHETIC:
numbers measured on it say whether a pipeline works, never how a method performs on patients.
"""

from __future__ import annotations

import functools
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from brats_keras.data import synthetic as _synthetic
from brats_keras.data.prepared import PreparedArrayCache, PreparedArrays, PreparedIndex
from brats_keras.data.synthetic import SYNTHETIC_MARKER, write_atomic
from brats_keras.errors import BratsKerasError, DataError

FIGSHARE_LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
"""``cjdata.label`` → tumour type."""

FIGSHARE_FIELDS = ("label", "PID", "image", "tumorBorder", "tumorMask")
"""Fields of the ``cjdata`` struct, in the order MATLAB lists them."""

MAT73_USERBLOCK = 512
"""Bytes before the HDF5 data in a v7.3 MAT-file; the first 128 are the MATLAB header."""

NORMALIZATIONS = ("minmax", "zscore", "none")
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
        raise DataError(f"cjdata.label {value:g} not in {{1, 2, 3}} (1 meningioma, 2 glioma, 3 pituitary)",
                        path=path)
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


# ----------------------------------------------------------------------------------------- writing
def mat73_header(created: time.struct_time | None = None, platform: str = "GLNXA64") -> bytes:
    """The 128-byte header MATLAB writes at the start of a v7.3 MAT-file's 512-byte userblock:
    116 bytes of text (space padded), 8 bytes of subsystem offset (zero), version 0x0200 and
    the endian indicator ``IM``."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", created or time.localtime())
    text = f"MATLAB 7.3 MAT-file, Platform: {platform}, Created on: {stamp} HDF5 schema 1.00 .".encode("ascii")
    if len(text) > 116:
        raise ValueError(f"header text longer than 116 bytes: {text!r}")
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"


def _matlab_class(obj, name: str, int_decode: int | None = None) -> None:
    obj.attrs["MATLAB_class"] = np.bytes_(name)
    if int_decode is not None:
        obj.attrs["MATLAB_int_decode"] = np.int32(int_decode)


def _validate_for_writing(slice_: FigshareSlice, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    image = np.asarray(slice_.image)
    mask = np.asarray(slice_.mask)
    border = np.asarray(slice_.border, dtype=np.float64).reshape(-1, 2)
    pid = str(slice_.pid)
    if int(slice_.label) not in FIGSHARE_LABELS:
        raise DataError(f"label {slice_.label} not in {{1, 2, 3}}", path=path)
    if not pid.strip():
        raise DataError("empty PID", path=path)
    if any(ord(c) > 0xFFFF for c in pid):
        raise DataError(f"PID {pid!r} has characters MATLAB's char (UTF-16) cannot hold", path=path)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise DataError(f"image must be square 2D, got shape {image.shape}", path=path)
    if mask.shape != image.shape:
        raise DataError(f"mask shape {mask.shape} differs from image shape {image.shape}", path=path)
    if np.any((mask != 0) & (mask != 1)):
        raise DataError("mask holds values outside {0, 1}", path=path)
    if image.dtype != np.int16:
        raise DataError(f"image must be int16, got {image.dtype}", path=path)
    return image, mask.astype(np.uint8), border, pid


def write_figshare_mat(path, slice_: FigshareSlice, *, created: time.struct_time | None = None) -> Path:
    """Write ``slice_`` in the layout MATLAB's ``save(f, 'cjdata', '-v7.3')`` produces, atomically.

    The layout: a 512-byte userblock starting with :func:`mat73_header` (``created``: the date in it,
    default now); group ``cjdata`` (``MATLAB_class`` struct, ``MATLAB_fields`` the field names as
    variable-length char arrays); every array stored transposed (column-major); ``label`` float64
    (1, 1) double; ``PID`` uint16 (n, 1) char with ``MATLAB_int_decode`` 2; ``image`` int16; ``tumorBorder``
    float64 (1, 2k) double holding x1, y1, x2, y2, … (an empty border the way MATLAB stores an empty
    array: its dimensions as uint64 with ``MATLAB_empty`` 1); ``tumorMask`` uint8 logical with
    ``MATLAB_int_decode`` 1; image and mask chunked and deflated (level 3), as MATLAB compresses
    large variables. The file goes to a temporary name in the same folder and is moved into place
    with ``os.replace``.
    """
    import h5py

    from brats_keras.io_utils import atomic_path

    path = Path(path)
    image, mask, border, pid = _validate_for_writing(slice_, path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=MAT73_USERBLOCK, libver="earliest") as f:
            group = f.create_group("cjdata")
            _matlab_class(group, "struct")
            names = np.empty(len(FIGSHARE_FIELDS), dtype=object)
            for i, name in enumerate(FIGSHARE_FIELDS):
                names[i] = np.frombuffer(name.encode("ascii"), dtype="S1")
            group.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))

            _matlab_class(group.create_dataset("label", data=np.array([[float(slice_.label)]])), "double")
            codes = np.array([[ord(c)] for c in pid], dtype=np.uint16)  # MATLAB 1×n char → (n, 1)
            _matlab_class(group.create_dataset("PID", data=codes), "char", int_decode=2)
            compress = {"compression": "gzip", "compression_opts": 3, "chunks": True}
            _matlab_class(group.create_dataset("image", data=np.ascontiguousarray(image.T), **compress), "int16")
            if border.size:
                stored = border.reshape(1, -1)  # x1, y1, x2, y2, … in one row
                _matlab_class(group.create_dataset("tumorBorder", data=stored), "double")
            else:
                empty = group.create_dataset("tumorBorder", data=np.array([1, 0], dtype=np.uint64))
                _matlab_class(empty, "double")
                empty.attrs["MATLAB_empty"] = np.uint8(1)
            _matlab_class(group.create_dataset("tumorMask", data=np.ascontiguousarray(mask.T), **compress),
                          "logical", int_decode=1)
        with open(tmp, "r+b") as fh:
            fh.write(mat73_header(created))
    return path


# ------------------------------------------------------------------------------ synthetic: anatomy
# The head is the MNI152 brain that data.synthetic places in the BraTS grid, resampled into a cube of
# _HEAD_FOV_MM per side (isotropic voxels), with skull and scalp added as shells at fixed distances
# from the brain surface. "Head mm" below means cube voxel index × voxel size; its axes point to the
# patient's left, posterior and superior (the BraTS grid's i, j, k).
_HEAD_FOV_MM = 240.0
_HEAD_BOTTOM_K = -49.0  # BraTS full-size slice index (1 mm) of the cube's lower face; brain: k ≈ -6 … 148
_SELLA_MNI = np.array([0.0, 0.0, -27.0])  # centre of the sellar region (pituitary), MNI mm
_SPHENOID_MNI = np.array([0.0, 10.0, -45.0])  # sphenoid sinus (air, dark) below and in front of the sella
_SPHENOID_RADII_MM = np.array([12.0, 11.0, 8.0])
_T1CE = {k: _synthetic._LEVELS["t1ce"][k] for k in ("wm", "gm", "csf")}  # relative to white matter
_SLICE_SPACING_MM = 7.0  # real figshare slices: 6 mm thick + 1 mm gap
_CLEFT = 1.12  # a meningioma's CSF cleft reaches this normalised radius
_EDEMA_WM_SPREAD = _synthetic._EDEMA_WM_SPREAD  # edema boundary at edema + spread · (WM fraction − 0.5)
_VIEWS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class _Head:
    """The tumour-free head in a cube of isotropic voxels, and the sites where tumours are placed."""

    voxel_mm: float
    maps: np.ndarray  # (4, G, G, G) float32: brain fraction, GM, WM, signed distance to the brain surface (mm)
    mni_to_mm: np.ndarray  # 4×4: MNI mm → head mm
    centre_mm: np.ndarray  # centre of the brain's bounding box, head mm
    glioma_sites: np.ndarray  # (n, 3) deep white matter above the cerebellum, head mm
    convexity_sites: np.ndarray  # (n, 3) brain surface above the skull base, head mm
    convexity_normals: np.ndarray  # (n, 3) their outward normals
    falx_sites: np.ndarray  # (n, 3) the midline, above the corpus callosum, head mm


def _anatomy_grid(size: int) -> int:
    """Cube size for output images of ``size``: voxels about two output pixels, 64 … 128."""
    return int(np.clip(size // 2, 64, 128))


@functools.lru_cache(maxsize=2)
def _head(grid: int) -> _Head:
    """The head model for a cube of ``grid``³ voxels (cached per process; about 4 s at 128)."""
    mask, gm, wm, mni_affine = _synthetic._mni_maps()
    full_to_mni = _synthetic._full_to_mni(mask, mni_affine)
    v = _HEAD_FOV_MM / grid
    cube_to_full = np.diag([v, v, v, 1.0])
    cube_to_full[:3, 3] = (0.5 * v - 0.5, 0.5 * v - 0.5, _HEAD_BOTTOM_K + 0.5 * v - 0.5)
    cube_to_mni = full_to_mni @ cube_to_full
    box = int(v // 2) * 2 + 1  # anti-aliasing, as data.synthetic does for small grids
    maps = []
    for volume in (mask, gm, wm):
        if box > 1:
            volume = ndimage.uniform_filter(volume, box)
        maps.append(ndimage.affine_transform(volume, cube_to_mni[:3, :3], cube_to_mni[:3, 3],
                                             output_shape=(grid,) * 3, order=1, output=np.float32))
    brain = maps[0] >= 0.5
    outside = ndimage.distance_transform_edt(~brain, sampling=v)
    inside = ndimage.distance_transform_edt(brain, sampling=v)
    signed = np.where(brain, 0.5 * v - inside, outside - 0.5 * v).astype(np.float32)
    maps.append(signed)

    cube_mm_to_mni_mm = mni_affine @ cube_to_mni @ np.diag([1 / v, 1 / v, 1 / v, 1.0])
    mni_to_mm = np.linalg.inv(cube_mm_to_mni_mm)
    idx = np.argwhere(brain)
    centre = 0.5 * (idx.min(0) + idx.max(0)) * v

    def sites(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.argwhere(selected)
        mni = (cube_mm_to_mni_mm @ np.c_[points * v, np.ones(len(points))].T).T[:, :3]
        return points, mni

    pts, mni = sites((maps[2] >= 0.6) & (signed <= -8.0))
    keep = mni[:, 2] >= -15.0
    glioma = pts[keep] if keep.any() else np.argwhere(signed <= -0.5 * v)
    pts, mni = sites(brain & (signed > -1.5 * v))
    keep = (mni[:, 2] >= -5.0) & (np.abs(mni[:, 0]) > 4.0)
    convexity = pts[keep] if keep.any() else pts
    gradient = np.stack(np.gradient(signed), axis=-1)[tuple(convexity.T)]
    normals = gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-6)
    pts, mni = sites(brain)
    keep = (np.abs(mni[:, 0]) <= max(v, 1.0)) & (mni[:, 2] >= 35.0) & (mni[:, 2] <= 65.0)
    keep &= np.abs(mni[:, 1] + 20.0) <= 45.0  # from the frontal to the parietal lobes
    falx = pts[keep] if keep.any() else convexity
    return _Head(v, np.stack(maps), mni_to_mm, centre, glioma * v, convexity * v, normals, falx * v)


def _sample(head: _Head, points_mm: np.ndarray, which: Sequence[int]) -> list[np.ndarray]:
    """Head maps ``which`` (indices into ``head.maps``) at ``points_mm`` (3, …), linearly interpolated;
    outside the cube: no brain and far from it (air)."""
    coords = np.asarray(points_mm, np.float32) / np.float32(head.voxel_mm)
    out = []
    for i in which:
        cval = 1e3 if i == 3 else 0.0
        out.append(ndimage.map_coordinates(head.maps[i], coords, order=1, mode="constant", cval=cval,
                                           prefilter=False, output=np.float32))
    return out


def _smooth_step(x: np.ndarray, edge: float, width: float) -> np.ndarray:
    """0 well below ``edge``, 1 well above, linear over ``width``."""
    return np.clip((x - edge) / max(width, 1e-6) + 0.5, 0.0, 1.0)


# ------------------------------------------------------------------------------- synthetic: lesion
@dataclass
class _Lesion:
    """One tumour in head mm: an ellipsoid (``to_q`` maps mm offsets to normalised coordinates, 1 =
    the boundary) whose boundaries are perturbed by smooth random plane waves."""

    label: int
    centre: np.ndarray
    to_q: np.ndarray
    reach_mm: float  # nothing of the lesion (edema included) lies further from the centre
    core_reach_mm: float  # nor of the tumour the mask outlines
    waves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]]  # boundary → (k (n,3) rad/mm, phase, w, amp)
    necrosis: float = 0.0  # glioma: normalised radius of the necrotic centre
    edema: float = 0.0  # glioma: normalised radius of the edema (before the white-matter spread)
    inner_table_mm: float = 1.5  # the skull's inner surface, mm outside the brain surface (the patient's)

    def radius_at(self, points_mm: np.ndarray) -> np.ndarray:
        """Unperturbed normalised radius at ``points_mm`` (n, 3)."""
        q = (points_mm - self.centre).astype(np.float32) @ self.to_q.astype(np.float32)
        return np.sqrt(np.einsum("ij,ij->i", q, q))

    def bound(self, name: str) -> float:
        """Largest possible perturbation of boundary ``name`` (amplitude × Σ|weights|)."""
        _, _, weights, amp = self.waves[name]
        return float(amp * np.abs(weights).sum())

    def waves_at(self, points_mm: np.ndarray, name: str) -> np.ndarray:
        """The smooth random field ``name`` (unit standard deviation) at ``points_mm`` (n, 3)."""
        kvecs, phases, weights, _ = self.waves[name]
        offsets = (points_mm - self.centre).astype(np.float32)
        return np.cos(offsets @ kvecs.T.astype(np.float32) + phases.astype(np.float32)) @ weights.astype(np.float32)

    def field(self, points_mm: np.ndarray, name: str, r: np.ndarray | None = None, below: float | None = None
              ) -> np.ndarray:
        """Perturbed normalised radius at ``points_mm`` (n, 3) for boundary ``name``; ``r``: the
        unperturbed radius if known. With ``below``, the perturbation is added only where it can
        bring the radius under ``below`` (elsewhere the unperturbed radius, ≥ ``below``, is returned)."""
        r = self.radius_at(points_mm) if r is None else r.copy()
        amp = self.waves[name][3]
        if not amp:
            return r
        todo = slice(None) if below is None else np.flatnonzero(r < below + self.bound(name))
        r[todo] += np.float32(amp) * self.waves_at(points_mm[todo], name)
        return r

    def core_inside(self, points_mm: np.ndarray, signed: np.ndarray, r_core: np.ndarray | None = None
                    ) -> np.ndarray:
        """Boolean: the tumour outlined by the mask (the whole tumour; a glioma's enhancing core and
        necrosis, not its edema)."""
        inside = (self.field(points_mm, "core", below=1.0) if r_core is None else r_core) < 1.0
        if self.label == 1:  # extra-axial: limited by the skull
            inside &= signed <= self.inner_table_mm
        elif self.label == 2:  # intra-axial
            inside &= signed <= 0.0
        return inside


def _waves(rng: np.random.Generator, to_q: np.ndarray, n: int, freq: tuple[float, float], amp: float):
    directions = rng.standard_normal((n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k_norm = directions * rng.uniform(*freq, (n, 1))  # radians per radius
    phases = rng.uniform(0, 2 * np.pi, n)
    weights = rng.uniform(0.5, 1.0, n)
    weights /= np.sqrt(0.5 * np.sum(weights**2))  # unit standard deviation
    return (to_q @ k_norm.T).T, phases, weights, float(amp)


def _random_rotation(rng: np.random.Generator, max_degrees: float | None = None) -> np.ndarray:
    """Uniformly random (``max_degrees`` None) or within ±``max_degrees`` about each axis."""
    if max_degrees is None:
        return _synthetic._random_orientation(rng)
    return _synthetic._rotation(rng.uniform(-max_degrees, max_degrees, 3))


def _draw_lesion(rng: np.random.Generator, label: int, head: _Head) -> _Lesion:
    """Meningioma: on the convexity (70 %) or the falx, round, extra-axial; glioma: deep white
    matter, irregular; pituitary: small, round, at the sella."""
    if label == 1:
        radius = float(np.exp(rng.uniform(np.log(9.0), np.log(24.0))))
        elongation = np.exp(rng.uniform(-0.12, 0.12, 3))
        if rng.random() < 0.7:
            i = rng.integers(len(head.convexity_sites))
            centre = head.convexity_sites[i] - head.convexity_normals[i] * rng.uniform(0.15, 0.55) * radius
        else:
            centre = head.falx_sites[rng.integers(len(head.falx_sites))].astype(float)
        amps = {"core": rng.uniform(0.03, 0.06)}
    elif label == 2:
        radius = float(np.exp(rng.uniform(np.log(12.0), np.log(28.0))))
        elongation = np.exp(rng.uniform(-0.3, 0.3, 3))
        centre = head.glioma_sites[rng.integers(len(head.glioma_sites))].astype(float)
        amps = {"core": rng.uniform(0.10, 0.18), "necrosis": rng.uniform(0.08, 0.14),
                "edema": rng.uniform(0.15, 0.25)}
    else:
        radius = float(np.exp(rng.uniform(np.log(6.0), np.log(13.0))))
        elongation = np.array([0.95, 0.95, rng.uniform(1.1, 1.4)])  # taller than wide
        centre = (head.mni_to_mm @ np.append(_SELLA_MNI + rng.normal(0.0, 1.5, 3), 1.0))[:3]
        amps = {"core": rng.uniform(0.03, 0.07)}
    axes = radius * elongation / np.prod(elongation) ** (1 / 3)
    rotation = _random_rotation(rng, 10.0) if label == 3 else _random_rotation(rng)
    to_q = rotation / axes[None, :]
    freqs = {"core": (2.0, 6.0), "necrosis": (3.0, 7.0), "edema": (1.5, 5.0), "texture": (4.0, 10.0)}
    waves = {name: _waves(rng, to_q, 8, freqs[name], amp) for name, amp in amps.items()}
    waves["texture"] = _waves(rng, to_q, 8, freqs["texture"], 1.0)
    lesion = _Lesion(label, np.asarray(centre, float), to_q, reach_mm=0.0, core_reach_mm=0.0, waves=waves)
    lesion.core_reach_mm = float(axes.max() * (1.0 + lesion.bound("core")) + 1.0)
    outer = _CLEFT + lesion.bound("core")  # meningioma: its CSF cleft; pituitary: the tumour
    if label == 2:
        lesion.necrosis = float(rng.uniform(0.35, 0.65))
        lesion.edema = float(rng.uniform(1.3, 1.8))
        outer = lesion.edema + 0.5 * _EDEMA_WM_SPREAD + lesion.bound("edema")
    lesion.reach_mm = float(axes.max() * (outer + 0.1) + 2.0)
    return lesion


# ------------------------------------------------------------------------------ synthetic: a patient
@dataclass
class _Patient:
    """Everything drawn once per patient: pose, contrast and the view of the slices."""

    pose: np.ndarray  # 4×4: scanner mm → head mm (a small rotation, scale and shift about the brain)
    view: str
    frame: np.ndarray  # rows U (image columns), V (image rows), N (slice normal), scanner axes
    levels: dict[str, float]
    shells: tuple[np.ndarray, np.ndarray]  # boundaries (mm outside the brain) and levels of CSF/skull/scalp/air
    bias: tuple[np.ndarray, float]  # per-axis cosine coefficients (3, 2, 2) and gain
    wm_level: float
    noise: float
    fov_mm: float
    inplane_shift: np.ndarray


def _view_frame(view: str) -> np.ndarray:
    """Image column direction U, row direction V and slice normal N in head axes (left, posterior,
    superior): axial and coronal in radiological convention (patient's right on the image's left),
    axial with anterior at the top, coronal and sagittal with superior at the top, sagittal facing left."""
    e0, e1, e2 = np.eye(3)
    return {"axial": np.stack([e0, e1, e2]), "coronal": np.stack([e0, -e2, e1]),
            "sagittal": np.stack([e1, -e2, e0])}[view]


def _draw_patient(rng: np.random.Generator, label: int, head: _Head) -> _Patient:
    views = ("coronal", "sagittal") if label == 3 else _VIEWS
    view = views[rng.integers(len(views))]
    linear = _random_rotation(rng, 6.0) * rng.uniform(0.95, 1.05)
    pose = np.eye(4)
    pose[:3, :3] = linear
    pose[:3, 3] = head.centre_mm - linear @ head.centre_mm + rng.uniform(-4.0, 4.0, 3)
    levels = {name: value * rng.uniform(0.95, 1.05) for name, value in _T1CE.items()}
    levels.update(meningioma=rng.uniform(1.5, 1.9), rim=rng.uniform(1.35, 1.8), necrosis=rng.uniform(0.28, 0.45),
                  edema=rng.uniform(0.62, 0.78), pituitary=rng.uniform(1.4, 1.8), sinus=0.04)
    thickness = [rng.uniform(1.0, 2.0), rng.uniform(1.2, 2.0), rng.uniform(1.5, 3.5), rng.uniform(1.0, 1.8),
                 rng.uniform(4.0, 7.0)]  # CSF/dura, inner table, diploë, outer table, scalp
    edges = np.cumsum(thickness)
    shell_levels = np.array([levels["csf"], 0.06, rng.uniform(0.6, 0.9), 0.06, rng.uniform(1.0, 1.4), 0.0])
    bias_coef = np.stack([rng.uniform(-1, 1, (3, 2)), rng.uniform(0, 2 * np.pi, (3, 2))], axis=1)  # (3, 2, 2)
    spread = np.sum(np.abs(bias_coef[:, 0, :])) * 2
    gain = float(np.log1p(rng.uniform(*_synthetic._BIAS_RANGE)) / max(0.5 * spread, 1e-6))
    return _Patient(pose=pose, view=view, frame=_view_frame(view), levels=levels, shells=(edges, shell_levels),
                    bias=(bias_coef, gain), wm_level=float(rng.uniform(*_synthetic._WM_LEVEL_RANGE)),
                    noise=float(rng.uniform(*_synthetic._NOISE_RANGE)), fov_mm=float(rng.uniform(215.0, 245.0)),
                    inplane_shift=rng.uniform(-6.0, 6.0, 2))


def _to_head(patient: _Patient, scanner_mm: np.ndarray) -> np.ndarray:
    """(n, 3) scanner mm → head mm."""
    return scanner_mm @ patient.pose[:3, :3].T + patient.pose[:3, 3]


def _slice_offsets(lesion: _Lesion, patient: _Patient, head: _Head, count: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """Positions (mm along the slice normal, scanner frame) of ``count`` neighbouring slices through
    the tumour: spaced like the real series (7 mm) or closer, all where the tumour's cross-section is
    at least a quarter of its largest."""
    centre = np.linalg.solve(patient.pose[:3, :3], lesion.centre - patient.pose[:3, 3])
    reach = lesion.core_reach_mm
    steps = 24
    h = 2 * reach / steps
    grid = (np.arange(steps + 1) - steps / 2) * h
    u, v, n = patient.frame
    a, b, t = np.meshgrid(grid, grid, grid, indexing="ij")
    scanner = centre + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v + t.reshape(-1, 1) * n
    points = _to_head(patient, scanner)
    (signed,) = _sample(head, points.T, (3,))
    inside = lesion.core_inside(points, signed).reshape(a.shape)
    area = inside.sum(axis=(0, 1)).astype(float)
    base = float(centre @ n)
    if area.max() == 0:  # cannot happen for a drawn lesion, but never loop on it
        return base + (np.arange(count) - (count - 1) / 2) * min(_SLICE_SPACING_MM, 1.0)
    peak = int(np.argmax(area))
    ok = area >= 0.25 * area.max()
    lo = hi = peak
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < steps and ok[hi + 1]:
        hi += 1
    t_lo, t_hi = grid[lo], grid[hi]
    if count == 1:
        return np.array([base + grid[peak]])
    spacing = min(_SLICE_SPACING_MM, (t_hi - t_lo) / (count - 1))
    span = spacing * (count - 1)
    start = rng.uniform(t_lo, max(t_hi - span, t_lo))
    return base + start + spacing * np.arange(count)


def _shell_levels(signed: np.ndarray, patient: _Patient) -> np.ndarray:
    """Intensity outside the brain by distance from its surface: CSF, inner table, diploë, outer table,
    scalp, air (soft 0.6 mm steps)."""
    edges, levels = patient.shells
    out = np.full(signed.shape, levels[0], np.float32)
    for edge, before, after in zip(edges, levels[:-1], levels[1:]):
        out += np.float32(after - before) * _smooth_step(signed, edge, 0.6).astype(np.float32)
    return out


def _bias(points_mm: np.ndarray, patient: _Patient) -> np.ndarray:
    """Smooth multiplicative field: exp(gain · Σ_axes Σ_orders c cos(π·order·t + φ)), t ∈ [0, 1] across the FOV."""
    coef, gain = patient.bias
    total = np.zeros(points_mm.shape[1:], np.float32)
    for axis in range(3):
        t = points_mm[axis] / _HEAD_FOV_MM
        for order in (1, 2):
            total += np.float32(coef[axis, 0, order - 1]) * np.cos(np.pi * order * t + coef[axis, 1, order - 1])
    return np.exp(np.float32(gain) * total)


def _tissue(maps: Sequence[np.ndarray], points_mm: np.ndarray, patient: _Patient,
            sinus: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Tumour-free T1ce intensity (relative to white matter) at ``points_mm`` (3, h, w), where the
    head maps are ``maps`` (brain, GM, WM, signed distance; each (h, w))."""
    brain, gm, wm, signed = maps
    lv = patient.levels
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    values = gm * np.float32(lv["gm"]) + wm * np.float32(lv["wm"]) + csf * np.float32(lv["csf"])
    outside = _shell_levels(signed, patient)
    centre, radii = sinus
    q = (points_mm - centre[:, None, None]) / radii[:, None, None]
    in_sinus = _smooth_step(-np.sqrt(np.sum(q * q, axis=0)), -1.0, 0.1).astype(np.float32) * (signed > 1.0)
    outside = outside * (1 - in_sinus) + np.float32(lv["sinus"]) * in_sinus
    values += np.clip(1.0 - brain, 0.0, 1.0) * outside
    return values


def _render_lesion(values: np.ndarray, mask: np.ndarray, points: np.ndarray, maps: Sequence[np.ndarray],
                   lesion: _Lesion, patient: _Patient, pixel_mm: float) -> None:
    """Paint the tumour into ``values`` (n,) and mark what the mask outlines in ``mask`` (n,), at
    ``points`` (n, 3) head mm where the head maps are ``maps`` (brain, GM, WM, signed distance)."""
    brain, gm, wm, signed = maps
    lv = patient.levels
    radius = 1.0 / np.linalg.norm(lesion.to_q, axis=0).max()  # smallest semi-axis, mm
    width = max(pixel_mm, 0.5) / radius  # soft edges over about a pixel, in normalised units
    r = lesion.radius_at(points)
    r_core = lesion.field(points, "core", r, below=_CLEFT + width)
    mask[:] = lesion.core_inside(points, signed, r_core)
    core_w = _smooth_step(-r_core, -1.0, width)
    if lesion.label == 1:
        core_w *= _smooth_step(-signed, -lesion.inner_table_mm, 0.6)
    elif lesion.label == 2:
        core_w *= _smooth_step(-signed, 0.0, 0.6)
    if lesion.label == 1:
        cleft = _smooth_step(-r_core, -_CLEFT, width) * (1 - core_w) * (brain > 0.5)  # CSF cleft around it
        values[:] = values * (1 - 0.6 * cleft) + np.float32(lv["csf"]) * 0.6 * cleft
    elif lesion.label == 2:
        # Edema reaches further into white matter and avoids CSF spaces, as in data.synthetic.
        r_edema = lesion.field(points, "edema", r, below=lesion.edema + 0.5 * _EDEMA_WM_SPREAD + width)
        depth = lesion.edema + _EDEMA_WM_SPREAD * (wm - 0.5) - r_edema
        csf = np.clip(brain - gm - wm, 0, 1) / np.maximum(brain, 1e-3)
        edema_w = _smooth_step(depth, 0.0, width) * (brain > 0.5) * (csf < 0.6)
        strength = 0.8 * (0.5 + 0.5 * np.clip(depth / 0.3, 0, 1))
        edema = strength * lv["edema"] + (1 - strength) * values
        values[:] = values * (1 - edema_w) + edema * edema_w
    active = np.flatnonzero(core_w > 0)
    if not active.size:
        return
    at = points[active]
    texture = lesion.waves_at(at, "texture")
    if lesion.label == 1:
        level = lv["meningioma"] * (1 + 0.03 * texture)
    elif lesion.label == 3:
        level = lv["pituitary"] * (1 + 0.05 * texture)
    else:
        inner = _smooth_step(-lesion.field(at, "necrosis", r[active]), -lesion.necrosis, width)
        level = (lv["rim"] * (1 - inner) + lv["necrosis"] * inner) * (1 + 0.06 * texture)
    w = core_w[active]
    values[active] = values[active] * (1 - w) + level.astype(np.float32) * w


def _clean_mask(mask: np.ndarray, fallback: tuple[int, int]) -> np.ndarray:
    """uint8: the largest connected part of ``mask``, holes filled (a delineated outline encloses one
    region); the pixel ``fallback`` if ``mask`` is empty (tiny images)."""
    out = np.zeros(mask.shape, np.uint8)
    found = np.argwhere(mask)
    if not found.size:
        out[fallback] = 1
        return out
    (r0, c0), (r1, c1) = np.maximum(found.min(0) - 1, 0), found.max(0) + 2
    crop = mask[r0:r1, c0:c1]
    labels, n = ndimage.label(crop)
    if n > 1:
        sizes = ndimage.sum_labels(crop, labels, index=np.arange(1, n + 1))
        crop = labels == 1 + int(np.argmax(sizes))
    out[r0:r1, c0:c1] = ndimage.binary_fill_holes(crop)
    return out


def _upsample(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, pixel-centre aligned resize of a square float32 image to (size, size) (a copy)."""
    from brats_keras.data.slices2d import linear_resize_matrix

    n = image.shape[0]
    image = image.astype(np.float32, copy=False)
    if n == size:
        return image.copy()
    if size == 2 * n:  # the common case, without matrix products: weights 3/4 and 1/4 (edges clamped)
        padded = np.pad(image, 1, mode="edge")
        rows = np.empty((size, n + 2), np.float32)
        rows[0::2] = 0.75 * padded[1:-1] + 0.25 * padded[:-2]
        rows[1::2] = 0.75 * padded[1:-1] + 0.25 * padded[2:]
        out = np.empty((size, size), np.float32)
        out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
        out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
        return out
    m = linear_resize_matrix(n, size)
    return (m @ image.astype(np.float32, copy=False)) @ m.T


def mask_border(mask: np.ndarray, max_points: int = 80) -> np.ndarray:
    """Outer contour of a binary ``mask`` (H, W) as (k, 2) float64 MATLAB image coordinates
    ``(x = column, y = row)``, 1-based, at most ``max_points`` points evenly spaced along it (the
    longest contour when there are several)."""
    import contourpy

    if not np.any(mask):
        return np.zeros((0, 2))
    padded = np.pad(np.asarray(mask, np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    line = max(lines, key=len)[:-1]  # closed: the last point repeats the first
    step = max(1, int(np.ceil(len(line) / max_points)))
    return np.asarray(line[::step], np.float64)  # padding (−1) and 1-based (+1) cancel


def synthesize_figshare_patient(rng: np.random.Generator, label: int, slices: int, size: int = 512, *,
                                pid: str | None = None) -> list[FigshareSlice]:
    """SYNTHETIC T1ce slices of one patient with a tumour of type ``label``, like a figshare patient's.

    The brain is data.synthetic's MNI152 anatomy (grey/white matter, CSF) in a 240 mm cube, with skull
    and scalp as shells around it; the patient gets a small random head pose (rotation ±6°, scale ±5 %,
    shift ±4 mm), a random view (axial, coronal or sagittal; pituitary: coronal or sagittal) and
    ``slices`` neighbouring parallel slices through the tumour (7 mm apart, closer when the tumour is
    small), a 215–245 mm field of view sampled at ``size`` × ``size``. Tumour looks:

    - meningioma (1): extra-axial on the convexity (70 %) or the falx; round, homogeneously and
      brightly enhancing, limited by the skull, with a thin CSF cleft around it;
    - glioma (2): intra-axial in deep white matter; irregular, ring-enhancing with a dark necrotic
      centre, surrounded by hypo-/iso-intense edema reaching further into white matter (the mask
      outlines the enhancing tumour with its necrosis, not the edema);
    - pituitary (3): a small round enhancing mass at the skull-base midline (sella), above the dark
      sphenoid sinus.

    Intensities: data.synthetic's T1ce tissue levels, a smooth bias field, Rician noise and a random
    white-matter level (300–2500), as int16 ≥ 0.

    Args:
        rng: every random draw (the same state gives the same patient).
        label: 1 meningioma, 2 glioma, 3 pituitary.
        slices: number of slices (≥ 1), in order along the slice normal.
        size: image side in pixels (≥ :data:`MIN_SIZE`; the release: 512).
        pid: the patient id; default a random 6-digit string.

    Returns:
        ``slices`` :class:`FigshareSlice` (``path`` None): ``image`` int16 (size, size), ``mask``
        uint8 (one filled region, never empty), ``border`` its outer contour (:func:`mask_border`).
    """
    if int(label) not in FIGSHARE_LABELS:
        raise BratsKerasError(f"label must be 1, 2 or 3, got {label!r}")
    return _synthesize_slices(rng, int(label), slices, size, pid=pid)


def synthesize_tumour_free_slices(rng: np.random.Generator, slices: int, size: int = 512) -> list[np.ndarray]:
    """SYNTHETIC tumour-free T1ce slices of one subject (int16 (size, size) images), drawn like
    :func:`synthesize_figshare_patient`'s (anatomy, pose, view, bias field, noise, contrast) but without a
    lesion: neighbouring slices through the brain within ±35 mm of its centre. Paper 5's "no tumour" class."""
    return [s.image for s in _synthesize_slices(rng, 0, slices, size, pid="0")]


def _synthesize_slices(rng: np.random.Generator, label: int, slices, size, *, pid: str | None
                       ) -> list[FigshareSlice]:
    """:func:`synthesize_figshare_patient`; ``label`` 0 renders no lesion (empty masks, label 0)."""
    if int(slices) < 1:
        raise BratsKerasError(f"slices must be ≥ 1, got {slices}")
    if int(size) < MIN_SIZE:
        raise BratsKerasError(f"size must be ≥ {MIN_SIZE}, got {size}")
    label, slices, size = int(label), int(slices), int(size)
    if pid is None:
        pid = str(rng.integers(100000, 1000000))
    head = _head(_anatomy_grid(size))
    lesion = _draw_lesion(rng, label, head) if label else None
    patient = _draw_patient(rng, label, head)
    if lesion is not None:
        lesion.inner_table_mm = float(patient.shells[0][0])
        offsets = _slice_offsets(lesion, patient, head, slices, rng)
    else:  # neighbouring slices somewhere through the brain
        centre = np.linalg.solve(patient.pose[:3, :3], head.centre_mm - patient.pose[:3, 3]) @ patient.frame[2]
        offsets = centre + rng.uniform(-35.0, 35.0) + min(_SLICE_SPACING_MM, 30.0 / max(slices, 1)) * (
            np.arange(slices) - (slices - 1) / 2)
    sinus = ((head.mni_to_mm @ np.append(_SPHENOID_MNI, 1.0))[:3], _SPHENOID_RADII_MM)

    u, v, n = patient.frame
    linear, shift = patient.pose[:3, :3], patient.pose[:3, 3]
    u_head, v_head = linear @ u, linear @ v
    pixel = patient.fov_mm / size
    coarse = min(size, 2 * _anatomy_grid(size))  # tissue maps are smooth: sample them at ≤ 2 px per voxel
    centre_scanner = np.linalg.solve(linear, head.centre_mm - shift)
    lesion_scanner = None if lesion is None else np.linalg.solve(linear, lesion.centre - shift)
    out = []
    for offset in offsets:
        origin = (centre_scanner - (centre_scanner @ n) * n + offset * n
                  + patient.inplane_shift[0] * u + patient.inplane_shift[1] * v)
        origin_head = linear @ origin + shift

        def plane(rows: np.ndarray, cols: np.ndarray, step: float) -> np.ndarray:
            """Head mm (3, len(rows), len(cols)) of pixel centres (``rows``, ``cols``: pixel offsets
            from the image centre, in units of ``step`` mm)."""
            return (origin_head[:, None, None] + (cols[None, None, :] * step) * u_head[:, None, None]
                    + (rows[None, :, None] * step) * v_head[:, None, None]).astype(np.float32)

        axis = np.arange(coarse) - (coarse - 1) / 2
        points = plane(axis, axis, patient.fov_mm / coarse)
        maps = _sample(head, points, (0, 1, 2, 3))
        image = _upsample(_tissue(maps, points, patient, sinus), size)
        axis = np.arange(32) - 15.5
        bias = _upsample(_bias(plane(axis, axis, patient.fov_mm / 32), patient), size)

        mask = np.zeros((size, size), np.uint8)
        if lesion is not None:
            drawn = np.zeros((size, size), bool)
            # The tumour, evaluated at full resolution in the square around its projection.
            rel = lesion_scanner - origin
            c0, r0 = rel @ u / pixel + (size - 1) / 2, rel @ v / pixel + (size - 1) / 2
            half = lesion.reach_mm / pixel + 2
            r_lo, r_hi = int(np.clip(np.floor(r0 - half), 0, size)), int(np.clip(np.ceil(r0 + half) + 1, 0, size))
            c_lo, c_hi = int(np.clip(np.floor(c0 - half), 0, size)), int(np.clip(np.ceil(c0 + half) + 1, 0, size))
            if r_hi > r_lo and c_hi > c_lo:
                rows = np.arange(r_lo, r_hi) - (size - 1) / 2
                cols = np.arange(c_lo, c_hi) - (size - 1) / 2
                window = plane(rows, cols, pixel).reshape(3, -1).T
                near = np.sum((window - lesion.centre) ** 2, axis=1) <= lesion.reach_mm**2
                patch = image[r_lo:r_hi, c_lo:c_hi].reshape(-1)
                values, inside = patch[near], np.zeros(int(near.sum()), bool)
                window_maps = [_upsample(m, size)[r_lo:r_hi, c_lo:c_hi].reshape(-1)[near] for m in maps]
                _render_lesion(values, inside, window[near], window_maps, lesion, patient, pixel)
                patch[near] = values
                image[r_lo:r_hi, c_lo:c_hi] = patch.reshape(r_hi - r_lo, c_hi - c_lo)
                patch_mask = np.zeros(near.shape, bool)
                patch_mask[near] = inside
                drawn[r_lo:r_hi, c_lo:c_hi] = patch_mask.reshape(r_hi - r_lo, c_hi - c_lo)
            fallback = (int(np.clip(round(r0), 0, size - 1)), int(np.clip(round(c0), 0, size - 1)))
            mask = _clean_mask(drawn, fallback)

        # Bias field, Rician noise (magnitude of a complex signal with Gaussian noise), contrast level.
        image *= bias
        noise = rng.standard_normal((2, size, size), dtype=np.float32)
        noise *= np.float32(patient.noise)
        image += noise[0]
        np.square(image, out=image)
        np.square(noise[1], out=noise[1])
        image += noise[1]
        np.sqrt(image, out=image)
        image *= np.float32(patient.wm_level)
        image = np.clip(np.rint(image, out=image), 0, np.iinfo(np.int16).max).astype(np.int16)
        out.append(FigshareSlice(path=None, label=label, pid=pid, image=image, mask=mask,
                                 border=mask_border(mask) if lesion is not None else np.zeros((0, 2))))
    return out


# ------------------------------------------------------------------------------ synthetic: data set
_EPOCH = time.gmtime(0)
"""The date in synthetic files' MATLAB header: fixed, so the same seed gives the same bytes."""


def synthetic_pid(seed: int, patient: int) -> str:
    """A 6-digit patient id, distinct for every patient number below 900 000 of one seed
    (``patient · 7919`` is a bijection modulo 900 000)."""
    return str(100000 + (int(patient) * 7919 + int(seed) * 104729 + 260) % 900000)


def write_figshare_dataset(out_dir, *, patients: int, slices_per_patient: int, seed: int = 0, size: int = 512,
                           progress: bool = True) -> list[Path]:
    """Write a SYNTHETIC figshare-like set: ``1.mat``, ``2.mat``, … flat in ``out_dir``.

    Patient ``n`` (0, 1, …) has tumour type ``1 + n % 3`` (meningioma, glioma, pituitary in turn, so
    every class gets patients when ``patients ≥ 3``), is drawn from ``default_rng([seed, n])`` and
    gets :func:`synthetic_pid`; its ``slices_per_patient`` slices get consecutive file numbers, as a
    patient's slices do in the real release. The header date is the Unix epoch, so the same arguments
    give byte-identical files. ``SYNTHETIC_DATA.json`` marks the folder
    (:func:`brats_keras.data.synthetic.is_synthetic_dataset`). Files are written atomically. Numbered
    slice files beyond this set left by an earlier, larger synthetic set are removed; a folder with
    other slice files that is not marked synthetic is refused.

    Returns:
        The files written, in order.
    """
    from brats_keras.progress import progress_bar

    if int(patients) < 1:
        raise BratsKerasError(f"patients must be ≥ 1, got {patients}")
    if int(slices_per_patient) < 1:
        raise BratsKerasError(f"slices_per_patient must be ≥ 1, got {slices_per_patient}")
    if int(seed) < 0:
        raise BratsKerasError(f"seed must be ≥ 0, got {seed}")
    if int(size) < MIN_SIZE:
        raise BratsKerasError(f"size must be ≥ {MIN_SIZE}, got {size}")
    out_dir = Path(out_dir)
    total = int(patients) * int(slices_per_patient)
    if out_dir.is_dir():
        extra = [p for p in out_dir.iterdir() if (m := _SLICE_NAME.match(p.name)) and int(m.group(1)) > total]
        if extra and not (out_dir / SYNTHETIC_MARKER).is_file():
            raise BratsKerasError(f"{out_dir} holds {len(extra)} slice files (e.g. {extra[0].name}) that are not "
                                  "part of this set and is not a synthetic set: choose an empty folder")
        for path in extra:
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # Compressing and writing patient n's files (HDF5's deflate) overlaps with synthesising patient n + 1.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for n in progress_bar(range(int(patients)), desc="synthetic figshare", unit="patient", disable=not progress):
            rng = np.random.default_rng([int(seed), n])
            slices = synthesize_figshare_patient(rng, 1 + n % 3, int(slices_per_patient), int(size),
                                                 pid=synthetic_pid(seed, n))
            first = len(written) + 1
            paths = [out_dir / f"{first + i}.mat" for i in range(len(slices))]
            if pending is not None:
                pending.result()
            pending = writer.submit(lambda ps, ss: [write_figshare_mat(p, s, created=_EPOCH) for p, s in zip(ps, ss)],
                                    paths, slices)
            written.extend(paths)
        pending.result()
    write_atomic(out_dir / SYNTHETIC_MARKER, (
        '{"synthetic": true, "generator": "brats_keras.data.figshare", "note": "not patient data"}\n').encode())
    return written


def ensure_synthetic_figshare(cache_dir=None, *, patients: int = 24, slices_per_patient: int = 6, seed: int = 0,
                              size: int = 512, progress: bool = True) -> Path:
    """A synthetic figshare set generated once into
    ``<cache>/synthetic/figshare_<patients>p_<slices>s_seed<seed>_<size>`` and reused afterwards
    (``<cache>``: ``$BRATS_KERAS_CACHE`` or ``~/.cache/brats_keras``). A ``.complete.json`` marker is
    written last, so an interrupted generation is redone."""
    from brats_keras.data.slices2d import default_cache_dir
    from brats_keras.io_utils import atomic_write_json

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / f"figshare_{int(patients)}p_{int(slices_per_patient)}s_seed{int(seed)}_{int(size)}"
    marker = folder / ".complete.json"
    if not marker.is_file():
        write_figshare_dataset(folder, patients=patients, slices_per_patient=slices_per_patient, seed=seed, size=size,
                               progress=progress)
        atomic_write_json(marker, {"dataset": "figshare", "patients": int(patients),
                                   "slices_per_patient": int(slices_per_patient), "seed": int(seed),
                                   "size": int(size), "synthetic": True})
    return folder


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
    from brats_keras.data.slices2d import resize_images

    return resize_images(image[None, :, :, None], size)[0, :, :, 0]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square mask (H, H) to (size, size), uint8."""
    from brats_keras.data.slices2d import nearest_resize_index

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


# ------------------------------------------------------------------------------------------ splits
def patient_ids(items: Iterable) -> list[str]:
    """The patient id of each item: a :class:`FigshareSlice` / :class:`FigshareMeta` (its ``pid``) or
    a path (read with :func:`read_figshare_meta`, PID and label only)."""
    return [item.pid if hasattr(item, "pid") else read_figshare_meta(item).pid for item in items]


def read_figshare_metas(paths: Iterable, *, progress: bool = False) -> list[FigshareMeta]:
    """:func:`read_figshare_meta` of every slice file (PID and label only), in order."""
    from brats_keras.progress import progress_bar

    return [read_figshare_meta(p) for p in progress_bar([Path(p) for p in paths], desc="reading patient ids",
                                                        unit="file", disable=not progress)]


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
    from brats_keras.data.splits import SPLIT_NAMES, split_cases

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
