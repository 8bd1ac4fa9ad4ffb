"""Figures of a run that are not segmentation overlays: training curves, curve panels, the learning-rate
schedule, a bias-field correction, a confusion matrix and captioned image galleries.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot
state, no global backend switch, no display needed, nothing left open after saving) and saved as a
PNG atomically (a temporary file in the destination folder, then ``os.replace``). Saved images are
exactly ``figsize × dpi`` pixels (constrained layout, no tight bounding box). Histories are a Keras
``History``, its dict, or :func:`brats_keras.io.read_history_csv`'s result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brats_keras.io import atomic_path, history_dict

DEFAULT_DPI = 120


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


def _grey_window(image: np.ndarray) -> tuple[float, float]:
    """Grey-scale display range: the 1st–99.5th percentile of the finite intensities."""
    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


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
    hist = history_dict(history)
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
    hists = {label: history_dict(h) for label, h in histories.items()}
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
    hist = history_dict(history)
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
