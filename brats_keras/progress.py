"""How progress is shown: a live bar on a terminal, plain lines in a log file.

One place decides (:func:`progress_mode`) and everything that shows progress asks it: the Keras
training loop (:func:`brats_keras.training.fit`, through :func:`brats_keras.callbacks.fit_progress`)
and the loops over cases, slices and files (:func:`progress_bar`, a drop-in for ``tqdm``).

* ``bar`` — the stream is a terminal: Keras' progress bar and tqdm's bars, as before.
* ``line`` — the stream is not a terminal (``nohup``, CI, a scheduler's log file, ``> run.log``):
  no bars, no carriage returns or ANSI codes; training prints one line per epoch, a loop prints a
  line every :data:`LINE_INTERVAL_S` seconds and one when it ends.
* ``none`` — no progress output at all (the messages a run prints otherwise stay).

The environment variable ``BRATS_KERAS_PROGRESS=bar|line|none`` forces a mode for every stream
(e.g. ``line`` in a terminal to get the log-file format, ``bar`` in a notebook whose output is not
a terminal). This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, TextIO

PROGRESS_ENV = "BRATS_KERAS_PROGRESS"
"""Environment variable that forces a progress mode (``bar``, ``line`` or ``none``)."""
MODES = ("bar", "line", "none")
LINE_INTERVAL_S = 30.0
"""In ``line`` mode a loop prints at most one progress line this often (and one at its end)."""


def progress_mode(stream: TextIO | None = None) -> str:
    """``bar``, ``line`` or ``none`` for progress written to ``stream`` (default ``sys.stderr``).

    ``BRATS_KERAS_PROGRESS`` wins when set (case and surrounding blanks ignored; an empty value
    counts as unset); otherwise ``bar`` when ``stream`` is a terminal, else ``line``. A value
    outside ``bar | line | none`` raises ``ValueError`` naming the valid ones.
    """
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r}: must be one of {', '.join(MODES)}")
        return forced
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "line"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "line"


def format_count(n: float, unit: str) -> str:
    """``"1 case"``, ``"12 cases"``: a count with its unit, plural unless it is 1."""
    n = int(n) if float(n).is_integer() else n
    return f"{n} {unit}" if n == 1 or not unit or unit.endswith("s") else f"{n} {unit}s"


class LineProgress:
    """A ``tqdm`` look-alike for log files: plain lines, no carriage returns or ANSI codes.

    Supports what the package's loops use: iteration over ``iterable``, ``update(n)``, ``close()``
    and use as a context manager. It prints ``"<desc>: 3/12 cases (25%), 31.0 s"`` at most once
    every ``interval`` seconds while running, and ``"<desc>: 12/12 cases, 75.2 s"`` once when it is
    closed (or its iterable is exhausted) unless ``leave`` is false. Each line is flushed.
    """

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 unit: str = "it", leave: bool = True, file: TextIO | None = None,
                 interval: float = LINE_INTERVAL_S):
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.unit = unit
        self.leave = leave
        self.file = file
        self.interval = float(interval)
        self.n = 0
        self.start = time.monotonic()
        self._last_line = self.start
        self._closed = False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more items; print a progress line if ``interval`` has passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last_line >= self.interval and not self._closed:
            self._last_line = now
            percent = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
            self._print(f"{self._count()}{percent}, {now - self.start:.1f} s")

    def close(self) -> None:
        """Print the final line (with ``leave``) once."""
        if self._closed:
            return
        self._closed = True
        if self.leave:
            self._print(f"{self._count()}, {time.monotonic() - self.start:.1f} s")

    def _count(self) -> str:
        done = format_count(self.n, self.unit)
        return done if self.total is None else f"{self.n:g}/{format_count(self.total, self.unit)}"

    def _print(self, text: str) -> None:
        prefix = f"{self.desc}: " if self.desc else ""
        print(prefix + text, file=self.file or sys.stderr, flush=True)


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
                 leave: bool = True, disable: bool = False, file: TextIO | None = None, **tqdm_kwargs: Any):
    """A progress bar over ``iterable`` (or updated by hand with ``total``), shown as
    :func:`progress_mode` decides for ``file`` (default ``sys.stderr``).

    ``bar``: ``tqdm.auto.tqdm`` with these arguments (``tqdm_kwargs`` passed on). ``line``: a
    :class:`LineProgress`. ``none``, or ``disable``: a disabled tqdm (iterates, counts, prints
    nothing). Every result supports iteration, ``update(n)``, ``close()`` and ``with``.
    """
    from tqdm.auto import tqdm

    mode = "none" if disable else progress_mode(file)
    if mode == "line":
        return LineProgress(iterable, desc=desc, total=total, unit=unit, leave=leave, file=file)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=file, disable=mode == "none",
                **tqdm_kwargs)


def progress_write(message: str) -> None:
    """Print ``message`` on a line of its own to standard output, flushed, without breaking an open
    tqdm bar (``tqdm.write``); the way to report per-item results inside a :func:`progress_bar` loop."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
