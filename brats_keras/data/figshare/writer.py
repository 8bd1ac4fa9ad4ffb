"""Writing the figshare set: one slice as MATLAB's ``save(f, 'cjdata', '-v7.3')`` writes it, and a whole
SYNTHETIC set (:func:`write_figshare_dataset`, cached once by :func:`ensure_synthetic_figshare`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from brats_keras.data.figshare.generator import synthesize_figshare_patient
from brats_keras.data.figshare.reader import (
    _SLICE_NAME, FIGSHARE_FIELDS, FIGSHARE_LABELS, MAT73_USERBLOCK, MIN_SIZE, FigshareSlice,
)
from brats_keras.data.synthetic import SYNTHETIC_MARKER, write_atomic
from brats_keras.errors import BratsKerasError, DataError
from brats_keras.io import atomic_path, atomic_write_json, default_cache_dir
from brats_keras.progress import progress_bar


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
