"""Reports of a run: the paper's tables with measured values beside them, and the run's figures.

Everything here is NumPy + matplotlib (no TensorFlow, no Keras), so reports can be rebuilt from a
run folder's ``history.csv`` and saved predictions on any machine.

Tables (Markdown)
    :func:`epoch_table` — per-epoch table, e.g. paper 1's Tables 6.1 / 6.2: one row per epoch the
    paper reports, each metric as a *measured* column next to a *paper* column.
    :func:`comparison_table` — model × metric table, e.g. paper 2's Tables III / IV, paper 4's
    Table 3.
    :func:`classification_report` / :func:`classification_report_markdown` — paper 5's per-class
    precision / recall / F1 (numbers identical to ``sklearn.metrics.classification_report``).

    Units: **measured** values are taken as the code computes them (fractions, e.g. accuracy
    0.9791, loss 0.0909) and multiplied by the column's ``scale``; **paper** values are given
    exactly as the paper prints them (e.g. ``97.91`` in a percent table) and are never scaled.
    A paper value never appears in a measured column: a row the run did not reach reads
    ``not run``; a metric the run did not log reads ``not measured``; a cell the paper leaves
    empty reads ``—``. ``synthetic=True`` adds a bold warning that the data were synthetic and
    the comparison is not a replication.

History
    :func:`history_to_epoch_dict` (Keras ``History.history`` → 1-based epochs),
    :func:`write_history_csv` / :func:`read_history_csv` (the ``keras.callbacks.CSVLogger``
    format: an ``epoch`` column counted from 0, then the logged metrics in sorted order).

Figures (PNG, written atomically: a temporary file in the destination folder, then ``os.replace``)
    :func:`plot_training_curves` — train / validation curves per metric (papers 1 and 3 figures).
    :func:`plot_curve_panels` — chosen history keys as panels, one curve per run (paper 3's Fig. 5.1).
    :func:`plot_bias_correction` — raw slice, estimated bias field, corrected slice (paper 3).
    :func:`plot_lr_schedule` — learning rate per epoch with the dwell callback's weight restores marked.
    :func:`plot_prediction_overlay` — FLAIR slice, ground truth, prediction (paper 1's Fig. 6.1;
    binary masks for papers 4 and 5).
    :func:`plot_volume_overlay` — the same three columns on axial / coronal / sagittal planes of a
    3-D volume (paper 2), through :func:`overlay_center` by default.
    :func:`plot_confusion_matrix` with the :func:`confusion_matrix` helper (paper 5).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot state,
no global backend switch, no display needed, nothing left open after saving. Saved images are
exactly ``figsize × dpi`` pixels (constrained layout, no tight bounding box).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from brats_keras.io_utils import atomic_path, atomic_write_text

__all__ = [
    "BINARY_CLASS_NAMES",
    "BRATS_CLASS_COLORS",
    "BRATS_CLASS_NAMES",
    "NOT_IN_PAPER",
    "NOT_MEASURED",
    "NOT_RUN",
    "SYNTHETIC_WARNING",
    "VOLUME_PLANES",
    "Column",
    "classification_report",
    "classification_report_markdown",
    "comparison_table",
    "confusion_matrix",
    "epoch_table",
    "history_to_epoch_dict",
    "orthogonal_planes",
    "overlay_center",
    "plot_captioned_images",
    "plot_image_grid",
    "plot_confusion_matrix",
    "plot_prediction_overlay",
    "plot_training_curves",
    "plot_volume_overlay",
    "read_history_csv",
    "write_history_csv",
    "write_markdown",
]

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

BRATS_CLASS_NAMES = (
    "background",
    "necrotic / non-enhancing core (NCR, 1)",
    "edema (ED, 2)",
    "enhancing tumour (ET, 3 = label 4)",
)
"""Training class indices 0..3 (BraTS label 4 mapped to 3), in the order the models predict them."""
BINARY_CLASS_NAMES = ("background", "tumour")

BRATS_CLASS_COLORS = {
    1: "#e8262a",  # NCR: red
    2: "#2fc43a",  # edema: green
    3: "#ffe11a",  # enhancing: yellow
}
"""Overlay colour per tumour class (the usual BraTS display colours); background is transparent."""
BINARY_COLOR = "#ff2bd6"
"""Overlay colour of the single foreground class of a binary mask (magenta)."""

DEFAULT_DPI = 120


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# History (Keras History.history, CSVLogger files)
# --------------------------------------------------------------------------------------------


def _history_dict(history: Any) -> dict[str, list[float]]:
    """Accept a ``keras.callbacks.History`` or its ``.history`` dict; check equal lengths."""
    history = getattr(history, "history", history)
    if not isinstance(history, Mapping):
        raise ValueError(f"history: expected a mapping metric -> list of values, got {type(history).__name__}")
    out = {}
    for name, values in history.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"history[{name!r}]: expected a list of per-epoch values, got {values!r}")
        out[str(name)] = [float(v) for v in values]
    lengths = {name: len(v) for name, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history: metrics have different numbers of epochs: {lengths}")
    return out


def history_to_epoch_dict(history: Any) -> dict[int, dict[str, float]]:
    """Keras ``History.history`` (``{metric: [epoch 1, epoch 2, ...]}``) → ``{1: {metric: v}, ...}``.

    Epochs are counted from 1, as the papers count them. A ``keras.callbacks.History`` object is
    accepted too. Raises ``ValueError`` when the metrics' lists differ in length.
    """
    hist = _history_dict(history)
    n = len(next(iter(hist.values()))) if hist else 0
    return {epoch + 1: {name: values[epoch] for name, values in hist.items()} for epoch in range(n)}


def write_history_csv(history: Any, path: str | os.PathLike, *, sep: str = ",") -> Path:
    """Write a history in ``keras.callbacks.CSVLogger``'s format (atomically) and return the path.

    Columns: ``epoch`` (counted from 0, as CSVLogger writes it), then the metrics in sorted order.
    """
    hist = _history_dict(history)
    names = sorted(hist)
    n = len(hist[names[0]]) if names else 0
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=sep)
            writer.writerow(["epoch"] + names)
            for epoch in range(n):
                writer.writerow([epoch] + [repr(hist[name][epoch]) for name in names])
    return path


def read_history_csv(path: str | os.PathLike, *, sep: str = ",") -> dict[str, list[float]]:
    """Read a ``keras.callbacks.CSVLogger`` file back into a ``History.history``-style dict.

    - The ``epoch`` column (0-based) orders the rows and is not returned; use
      :func:`history_to_epoch_dict` for 1-based epochs.
    - A run resumed with ``CSVLogger(append=True)`` may log an epoch twice; the last line wins.
      A gap in the epochs (e.g. 0, 1, 4) cannot be a history and raises ``ValueError``.
    - CSVLogger writes ``NA`` for a metric missing at an epoch; it is read as NaN. A column that
      is ``NA`` throughout (CSVLogger adds ``val_*`` columns even to a run without validation) is
      dropped, so "never measured" stays distinguishable from a measured value.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=sep)
        if not reader.fieldnames or "epoch" not in reader.fieldnames:
            raise ValueError(f"{path}: not a CSVLogger history (no 'epoch' column in {reader.fieldnames})")
        names = [n for n in reader.fieldnames if n != "epoch"]
        by_epoch: dict[int, dict[str, float]] = {}
        for line_no, row in enumerate(reader, start=2):
            try:
                epoch = int(row["epoch"])
                values = {n: (math.nan if row[n] in ("NA", "", None) else float(row[n])) for n in names}
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: unreadable history row {row!r} ({exc})") from None
            by_epoch[epoch] = values
    epochs = sorted(by_epoch)
    if epochs and epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        missing = sorted(set(range(epochs[0], epochs[-1] + 1)) - set(epochs))
        raise ValueError(f"{path}: epochs {missing} are missing from the history")
    history = {n: [by_epoch[e][n] for e in epochs] for n in names}
    return {n: v for n, v in history.items() if not all(math.isnan(x) for x in v) or not v}


# --------------------------------------------------------------------------------------------
# Classification numbers
# --------------------------------------------------------------------------------------------


def _labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer class indices, got non-integer values "
                             "(pass argmax of probabilities, or threshold a sigmoid output)")
        arr = arr.astype(np.int64)
    return arr


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples (or pixels) of true class ``i`` predicted as class ``j``.

    Inputs are class indices of any (equal) shape, e.g. ``(N,)`` labels or ``(H, W)`` masks; they
    are flattened. Rows are true classes, columns predictions (scikit-learn's convention).

    Raises:
        ValueError: shapes differ, inputs are empty or not integer-valued, a label is outside
            ``0..num_classes-1``, or ``num_classes < 2``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred shapes differ: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("y_true is empty")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(f"{name}: labels must be in 0..{num_classes - 1} (num_classes={num_classes}), "
                             f"got values in {int(arr.min())}..{int(arr.max())}")
    k = int(num_classes)
    return np.bincount(t.ravel() * k + p.ravel(), minlength=k * k).reshape(k, k).astype(np.int64)


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus accuracy and macro / weighted averages.

    The result has ``sklearn.metrics.classification_report(..., output_dict=True,
    zero_division=0)``'s layout and numbers: ``{class_name: {"precision", "recall", "f1-score",
    "support"}, "accuracy": float, "macro avg": {...}, "weighted avg": {...}}``. Class ``i`` is
    ``class_names[i]``; every class counts in the macro average, including one absent from both
    inputs; a zero denominator gives 0. Render it with :func:`classification_report_markdown`.
    """
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    if {"accuracy", "macro avg", "weighted avg"} & set(names):
        raise ValueError(f"class_names may not use the reserved names accuracy / macro avg / weighted avg: {names}")
    cm = confusion_matrix(y_true, y_pred, len(names))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted  # = 2 tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    report: dict[str, Any] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(names)
    }
    total = int(support.sum())
    report["accuracy"] = float(tp.sum() / total)
    report["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                           "f1-score": float(f1.mean()), "support": total}
    weights = support / total
    report["weighted avg"] = {"precision": float((precision * weights).sum()),
                              "recall": float((recall * weights).sum()),
                              "f1-score": float((f1 * weights).sum()), "support": total}
    return report


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


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float], dpi: int):
    """A pyplot-free figure on the Agg canvas with constrained layout (size = figsize × dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(figsize) != 2 or min(figsize) <= 0:
        raise ValueError(f"figsize must be (width, height) in inches > 0, got {figsize!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or dpi < 20:
        raise ValueError(f"dpi must be an integer >= 20, got {dpi!r}")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _suptitle(fig, title: str | None, synthetic: bool) -> None:
    lines = [title] if title else []
    if synthetic:
        lines.append("SYNTHETIC DATA: not a replication of the paper")
    if lines:
        fig.suptitle("\n".join(lines), fontsize=12, color="firebrick" if synthetic else "black")


def _save_png(fig, out_png: str | os.PathLike) -> Path:
    """Save atomically: render into a temporary file in the same folder, then ``os.replace``."""
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in .png, got {str(out_png)!r}")
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return out


def plot_training_curves(
    history: Any,
    out_png: str | os.PathLike,
    metrics: Sequence[str] = ("accuracy", "loss"),
    *,
    title: str | None = None,
    synthetic: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One panel per metric with the training and validation curves against epoch (from 1).

    Like paper 1's Figs. 6.2–6.5 and paper 3's loss / accuracy / Dice curves. ``history`` is a
    Keras ``History`` or its ``.history`` dict (also :func:`read_history_csv`'s result). A metric
    needs its training key or its ``val_`` key; the other may be missing (e.g. a run without
    validation). NaN points (``NA`` in a CSVLogger file) are left as gaps.

    Returns the path of the PNG (default size 5.5 × 4.2 inches per panel at ``dpi``).

    Raises:
        ValueError: no metrics, or a metric with neither ``name`` nor ``val_name`` in the history.
    """
    hist = _history_dict(history)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics: at least one metric is required")
    for m in metrics:
        if m not in hist and f"val_{m}" not in hist:
            raise ValueError(f"metrics: {m!r} (and val_{m}) not in the history; available: {sorted(hist)}")
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(figsize or (5.5 * len(metrics), 4.2), dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for key, label, color in ((metric, "training", "tab:blue"), (f"val_{metric}", "validation", "tab:orange")):
            if key not in hist:
                continue
            values = np.asarray(hist[key], dtype=float)
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, label=label, color=color, linewidth=1.8,
                    marker="o" if len(values) <= 30 else None, markersize=3.5)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", frameon=True)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_curve_panels(
    histories: Mapping[str, Any],
    out_png: str | os.PathLike,
    panels: Sequence[tuple[str, str]],
    *,
    ncols: int = 2,
    title: str | None = None,
    synthetic: bool = False,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One panel per ``(history key, panel title)``, each with one curve per run in ``histories``
    (label → Keras ``History``, its dict or :func:`read_history_csv`'s result), against epoch.

    Paper 3's Fig. 5.1 is ``panels=[("loss", "training loss"), ("val_loss", "validation loss"),
    ("accuracy", "training accuracy"), ("val_dice_coef", "validation Dice")]``; with two runs (with
    and without pre-processing) each panel compares them. A run lacking a key is left out of that
    panel; NaN points are gaps.

    Raises:
        ValueError: no panels or histories, or a panel key that no history has.
    """
    if not panels or not histories:
        raise ValueError("plot_curve_panels needs at least one panel and one history")
    hists = {label: _history_dict(h) for label, h in histories.items()}
    for key, _ in panels:
        if not any(key in h for h in hists.values()):
            raise ValueError(f"panels: {key!r} is in none of the histories; available: "
                             f"{sorted(set().union(*hists.values()))}")
    from matplotlib.ticker import MaxNLocator

    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig = _new_figure((5.0 * ncols, 3.8 * nrows), dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for ax, (key, panel_title) in zip(axes, panels):
        for (label, hist), color in zip(hists.items(), colors * len(hists)):
            if key not in hist:
                continue
            values = np.asarray(hist[key], dtype=float)
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, label=label, color=color, linewidth=1.8,
                    marker="o" if len(values) <= 30 else None, markersize=3.5)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", frameon=True, fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_bias_correction(
    raw: Any,
    field: Any,
    corrected: Any,
    out_png: str | os.PathLike,
    *,
    title: str | None = None,
    synthetic: bool = False,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Before / after of a bias-field correction on one slice: the raw image, the estimated
    multiplicative field (colour, with its range) and the corrected image, each ``(H, W)``, shown
    with the first axis as rows. Paper 3's pre-processing made visible (``docs/paper3.md``).
    """
    raw, field, corrected = (np.asarray(a, dtype=float) for a in (raw, field, corrected))
    if not raw.shape == field.shape == corrected.shape or raw.ndim != 2:
        raise ValueError(f"raw {raw.shape}, field {field.shape} and corrected {corrected.shape} must be equal (H, W)")
    brain = raw != 0
    fig = _new_figure((13.5, 4.6), dpi)
    axes = fig.subplots(1, 3)
    for ax, image, name in ((axes[0], raw, "raw"), (axes[2], corrected, "corrected (N4, denoised, z-score)")):
        values = image[brain] if brain.any() else image.ravel()
        lo, hi = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
        ax.imshow(np.where(brain, image, lo), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name)
        ax.axis("off")
    shown = np.where(brain, field, np.nan)
    finite = shown[np.isfinite(shown)]
    handle = axes[1].imshow(shown, cmap="coolwarm")
    axes[1].set_title("estimated bias field" + (f" ({finite.min():.2f}–{finite.max():.2f})" if finite.size else ""))
    axes[1].axis("off")
    fig.colorbar(handle, ax=axes[1], fraction=0.046, pad=0.02)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_lr_schedule(
    history: Any,
    out_png: str | os.PathLike,
    *,
    title: str | None = None,
    synthetic: bool = False,
    figsize: tuple[float, float] = (6.5, 4.0),
    dpi: int = DEFAULT_DPI,
) -> Path:
    """The learning rate of every epoch (log scale, a step line) with the epochs whose end put the
    best weights back marked — what :class:`~brats_keras.callbacks.DwellLearningRate` logs as
    ``lr`` and ``weights_restored`` (paper 3's dwell behaviour, made visible).

    ``history`` is a Keras ``History``, its dict, or :func:`read_history_csv`'s result.

    Raises:
        ValueError: the history has no ``lr``.
    """
    hist = _history_dict(history)
    if "lr" not in hist:
        raise ValueError(f"history has no 'lr' (log it with DwellLearningRate); available: {sorted(hist)}")
    from matplotlib.ticker import MaxNLocator

    lr = np.asarray(hist["lr"], dtype=float)
    epochs = np.arange(1, len(lr) + 1)
    restored = np.asarray(hist.get("weights_restored", np.zeros_like(lr)), dtype=float)
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    ax.step(epochs, lr, where="post", color="tab:blue", linewidth=1.8, label="learning rate of the epoch")
    ax.plot(epochs, lr, "o", color="tab:blue", markersize=3.5)
    marked = restored > 0.5
    if marked.any():
        ax.plot(epochs[marked], lr[marked], "v", color="tab:red", markersize=9, linestyle="none",
                label="best weights restored at the end of the epoch")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", frameon=True)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def _label_map(mask: Any, name: str, axes: str = "H, W") -> tuple[np.ndarray, int | None]:
    """Class-index map from indices, one-hot / probabilities (class axis last) or sigmoid (class axis 1).

    ``axes`` names the spatial axes (``"H, W"`` for a slice, ``"X, Y, Z"`` for a volume); the map
    has that many dimensions. Returns the map and the number of classes implied by a class axis
    (``None`` without one).
    """
    arr = np.asarray(mask)
    spatial = len(axes.split(","))
    if arr.ndim == spatial + 1 and arr.shape[-1] == 1:
        if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
            return _labels(arr[..., 0], name), 2
        return (arr[..., 0] >= 0.5).astype(np.int64), 2  # sigmoid probability
    if arr.ndim == spatial + 1:
        return np.argmax(arr, axis=-1).astype(np.int64), int(arr.shape[-1])
    if arr.ndim != spatial:
        raise ValueError(f"{name}: expected ({axes}) class indices or ({axes}, C) one-hot/probabilities, "
                         f"got shape {arr.shape}")
    return _labels(arr, name), None


def _overlay_classes(
    truth: Any,
    pred: Any,
    shape: tuple[int, ...],
    *,
    image_name: str,
    axes: str,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, str], list[str]]:
    """Validated ground-truth and prediction label maps, with the overlay colours and legend names.

    Shared by :func:`plot_prediction_overlay` and :func:`plot_volume_overlay`. ``shape`` is the
    image's spatial shape (the image is called ``image_name`` in errors); ``num_classes`` defaults
    as those functions document.

    Returns:
        ``(truth_map, pred_map, colors, names)``: integer maps of ``shape``, ``{class: colour}`` for
        the drawn (non-background) classes, and one legend name per class.
    """
    t, t_classes = _label_map(truth, "truth", axes)
    p, p_classes = _label_map(pred, "pred", axes)
    for name, arr in (("truth", t), ("pred", p)):
        if arr.shape != shape:
            raise ValueError(f"{name}: shape {arr.shape} does not match {image_name} {shape}")
    implied = {c for c in (t_classes, p_classes) if c is not None}
    if len(implied) > 1:
        raise ValueError(f"truth and pred have different class axes: {t_classes} vs {p_classes}")
    if num_classes is None:
        num_classes = implied.pop() if implied else (2 if max(t.max(), p.max()) <= 1 else 4)
    if num_classes not in (2, 4):
        raise ValueError(f"num_classes must be 2 (binary) or 4 (BraTS classes 0..3), got {num_classes!r}")
    for name, arr in (("truth", t), ("pred", p)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(f"{name}: labels must be in 0..{num_classes - 1} (num_classes={num_classes}), "
                             f"got values in {int(arr.min())}..{int(arr.max())}")
    names = list(class_names) if class_names is not None else list(
        BRATS_CLASS_NAMES if num_classes == 4 else BINARY_CLASS_NAMES)
    if len(names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names (background first), got {len(names)}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    colors = BRATS_CLASS_COLORS if num_classes == 4 else {1: BINARY_COLOR}
    return t, p, dict(colors), names


def _grey_window(image: np.ndarray) -> tuple[float, float]:
    """Grey-scale display range: the 1st–99.5th percentile of the finite intensities."""
    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _overlay_rgba(labels: np.ndarray, colors: Mapping[int, str], alpha: float) -> np.ndarray:
    """RGBA image of a label map: each drawn class in its colour at ``alpha``, the rest transparent."""
    from matplotlib.colors import to_rgba

    out = np.zeros(labels.shape + (4,))
    for cls, color in colors.items():
        out[labels == cls] = to_rgba(color, alpha)
    return out


def _draw_overlay_panel(ax, image: np.ndarray, labels: np.ndarray | None, window: tuple[float, float],
                        colors: Mapping[int, str], alpha: float) -> None:
    """One panel: ``image`` in grey within ``window``, ``labels`` coloured over it (if given), no ticks."""
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    if labels is not None:
        ax.imshow(_overlay_rgba(labels, colors, alpha), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _class_legend(fig, colors: Mapping[int, str], names: Sequence[str]) -> None:
    """Legend below the panels naming each drawn class in its overlay colour."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[c], edgecolor="black", label=names[c]) for c in sorted(colors)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


_OVERLAY_COLUMNS = ("image", "ground truth", "prediction")
"""Panel titles of the overlay figures, left to right."""


def plot_prediction_overlay(
    image_slice: Any,
    truth: Any,
    pred: Any,
    out_png: str | os.PathLike,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    synthetic: bool = False,
    alpha: float = 0.55,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Three panels: the image slice in grey, the ground truth over it, the prediction over it.

    Paper 1's Fig. 6.1 ("Predicted Tumor"). Tumour classes keep one colour everywhere
    (:data:`BRATS_CLASS_COLORS`: NCR 1 red, edema 2 green, enhancing 3 yellow); a binary mask
    (papers 4 and 5) is drawn in magenta. A legend names the classes.

    Args:
        image_slice: ``(H, W)`` or ``(H, W, 1)`` intensities (e.g. FLAIR); shown as given (rows
            downwards), grey scale clipped to the 1st–99.5th percentile.
        truth, pred: ``(H, W)`` class indices, or ``(H, W, C)`` one-hot / probabilities (argmax),
            or ``(H, W, 1)`` sigmoid probabilities (threshold 0.5).
        num_classes: 4 (BraTS classes 0..3) or 2 (binary); by default taken from a class axis, else
            2 when both masks only hold 0/1 and 4 otherwise.
        class_names: legend names, one per class including background; defaults to
            :data:`BRATS_CLASS_NAMES` / :data:`BINARY_CLASS_NAMES`.

    Raises:
        ValueError: shapes differ, ``num_classes`` not 2 or 4, a label outside ``0..num_classes-1``,
            or ``class_names`` of the wrong length.
    """
    image = np.asarray(image_slice, dtype=float)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image_slice: expected shape (H, W) or (H, W, 1), got {np.shape(image_slice)}")
    t, p, colors, names = _overlay_classes(truth, pred, image.shape, image_name="image_slice", axes="H, W",
                                           num_classes=num_classes, class_names=class_names, alpha=alpha)
    window = _grey_window(image)

    fig = _new_figure(figsize or (12.0, 4.9), dpi)
    axes = fig.subplots(1, 3)
    for ax, panel_title, labels in zip(axes, _OVERLAY_COLUMNS, (None, t, p)):
        _draw_overlay_panel(ax, image, labels, window, colors, alpha)
        ax.set_title(panel_title)
    _class_legend(fig, colors, names)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_image_grid(
    panels: Sequence[Sequence[tuple[Any, Any]]],
    column_titles: Sequence[str],
    out_png: str | os.PathLike,
    *,
    row_titles: Sequence[str] | None = None,
    mask_name: str = "tumour",
    title: str | None = None,
    synthetic: bool = False,
    alpha: float = 0.5,
    panel_size: float = 2.4,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """A grid of grey images, each with an optional binary mask drawn over it in magenta.

    ``panels[r][c] = (image (H, W) or (H, W, 1), mask (H, W) or None)``; every row has one panel per
    column title. Each image gets its own grey window (1st–99.5th percentile), so an enhanced and a
    raw image are each shown at their best. Paper 4's Table 2 (MRI image, LSTM-enhanced image,
    ground truth, prediction per row) and the enhancer's before/after figure use it.

    Raises:
        ValueError: no rows, a row of the wrong length, an image that is not 2D, a mask of another shape.
    """
    if not panels:
        raise ValueError("panels: at least one row is needed")
    ncols = len(column_titles)
    if ncols == 0 or any(len(row) != ncols for row in panels):
        raise ValueError(f"panels: every row needs {ncols} panels (one per column title)")
    if row_titles is not None and len(row_titles) != len(panels):
        raise ValueError(f"row_titles: {len(row_titles)} titles for {len(panels)} rows")
    colors = {1: BINARY_COLOR}
    fig = _new_figure((panel_size * ncols, panel_size * len(panels) + 0.9), dpi)
    axes = fig.subplots(len(panels), ncols, squeeze=False)
    for r, row in enumerate(panels):
        for c, (image, mask) in enumerate(row):
            image = np.asarray(image, dtype=float)
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            if image.ndim != 2:
                raise ValueError(f"panels[{r}][{c}]: image must be (H, W) or (H, W, 1), got {image.shape}")
            labels = None
            if mask is not None:
                labels = (np.asarray(mask) > 0).astype(np.uint8)
                if labels.ndim == 3 and labels.shape[-1] == 1:
                    labels = labels[..., 0]
                if labels.shape != image.shape:
                    raise ValueError(f"panels[{r}][{c}]: mask {labels.shape} and image {image.shape} differ")
            ax = axes[r, c]
            _draw_overlay_panel(ax, image, labels, _grey_window(image), colors, alpha)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=9)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8)
    if any(mask is not None for row in panels for _, mask in row):
        _class_legend(fig, colors, ("background", mask_name))
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_captioned_images(
    images: Sequence[Any],
    captions: Sequence[str],
    out_png: str | os.PathLike,
    *,
    ncols: int = 4,
    title: str | None = None,
    synthetic: bool = False,
    panel_size: float = 2.4,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """A gallery of images, each with its own caption (e.g. paper 5's misclassified test images:
    "true glioma → predicted meningioma (0.71)"). ``images``: ``(H, W)``, ``(H, W, 1)`` grey (own
    1st–99.5th percentile window) or ``(H, W, 3)`` RGB in [0, 1]. No images: one panel saying so.

    Raises:
        ValueError: ``captions`` of another length, an image of another rank, ``ncols < 1``.
    """
    if len(images) != len(captions):
        raise ValueError(f"captions: {len(captions)} captions for {len(images)} images")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    n = max(len(images), 1)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig = _new_figure((panel_size * cols, panel_size * rows + 0.9), dpi)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if not images:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=12)
    for k, (image, caption) in enumerate(zip(images, captions)):
        ax = axes[k // cols, k % cols]
        image = np.asarray(image, dtype=float)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            lo, hi = _grey_window(image)
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        elif image.ndim == 3 and image.shape[-1] == 3:
            ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
        else:
            raise ValueError(f"images[{k}]: must be (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
        ax.set_title(str(caption), fontsize=8)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


VOLUME_PLANES = (("axial", "z", 2), ("coronal", "y", 1), ("sagittal", "x", 0))
"""The rows of :func:`plot_volume_overlay`: plane name, the voxel axis it is fixed along, axis index."""


def _centroid_voxel(mask: np.ndarray) -> tuple[int, int, int] | None:
    """The voxel nearest the centroid of ``mask``'s true voxels, or ``None`` for an empty mask."""
    idx = np.argwhere(mask)
    if not idx.size:
        return None
    return tuple(int(c) for c in np.rint(idx.mean(axis=0)))


def overlay_center(truth: Any, pred: Any) -> tuple[int, int, int]:
    """The voxel ``(i, j, k)`` whose three planes :func:`plot_volume_overlay` shows by default.

    The centroid of the ground truth's tumour (label > 0) rounded to the nearest voxel; if the
    ground truth has no tumour, the prediction's; if neither has, the volume centre
    ``(X // 2, Y // 2, Z // 2)``.

    Args:
        truth, pred: ``(X, Y, Z)`` class indices or ``(X, Y, Z, C)`` one-hot / probabilities
            (argmax; ``C == 1``: sigmoid probabilities, threshold 0.5), equal spatial shapes.

    Raises:
        ValueError: not 3-D volumes, non-integer labels, or shapes that differ.
    """
    t, _ = _label_map(truth, "truth", "X, Y, Z")
    p, _ = _label_map(pred, "pred", "X, Y, Z")
    if t.shape != p.shape:
        raise ValueError(f"pred: shape {p.shape} does not match truth {t.shape}")
    for mask in (t > 0, p > 0):
        voxel = _centroid_voxel(mask)
        if voxel is not None:
            return voxel
    return tuple(n // 2 for n in t.shape)


def _check_center(center: Any, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``center`` as three ints inside a volume of ``shape``, else a ValueError naming ``center``."""
    values = list(center) if isinstance(center, (Sequence, np.ndarray)) and np.ndim(center) == 1 else None
    if values is None or len(values) != 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        raise ValueError(f"center: expected three integer voxel indices (i, j, k), got {center!r}")
    values = [int(v) for v in values]
    if not all(0 <= v < n for v, n in zip(values, shape)):
        raise ValueError(f"center: {tuple(values)} is outside the volume of shape {shape} "
                         f"(each index must be in 0..size-1)")
    return values[0], values[1], values[2]


def orthogonal_planes(volume: Any, center: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal planes through ``center`` of an ``(X, Y, Z)`` volume, as displayed.

    For volumes in the voxel order of BraTS NIfTI files read with nibabel (axis codes L, P, S:
    ``x`` runs from the subject's right to left, ``y`` from anterior to posterior, ``z`` from
    inferior to superior), each plane is oriented as a radiologist reads it:

    - axial ``volume[:, :, k].T``: anterior up, the subject's right on the screen's left;
    - coronal ``np.rot90(volume[:, j, :])``: superior up, the subject's right on the left;
    - sagittal ``np.rot90(volume[i, :, :])``: superior up, anterior on the left.

    Row ``r``, column ``c`` of the returned arrays is voxel ``(c, r, k)`` (axial),
    ``(c, j, Z-1-r)`` (coronal) and ``(i, c, Z-1-r)`` (sagittal).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected shape (X, Y, Z), got {vol.shape}")
    i, j, k = center
    return [vol[:, :, k].T, np.rot90(vol[:, j, :]), np.rot90(vol[i, :, :])]


def _default_volume_figsize(shape: tuple[int, int, int]) -> tuple[float, float]:
    """Figure size that gives every panel the same width and its own aspect ratio (1 mm voxels)."""
    panel_width = 3.3
    heights = _plane_aspects(shape)
    return 3 * panel_width + 0.7, panel_width * sum(heights) + 1.6


def _plane_aspects(shape: tuple[int, int, int]) -> list[float]:
    """Height / width of the axial, coronal and sagittal planes as displayed, clipped to 0.25..4."""
    x, y, z = shape
    return [float(np.clip(r, 0.25, 4.0)) for r in (y / x, z / x, z / y)]


def plot_volume_overlay(
    image: Any,
    truth: Any,
    pred: Any,
    out_png: str | os.PathLike,
    *,
    center: Sequence[int] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    synthetic: bool = False,
    alpha: float = 0.55,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """A 3-D segmentation on three orthogonal planes: rows axial / coronal / sagittal, columns as
    :func:`plot_prediction_overlay` (image, ground truth over it, prediction over it).

    Paper 2's "overlay on three orthogonal planes" (3-D U-Nets on BraTS). Colours, legend,
    grey-scale window and synthetic banner are those of :func:`plot_prediction_overlay`; the
    grey-scale window (1st–99.5th percentile) is taken over the whole volume so the three rows
    share it. Each row is labelled with its plane and index (e.g. ``"axial z=77"``).

    Orientation: volumes are taken in the voxel order BraTS NIfTI files store them, loaded with
    nibabel (axis codes L, P, S: ``x`` from the subject's right to left, ``y`` from anterior to
    posterior, ``z`` from inferior to superior). Planes are shown as :func:`orthogonal_planes`
    cuts them, as a radiologist reads them: axial with anterior up, coronal and sagittal with
    superior up, the subject's right on the screen's left in axial and coronal planes, anterior
    on the left in sagittal planes. Voxels are drawn square (BraTS: 1 mm isotropic).

    Args:
        image: ``(X, Y, Z)`` intensities or ``(X, Y, Z, C)`` channels (the first one is shown,
            e.g. FLAIR first).
        truth, pred: ``(X, Y, Z)`` class indices, or ``(X, Y, Z, C)`` one-hot / probabilities
            (argmax), or ``(X, Y, Z, 1)`` sigmoid probabilities (threshold 0.5).
        out_png: destination ``.png`` (written atomically).
        center: voxel ``(i, j, k)`` whose sagittal (x = i), coronal (y = j) and axial (z = k)
            planes are shown; default :func:`overlay_center` (the ground-truth tumour's centroid,
            else the prediction's, else the volume centre).
        num_classes, class_names, title, synthetic, alpha, dpi: as in
            :func:`plot_prediction_overlay`.
        figsize: inches; by default about 10.6 wide, with a height that fits the planes' aspect.

    Returns:
        The path of the PNG, exactly ``figsize × dpi`` pixels.

    Raises:
        ValueError: ``image`` not 3-D (or 4-D with channels), truth / pred shapes that differ
            from the image's, ``center`` not three indices inside the volume, ``num_classes``
            not 2 or 4, a label outside ``0..num_classes-1``, ``class_names`` of the wrong length.
    """
    volume = np.asarray(image, dtype=float)
    if volume.ndim == 4:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) == 0:
        raise ValueError(f"image: expected shape (X, Y, Z) or (X, Y, Z, C), got {np.shape(image)}")
    t, p, colors, names = _overlay_classes(truth, pred, volume.shape, image_name="image", axes="X, Y, Z",
                                           num_classes=num_classes, class_names=class_names, alpha=alpha)
    center = overlay_center(t, p) if center is None else _check_center(center, volume.shape)
    window = _grey_window(volume)

    fig = _new_figure(figsize or _default_volume_figsize(volume.shape), dpi)
    axes = fig.subplots(3, 3, gridspec_kw={"height_ratios": _plane_aspects(volume.shape)})
    planes = zip(VOLUME_PLANES, orthogonal_planes(volume, center), orthogonal_planes(t, center),
                 orthogonal_planes(p, center))
    for row, ((plane, axis_name, axis), img, t_plane, p_plane) in zip(axes, planes):
        for ax, labels in zip(row, (None, t_plane, p_plane)):
            _draw_overlay_panel(ax, img, labels, window, colors, alpha)
        row[0].set_ylabel(f"{plane} {axis_name}={center[axis]}", fontsize=12)
    for ax, column_title in zip(axes[0], _OVERLAY_COLUMNS):
        ax.set_title(column_title)
    _class_legend(fig, colors, names)
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    out_png: str | os.PathLike,
    *,
    normalize: bool | str = False,
    title: str | None = None,
    synthetic: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Heat map of a confusion matrix (rows: true class, columns: predicted) with annotated cells.

    Args:
        cm: ``(K, K)`` non-negative counts, e.g. from :func:`confusion_matrix`.
        class_names: ``K`` names for the axes.
        normalize: ``False`` shows counts; ``"true"`` divides each row by its total (recall on the
            diagonal) and annotates the fraction with the count below it; a class with no samples
            shows ``n/a``.

    Raises:
        ValueError: ``cm`` not square, negative or non-finite, ``class_names`` of the wrong
            length, or an unknown ``normalize``.
    """
    counts = np.asarray(cm, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ValueError(f"cm: expected a square (K, K) matrix with K >= 2, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or counts.min() < 0:
        raise ValueError("cm: counts must be finite and non-negative")
    k = counts.shape[0]
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"class_names: expected {k} names for a {k}×{k} matrix, got {len(names)}")
    if normalize not in (False, None, "true"):
        raise ValueError(f"normalize must be False or 'true', got {normalize!r}")

    rows = counts.sum(axis=1, keepdims=True)
    if normalize == "true":
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.where(rows > 0, counts / rows, np.nan)
        vmax = 1.0
    else:
        shown = counts
        vmax = max(float(counts.max()), 1.0)

    size = max(4.5, 1.1 * k + 2.5)
    fig = _new_figure(figsize or (size + 1.0, size), dpi)
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(shown, nan=0.0), cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize == "true" else "count")
    integer_counts = np.all(counts == np.round(counts))
    fontsize = 11 if k <= 6 else 8
    for i in range(k):
        for j in range(k):
            count_text = f"{int(counts[i, j])}" if integer_counts else f"{counts[i, j]:.3g}"
            if normalize == "true":
                text = "n/a" if np.isnan(shown[i, j]) else f"{shown[i, j]:.2f}\n({count_text})"
                level = 0.0 if np.isnan(shown[i, j]) else shown[i, j]
            else:
                text, level = count_text, shown[i, j]
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if level > 0.55 * vmax else "black")
    ax.set_xticks(range(k), labels=names)
    ax.set_yticks(range(k), labels=names)
    if max(len(n) for n in names) > 6:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    _suptitle(fig, title, synthetic)
    return _save_png(fig, out_png)


def write_markdown(path: str | os.PathLike, *sections: str) -> Path:
    """Write Markdown sections (tables from this module) to ``path`` atomically, blank-line separated."""
    path = Path(path)
    atomic_write_text(path, "\n".join(s.rstrip("\n") + "\n" for s in sections))
    return path
