"""Segmentation overlays: ground truth and prediction coloured over the image, on one slice
(:func:`plot_prediction_overlay`, paper 1's Fig. 6.1; binary masks for papers 4 and 5), a grid of
slices (:func:`plot_image_grid`) and three orthogonal planes of a volume (:func:`plot_volume_overlay`,
paper 2, through :func:`overlay_center` by default). Drawn and saved as every figure of
:mod:`brats_keras.reporting.figures`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brats_keras.evaluation.classification import class_indices
from brats_keras.labels import BINARY, BRATS, LabelClass
from brats_keras.reporting.figures import DEFAULT_DPI, _grey_window, _new_figure, _save_png, _suptitle


def _legend_name(c: LabelClass) -> str:
    """A BraTS class's legend entry: its title, key and class index, and the file label where it differs
    (``"enhancing tumour (ET, 3 = label 4)"``); background by its title alone."""
    if c.index == 0:
        return c.title
    return f"{c.title} ({c.key}, {c.index}{'' if c.code == c.index else f' = label {c.code}'})"


BRATS_CLASS_NAMES = tuple(_legend_name(c) for c in BRATS)
"""Training class indices 0..3 (BraTS label 4 mapped to 3), in the order the models predict them
(from :data:`brats_keras.labels.BRATS`)."""

BINARY_CLASS_NAMES = BINARY.titles

BRATS_CLASS_COLORS = {
    1: "#e8262a",  # NCR: red
    2: "#2fc43a",  # edema: green
    3: "#ffe11a",  # enhancing: yellow
}
"""Overlay colour per tumour class (the usual BraTS display colours); background is transparent."""

BINARY_COLOR = "#ff2bd6"
"""Overlay colour of the single foreground class of a binary mask (magenta)."""


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
            return class_indices(arr[..., 0], name), 2
        return (arr[..., 0] >= 0.5).astype(np.int64), 2  # sigmoid probability
    if arr.ndim == spatial + 1:
        return np.argmax(arr, axis=-1).astype(np.int64), int(arr.shape[-1])
    if arr.ndim != spatial:
        raise ValueError(f"{name}: expected ({axes}) class indices or ({axes}, C) one-hot/probabilities, "
                         f"got shape {arr.shape}")
    return class_indices(arr, name), None


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
    mask_name: str = BINARY.titles[1],
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
        _class_legend(fig, colors, (BINARY.titles[0], mask_name))
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
