"""Markdown tables of a run: the paper's numbers beside the measured ones.

:func:`epoch_table` — per-epoch table, e.g. paper 1's Tables 6.1 / 6.2: one row per epoch the paper
reports, each metric as a *measured* column next to a *paper* column. :func:`comparison_table` —
model × metric table, e.g. paper 2's Tables III / IV, paper 4's Table 3.
:func:`classification_report_markdown` — paper 5's per-class precision / recall / F1 (the numbers:
:func:`brats_keras.evaluation.classification_report`). :func:`history_to_epoch_dict` turns a Keras
history into 1-based epochs; :func:`write_markdown` writes sections atomically.

Units: **measured** values are taken as the code computes them (fractions, e.g. accuracy 0.9791, loss
0.0909) and multiplied by the column's ``scale``; **paper** values are given exactly as the paper
prints them (e.g. ``97.91`` in a percent table) and are never scaled. A paper value never appears in
a measured column: a row the run did not reach reads ``not run``; a metric the run did not log reads
``not measured``; a cell the paper leaves empty reads ``—``. ``synthetic=True`` adds a bold warning
that the data were synthetic and the comparison is not a replication.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brats_keras.io import atomic_write_text, history_dict

NOT_RUN = "not run"
"""Measured cell of a row (epoch, model) the run never reached."""

NOT_MEASURED = "not measured"
"""Measured cell of a row the run reached but whose metric it did not log."""

NOT_IN_PAPER = "—"
"""Paper cell the paper leaves empty (or a measured row the paper does not have)."""

SYNTHETIC_WARNING = (
    "**WARNING: SYNTHETIC DATA. The measured values come from synthetic stand-in data (not patient images); "
    "this comparison with the paper's numbers is NOT a replication.**"
)


@dataclass(frozen=True)
class Column:
    """One metric of a comparison table: a measured column and (by default) a paper column.

    Args:
        key: metric name in the measured mapping (e.g. ``"val_accuracy"``, ``"loss"``).
        label: header text, e.g. ``"test acc (%)"``; the header becomes ``"<label> — measured"``
            and ``"<label> — paper"``.
        scale: measured values are multiplied by this before formatting (``100`` turns the
            fraction 0.9791 into the percent ``97.91``). Paper values are never scaled.
        decimals: digits after the decimal point, for both columns.
        paper_key: metric name in the paper mapping; defaults to ``key``.
        in_paper: ``False`` for a metric the paper does not report (e.g. the per-region Dice that
            keeps paper 1's pixel-accuracy table honest): only a measured column is shown.
    """

    key: str
    label: str
    scale: float = 1.0
    decimals: int = 4
    paper_key: str | None = None
    in_paper: bool = True

    def __post_init__(self):
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"Column key must be a non-empty string, got {self.key!r}")
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Column label must be a non-empty string, got {self.label!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale != 0):
            raise ValueError(f"Column scale must be a finite non-zero number, got {self.scale!r}")
        if not isinstance(self.decimals, int) or not 0 <= self.decimals <= 10:
            raise ValueError(f"Column decimals must be an int in 0..10, got {self.decimals!r}")

    @property
    def paper_name(self) -> str:
        return self.paper_key or self.key

    @classmethod
    def coerce(cls, spec: "Column | Sequence[Any]") -> "Column":
        """Accept a :class:`Column` or a tuple ``(key, label[, scale[, decimals]])``.

        ``scale`` may be a number or ``"percent"`` (= 100). Without ``decimals`` a percent column
        gets 2 decimals and any other column 4 (the papers print 97.91 and 0.9908).
        """
        if isinstance(spec, Column):
            return spec
        if isinstance(spec, str) or not isinstance(spec, Sequence) or not 2 <= len(spec) <= 4:
            raise ValueError(
                f"columns: expected a Column or a tuple (key, label[, scale[, decimals]]), got {spec!r}"
            )
        key, label, *rest = spec
        scale: Any = rest[0] if rest else 1.0
        if isinstance(scale, str):
            if scale.strip().lower() not in ("percent", "%"):
                raise ValueError(f"columns: scale must be a number or 'percent', got {scale!r} in {spec!r}")
            scale = 100.0
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"columns: scale must be a number or 'percent', got {scale!r} in {spec!r}")
        decimals = rest[1] if len(rest) > 1 else (2 if scale == 100 else 4)
        return cls(key=key, label=label, scale=float(scale), decimals=decimals)


def _format_number(value: Any, decimals: int) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{decimals}f}"


def _escape(text: Any) -> str:
    """Make a value safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_left: int) -> str:
    lines = ["| " + " | ".join(_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join(":---" if i < align_left else "---:" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(_escape(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)


def _headers(columns: Sequence[Column]) -> list[str]:
    """Column headers; ``— measured`` / ``— paper`` only tell the two apart when a paper column exists."""
    with_paper = any(col.in_paper for col in columns)
    header = []
    for col in columns:
        header.append(f"{col.label} — measured" if with_paper else col.label)
        if col.in_paper:
            header.append(f"{col.label} — paper")
    return header


def _cells(columns: Sequence[Column], measured: Mapping[str, Any] | None, paper: Mapping[str, Any] | None,
           *, row_missing: str) -> list[str]:
    """Cells of one row. ``measured is None`` means the run has no such row (``row_missing``); a
    measured text (e.g. "epoch 12 (best 7)") is written as it is."""
    cells = []
    for col in columns:
        if measured is None:
            cells.append(row_missing)
        elif col.key not in measured or measured[col.key] is None:
            cells.append(NOT_MEASURED)
        elif isinstance(measured[col.key], str):
            cells.append(measured[col.key])
        else:
            cells.append(_format_number(float(measured[col.key]) * col.scale, col.decimals))
        if col.in_paper:
            if paper is None or paper.get(col.paper_name) is None:
                cells.append(NOT_IN_PAPER)
            else:
                cells.append(_format_number(paper[col.paper_name], col.decimals))
    return cells


def _preamble(title: str | None, synthetic: bool, with_paper: bool = True) -> list[str]:
    parts = []
    if title:
        parts.append(f"### {_escape(title)}")
    if synthetic:
        parts.append(SYNTHETIC_WARNING)
    if with_paper:
        parts.append(
            "Columns marked *measured* hold this run's values; columns marked *paper* are copied from "
            "the paper for comparison and were not produced by this code."
        )
    else:
        parts.append("Every value is measured by this run (the paper has nothing to set beside it).")
    return parts


def _check_epoch(epoch: Any, where: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
        raise ValueError(f"{where}: epochs must be integers counted from 1, got {epoch!r}")
    return int(epoch)


def epoch_table(
    measured: Mapping[int, Mapping[str, float]],
    paper: Mapping[int, Mapping[str, float]],
    columns: Sequence[Column | Sequence[Any]],
    *,
    title: str | None = None,
    synthetic: bool = False,
    note: str | None = None,
) -> str:
    """Markdown table of the paper's epochs with the measured values next to the paper's.

    The rows are exactly the epochs the paper reports, in increasing order (e.g. 5, 6, 8, 10, 15,
    20 for paper 1's Table 6.1). Measured values at epochs the paper does not list are **omitted**
    (they stay in ``history.csv``); a paper epoch the run never reached shows ``not run`` in every
    measured column — never the paper's value. A footnote states how far the run got.

    Args:
        measured: ``{epoch (1-based): {metric: value}}`` as computed (fractions), e.g. from
            :func:`history_to_epoch_dict`.
        paper: ``{epoch: {metric: value}}`` in the paper's printed units (e.g. ``97.91``).
        columns: :class:`Column` objects or tuples ``(key, label[, scale[, decimals]])``; e.g.
            ``("val_accuracy", "test acc (%)", "percent")``.
        title: heading, e.g. ``"Paper 1, Table 6.1 — test accuracy and loss"``.
        synthetic: add the bold synthetic-data warning.
        note: an extra sentence printed under the table.

    Raises:
        ValueError: no columns, a malformed column, an epoch that is not a positive integer,
            or a paper with no epochs.
    """
    cols = [Column.coerce(c) for c in columns]
    if not cols:
        raise ValueError("columns: at least one column is required")
    if not paper:
        raise ValueError("paper: the paper reports no epochs; an epoch table needs the paper's epochs as rows")
    paper_rows = {_check_epoch(e, "paper"): dict(v) for e, v in paper.items()}
    measured_rows = {_check_epoch(e, "measured"): dict(v) for e, v in measured.items()}

    rows = [
        [str(epoch)] + _cells(cols, measured_rows.get(epoch), paper_rows[epoch], row_missing=NOT_RUN)
        for epoch in sorted(paper_rows)
    ]
    parts = _preamble(title, synthetic)
    parts.append(_markdown_table(["epoch"] + _headers(cols), rows, align_left=1))

    last = max(measured_rows) if measured_rows else 0
    footnote = (
        f"Rows are the epochs the paper reports. This run logged {len(measured_rows)} epoch(s)"
        + (f", up to epoch {last}" if last else "")
        + "; measured values at epochs the paper does not list are omitted here (see history.csv)."
    )
    if any(epoch not in measured_rows for epoch in paper_rows):
        footnote += f" *{NOT_RUN}*: the run stopped before that epoch."
    parts.append(footnote)
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def _row_key(row: Mapping[str, Any], key: tuple[str, ...], where: str) -> tuple[str, ...]:
    try:
        return tuple(str(row[k]) for k in key)
    except KeyError as exc:
        raise ValueError(f"{where}: row {dict(row)!r} has no key field {exc.args[0]!r}") from None


def comparison_table(
    rows: Sequence[Mapping[str, Any]],
    paper_rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column | Sequence[Any]] | None = None,
    *,
    key: str | Sequence[str] = "model",
    title: str | None = None,
    synthetic: bool = False,
    note: str | None = None,
) -> str:
    """Markdown model × metric table with each measured column beside the paper's.

    Rows follow the paper's order (e.g. paper 2's Table III: Simple / Optimized / Spatial-attention
    U-Net). A paper row the run did not produce shows ``not run`` in its measured cells; a
    measured row the paper does not have is appended after the paper's rows with ``—`` in the
    paper cells, so no measured result is dropped.

    Args:
        rows: measured rows, e.g. ``{"model": "Simple U-Net", "accuracy": 0.991, "val_iou": 0.67}``.
        paper_rows: the paper's rows in its printed units, same key field(s).
        columns: :class:`Column` objects or tuples ``(key, label[, scale[, decimals]])``; by default
            every field of the paper's rows other than the key, unscaled, 4 decimals.
        key: the field(s) naming a row; a tuple for compound keys, e.g. ``("model", "set")`` for
            paper 2's Table IV.
        title, synthetic, note: as in :func:`epoch_table`.

    Raises:
        ValueError: a row without the key field, two rows with the same key, no columns.
    """
    key_fields = (key,) if isinstance(key, str) else tuple(key)
    if not key_fields:
        raise ValueError("key: at least one key field is required")
    if columns is None:
        names: list[str] = []
        for prow in paper_rows:
            names.extend(k for k in prow if k not in key_fields and k not in names)
        columns = [(name, name) for name in names]
    cols = [Column.coerce(c) for c in columns]
    if not cols:
        raise ValueError("columns: at least one column is required (the paper rows hold no metrics)")

    def index(table: Sequence[Mapping[str, Any]], where: str) -> dict[tuple[str, ...], Mapping[str, Any]]:
        out: dict[tuple[str, ...], Mapping[str, Any]] = {}
        for row in table:
            k = _row_key(row, key_fields, where)
            if k in out:
                raise ValueError(f"{where}: two rows share the key {dict(zip(key_fields, k))!r}")
            out[k] = row
        return out

    paper_index = index(paper_rows, "paper_rows")
    measured_index = index(rows, "rows")

    body = [list(k) + _cells(cols, measured_index.get(k), p, row_missing=NOT_RUN) for k, p in paper_index.items()]
    extra = [k for k in measured_index if k not in paper_index]
    body += [list(k) + _cells(cols, measured_index[k], None, row_missing=NOT_RUN) for k in extra]

    parts = _preamble(title, synthetic, with_paper=any(c.in_paper for c in cols))
    parts.append(_markdown_table(list(key_fields) + _headers(cols), body, align_left=len(key_fields)))
    notes = []
    if any(k not in measured_index for k in paper_index):
        notes.append(f"*{NOT_RUN}*: this run did not produce that row.")
    if extra and paper_index:
        notes.append(f"Rows after the paper's are measured only ({NOT_IN_PAPER} in the paper columns).")
    if notes:
        parts.append(" ".join(notes))
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def history_to_epoch_dict(history: Any) -> dict[int, dict[str, float]]:
    """Keras ``History.history`` (``{metric: [epoch 1, epoch 2, ...]}``) → ``{1: {metric: v}, ...}``.

    Epochs are counted from 1, as the papers count them. A ``keras.callbacks.History`` object is
    accepted too. Raises ``ValueError`` when the metrics' lists differ in length.
    """
    hist = history_dict(history)
    n = len(next(iter(hist.values()))) if hist else 0
    return {epoch + 1: {name: values[epoch] for name, values in hist.items()} for epoch in range(n)}


def classification_report_markdown(
    report: Mapping[str, Any],
    paper: Mapping[str, Any] | None = None,
    *,
    digits: int = 3,
    title: str | None = None,
    synthetic: bool = False,
) -> str:
    """Render :func:`classification_report`'s dict as Markdown, optionally beside the paper's.

    Without ``paper``: one row per class plus macro / weighted averages (precision, recall, F1,
    support) and an accuracy line. With ``paper`` (e.g. paper 5: ``{"glioma": {"precision":
    0.992, "recall": 0.994, "f1-score": 0.990}, ..., "accuracy": 0.9939}``, in the report's
    fractional units), each metric gets a measured and a paper column (support is measured only),
    built by :func:`comparison_table`; a class the paper lists but the report lacks reads
    ``not run``.
    """
    metric_cols = [Column("precision", "precision", decimals=digits), Column("recall", "recall", decimals=digits),
                   Column("f1-score", "F1", decimals=digits)]
    support_col = Column("support", "support", decimals=0, in_paper=False)
    rows = [{"class": name, **values} for name, values in report.items() if isinstance(values, Mapping)]
    accuracy = report.get("accuracy")
    acc_text = NOT_MEASURED if accuracy is None else _format_number(accuracy, digits + 1)

    if paper is None:
        parts = [f"### {_escape(title)}"] if title else []
        if synthetic:
            parts.append(SYNTHETIC_WARNING)
        body = [[r["class"]] + [_format_number(r[c.key], c.decimals) if c.key in r else NOT_MEASURED
                                for c in metric_cols + [support_col]] for r in rows]
        parts.append(_markdown_table(["class", "precision", "recall", "F1", "support"], body, align_left=1))
        parts.append(f"accuracy: {acc_text}")
        return "\n\n".join(parts) + "\n"

    paper_rows = [{"class": name, **values} for name, values in paper.items() if isinstance(values, Mapping)]
    paper_acc = paper.get("accuracy")
    acc_line = (f"accuracy — measured: {acc_text}; accuracy — paper: "
                f"{NOT_IN_PAPER if paper_acc is None else _format_number(paper_acc, digits + 1)}")
    return comparison_table(rows, paper_rows, metric_cols + [support_col], key="class", title=title,
                            synthetic=synthetic, note=acc_line)


def write_markdown(path: str | os.PathLike, *sections: str) -> Path:
    """Write Markdown sections (tables from this module) to ``path`` atomically, blank-line separated."""
    path = Path(path)
    atomic_write_text(path, "\n".join(s.rstrip("\n") + "\n" for s in sections))
    return path
