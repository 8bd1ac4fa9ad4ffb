"""Exception types of the package and the CLI wrapper that turns them into one-line errors."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class BratsKerasError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(BratsKerasError, ValueError):
    """A data file or folder is missing, unreadable or holds values the pipeline cannot use.

    The message always names the case (when known), the file and the problem, so a user can go
    straight to the offending file::

        DataError: case BraTS20_Training_007: .../BraTS20_Training_007_seg.nii.gz: labels {3} ...
    """

    def __init__(self, problem: str, *, case: str | None = None, path: str | None = None):
        self.problem = problem
        self.case = case
        self.path = None if path is None else str(path)
        parts = []
        if case:
            parts.append(f"case {case}")
        if self.path:
            parts.append(self.path)
        parts.append(problem)
        super().__init__(": ".join(parts))


def _close_progress_bars() -> None:
    """Close the tqdm bars an exception left open, so the message starts on a line of its own
    (an open bar ends its line only when it is closed)."""
    tqdm = sys.modules.get("tqdm")
    instances = getattr(getattr(tqdm, "tqdm", None), "_instances", None) if tqdm else None
    for bar in list(instances or ()):
        bar.close()


def cli_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a CLI ``main``: package errors become ``error: <message>`` on stderr and exit 2.

    No traceback is printed for errors the package raised on purpose (bad data, bad arguments);
    anything else is a bug and propagates with its traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except BratsKerasError as exc:
            _close_progress_bars()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            _close_progress_bars()
            print("interrupted", file=sys.stderr)
            return 130
        return 0 if code is None else int(code)

    return wrapper
