"""Decode-once caches of prepared 2D samples: one source file → one row of each ``.npy`` array.

The figshare slices (paper 4), the brain-tumour MRI image folders and the LGG ``.tif`` slices
(paper 5) are small files read once and served many times. :class:`PreparedArrayCache` decodes a
list of sources into ``<cache>/<kind>/<key>/<name>.npy`` (one row per source, written through
memory maps to temporary files and moved into place) plus ``meta.json``, written last: the record of
each file's size and mtime, each row's extra values (a patient id, a class) and the sources that
could not be decoded. A source is one file, or a tuple of files that make one row together (an LGG
image and its mask); every file of it is fingerprinted. ``<key>`` hashes the settings and the
resolved sources, so other settings or another list use another folder; a changed, added or removed
file rebuilds the set.

A file that fails to decode either stops the build with its :class:`~brats_keras.errors.DataError`
(``on_error="raise"``: figshare) or is reported and left out (``on_error="skip"``: paper 5's image
sets, whose results count the skipped files). Its row stays zero and is not listed in ``rows``.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from brats_keras.errors import DataError
from brats_keras.io import atomic_path, atomic_save_npy, atomic_write_json, default_cache_dir, read_json_or_none
from brats_keras.progress import progress_bar

ON_ERROR = ("raise", "skip")
FORMAT_VERSION = 3

Source = Union[Path, tuple[Path, ...]]
"""One row's files: a path, or a tuple of paths decoded together."""
Decoder = Callable[[Source], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]
"""``decode(source) → ({array name: row}, {record field: JSON value})``, ``source`` resolved and as
given (a path or a tuple of paths); raises ``DataError`` for a bad file."""


def _resolve(sources: Sequence) -> list[Source]:
    return [tuple(Path(p).resolve() for p in s) if isinstance(s, (tuple, list)) else Path(s).resolve()
            for s in sources]


def _files(source: Source) -> tuple[Path, ...]:
    return source if isinstance(source, tuple) else (source,)


@dataclass(frozen=True)
class PreparedArrays:
    """A built (or found) set: ``arrays[name]`` is an ``.npy`` file with one row per source;
    ``paths`` holds each source's (first) file; ``rows`` are the rows that hold a decoded source,
    ``records[i]`` the extra values of ``rows[i]``; ``skipped`` lists ``{"path", "problem"}`` of the
    sources left out."""

    folder: Path
    arrays: dict[str, Path]
    paths: tuple[Path, ...]
    rows: tuple[int, ...]
    records: tuple[dict, ...]
    skipped: tuple[dict, ...]


def fingerprint(paths: Sequence[Path]) -> list[list]:
    """``[path, size, mtime_ns]`` per file; a missing file is a ``DataError`` naming it."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            raise DataError("file not found", path=path) from None
        out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


class PreparedArrayCache:
    """Prepared arrays of ``kind`` under ``root`` (see the module docstring).

    Args:
        kind: sub-folder of the cache (``"figshare"``, ``"brain_tumor_mri"``, ``"lgg"``).
        settings: JSON-able settings hashed into the key and saved in ``meta.json``.
        specs: ``{name: (row shape, dtype)}`` of the arrays each decoded file fills.
        decode: :data:`Decoder`.
        root: the cache folder (``$BRATS_KERAS_CACHE`` by default).
        on_error: ``"raise"`` or ``"skip"`` for files that fail to decode.
        workers: files decoded in parallel threads (image decoders release the GIL).
        desc: the progress bar's label.
    """

    def __init__(self, kind: str, settings: Mapping[str, Any], specs: Mapping[str, tuple[tuple[int, ...], Any]],
                 decode: Decoder, *, root=None, on_error: str = "raise", workers: int = 1, desc: str = "preparing"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error: {on_error!r} not in {ON_ERROR}")
        if int(workers) < 1:
            raise ValueError(f"workers: must be ≥ 1, got {workers}")
        self.kind, self.settings = kind, dict(settings)
        self.specs = {name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in specs.items()}
        self.decode, self.on_error, self.workers, self.desc = decode, on_error, int(workers), desc
        self.root = Path(root) if root is not None else default_cache_dir()

    def folder(self, sources: Sequence) -> Path:
        payload = json.dumps({"version": FORMAT_VERSION, "kind": self.kind, "settings": self.settings,
                              "files": [[str(p) for p in _files(s)] for s in _resolve(sources)]}, sort_keys=True)
        return self.root / self.kind / hashlib.sha1(payload.encode()).hexdigest()[:16]

    def lookup(self, sources: Sequence) -> PreparedArrays | None:
        """The prepared arrays of ``sources`` if they exist and every file is unchanged."""
        sources = _resolve(sources)
        return self._fresh(self.folder(sources), sources, self._fingerprint(sources))

    @staticmethod
    def _fingerprint(sources: list[Source]) -> list[list]:
        return [fingerprint(_files(s)) for s in sources]

    def _fresh(self, folder: Path, sources: list[Source], stats: list[list]) -> PreparedArrays | None:
        meta = read_json_or_none(folder / "meta.json")
        arrays = {name: folder / f"{name}.npy" for name in self.specs}
        if not meta or meta.get("sources") != stats or not all(p.is_file() for p in arrays.values()):
            return None
        return PreparedArrays(folder, arrays, tuple(_files(s)[0] for s in sources), tuple(meta["rows"]),
                              tuple(meta["records"]), tuple(meta["skipped"]))

    def ensure(self, sources: Sequence, *, progress: bool = True) -> PreparedArrays:
        """Prepared arrays for ``sources`` (in order), decoding them only when the set is missing
        or stale. With ``on_error="raise"`` a bad file raises its ``DataError`` and nothing
        half-written is left behind; no sources give empty arrays."""
        sources = _resolve(sources)
        stats = self._fingerprint(sources)
        folder = self.folder(sources)
        fresh = self._fresh(folder, sources, stats)
        if fresh is not None:
            return fresh
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        rows, records, skipped = self._build(folder, sources, progress)
        # The record is written last: it is what marks the arrays valid.
        atomic_write_json(folder / "meta.json", {"kind": self.kind, "settings": self.settings, "sources": stats,
                                                 "rows": rows, "records": records, "skipped": skipped})
        return self._fresh(folder, sources, stats)

    def _build(self, folder: Path, paths: list[Source], progress: bool) -> tuple[list[int], list[dict], list[dict]]:
        from contextlib import ExitStack

        rows, records, skipped = [], [], []
        if not paths:  # an empty part of a split: empty arrays (an empty file cannot be memory-mapped)
            for name, (shape, dtype) in self.specs.items():
                atomic_save_npy(folder / f"{name}.npy", np.zeros((0, *shape), dtype))
            return rows, records, skipped
        with ExitStack() as stack:
            tmps = {name: stack.enter_context(atomic_path(folder / f"{name}.npy")) for name in self.specs}
            out = {name: np.lib.format.open_memmap(tmps[name], mode="w+", dtype=dtype, shape=(len(paths), *shape))
                   for name, (shape, dtype) in self.specs.items()}
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=self.workers))
            bar = stack.enter_context(progress_bar(total=len(paths), desc=self.desc, unit="file", disable=not progress))

            def one(source):
                try:
                    return self.decode(source), None
                except DataError as exc:
                    if self.on_error == "raise":
                        raise
                    return None, exc

            for i, (result, error) in enumerate(pool.map(one, paths)):
                bar.update(1)
                if result is None:  # the file the error names (an LGG mask, say), else the source's first
                    skipped.append({"path": error.path or str(_files(paths[i])[0]), "problem": error.problem})
                    continue
                values, record = result
                for name, (shape, _) in self.specs.items():
                    value = np.asarray(values[name])
                    if value.shape != shape:
                        raise DataError(f"prepared {name} has shape {value.shape}, expected {shape}",
                                        path=_files(paths[i])[0])
                    out[name][i] = value
                rows.append(i)
                records.append(dict(record))
            for array in out.values():
                array.flush()
            del out
        return rows, records, skipped


class PreparedIndex:
    """Random access to the decoded rows of a :class:`PreparedArrays` for ``data.pipeline``:
    ``gather(indices) → (x, y)`` with ``x`` float32 (``x_scale`` times the stored values) and ``y``
    uint8, both memory-mapped. Item ``i`` is row ``arrays.rows[i]``; ``paths[i]`` and ``records[i]``
    describe it. ``num_classes`` is the number of classes ``y`` indexes (its one-hot depth)."""

    def __init__(self, arrays: PreparedArrays, *, num_classes: int, x: str = "x", y: str = "y",
                 x_scale: float = 1.0):
        self.arrays = arrays
        self.num_classes = int(num_classes)
        self._rows = np.asarray(arrays.rows, dtype=np.int64)
        mode = "r" if arrays.paths else None  # an empty file cannot be memory-mapped
        self._x = np.load(arrays.arrays[x], mmap_mode=mode)
        self._y = np.load(arrays.arrays[y], mmap_mode=mode)
        if len(self._x) != len(arrays.paths) or len(self._y) != len(arrays.paths):
            raise DataError(f"prepared arrays hold {len(self._x)} rows, the record {len(arrays.paths)}",
                            path=arrays.folder)
        self._scale = np.float32(x_scale)
        self.paths = [arrays.paths[r] for r in self._rows]
        self.records = list(arrays.records)
        self.x_shape = tuple(self._x.shape[1:])
        self.y_shape = tuple(self._y.shape[1:])

    def __len__(self) -> int:
        return len(self._rows)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[np.asarray(indices, dtype=np.int64).reshape(-1)]
        x = np.asarray(self._x[rows], dtype=np.float32)
        if self._scale != 1:
            x *= self._scale
        return x, np.asarray(self._y[rows], dtype=np.uint8)

    def targets(self, indices=None) -> np.ndarray:
        """``y`` (uint8) of ``indices`` (every item by default) without reading the images."""
        rows = self._rows if indices is None else self._rows[np.asarray(indices, dtype=np.int64).reshape(-1)]
        return np.asarray(self._y[rows], dtype=np.uint8)

    def field(self, name: str) -> list:
        """``records[i][name]`` for every item."""
        return [record[name] for record in self.records]
