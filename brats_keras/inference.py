"""Whole-volume inference: a 2D slice model (papers 1 and 3) or a 3D crop model (paper 2).

A 2D model sees normalised, resized axial slices; :func:`predict_volume_2d` applies exactly the
pre-processing of :mod:`brats_keras.data.slices2d` to a whole case, predicts slice by slice, resizes
the class probabilities back to the original in-plane grid (bilinear, then argmax — smoother
borders than resizing hard labels) and returns a label volume with BraTS values {0, 1, 2, 4}, ready
for :func:`brats_keras.evaluation.evaluate_case`.

A 3D crop model sees the pre-processed crop of :mod:`brats_keras.data.volumes3d`;
:func:`uncrop_labels` places its predicted classes back into the case's original grid (background
outside the crop), so scoring covers the whole volume, tumour outside the crop included.
"""

from __future__ import annotations

import numpy as np

from brats_keras.data.brats import Case
from brats_keras.data.slices2d import SliceSettings, normalization_stats, normalize_volume, resize_images


def to_brats_labels(classes: np.ndarray) -> np.ndarray:
    """Training classes {0, 1, 2, 3} → BraTS labels {0, 1, 2, 4} (uint8)."""
    classes = np.asarray(classes).astype(np.uint8)
    return np.where(classes == 3, 4, classes).astype(np.uint8)


def uncrop_labels(classes: np.ndarray, crop, shape) -> np.ndarray:
    """A ``shape`` BraTS label volume holding ``classes`` (class indices of the crop) at ``crop``
    (``((x0, x1), (y0, y1), (z0, z1))``) and background elsewhere."""
    classes = np.asarray(classes)
    window = tuple(slice(lo, hi) for lo, hi in crop)
    expected = tuple(hi - lo for lo, hi in crop)
    if classes.shape != expected or any(hi > n for (_, hi), n in zip(crop, shape)):
        raise ValueError(f"classes {classes.shape} do not fit crop {crop} in a volume of shape {tuple(shape)}")
    labels = np.zeros(tuple(shape), np.uint8)
    labels[window] = to_brats_labels(classes)
    return labels


def slice_range(settings: SliceSettings, depth: int, which: str = "window") -> range:
    """The axial slices to predict: the training window or the whole depth."""
    if which == "all":
        return range(depth)
    if which != "window":
        raise ValueError(f"which: {which!r} not in ('window', 'all')")
    return range(settings.start, min(settings.stop, depth))


def predict_volume_2d(model, case: Case, settings: SliceSettings, *, slices: str = "window",
                      batch_size: int = 16) -> np.ndarray:
    """Predict a ``(H, W, D)`` BraTS label volume for ``case``; slices outside ``slices`` are background.

    ``case.image`` must hold ``settings.modalities`` in that order (``load_case(files,
    settings.modalities)``).
    """
    if tuple(case.modalities) != tuple(settings.modalities):
        raise ValueError(f"case modalities {case.modalities} differ from the model's {settings.modalities}")
    h, w, depth, _ = case.image.shape
    chosen = list(slice_range(settings, depth, slices))
    stats = normalization_stats(case.image, settings.normalization)
    slab = normalize_volume(case.image[:, :, chosen], settings.normalization, stats)
    x = resize_images(np.transpose(slab, (2, 0, 1, 3)), settings.size)
    probabilities = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    classes = np.argmax(resize_images(probabilities, (h, w)), axis=-1).astype(np.uint8)
    labels = np.zeros((h, w, depth), np.uint8)
    labels[:, :, chosen] = np.transpose(to_brats_labels(classes), (1, 2, 0))
    return labels


# --------------------------------------------------------------------------------------------
# Sliding-window inference (3D models on whole volumes)
# --------------------------------------------------------------------------------------------

BLENDINGS = ("gaussian", "constant")


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of windows of ``roi`` voxels covering ``size`` voxels with ``overlap`` (0 ≤ o < 1).

    Windows step ``max(1, int(roi * (1 - overlap)))`` voxels; the last window ends at ``size``
    (MONAI's ``sliding_window_inference`` places them the same way). ``size <= roi``: one window.
    """
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def importance_map(roi, blending: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Per-voxel weight of a window's prediction: ones (``constant``) or a Gaussian centred on the
    window with ``sigma = sigma_scale * roi`` per axis, scaled to a maximum of 1 and floored at the
    smallest positive value so every voxel keeps a weight (as MONAI and nnU-Net do)."""
    if blending not in BLENDINGS:
        raise ValueError(f"blending must be one of {BLENDINGS}, got {blending!r}")
    roi = tuple(int(n) for n in roi)
    if blending == "constant":
        return np.ones(roi, np.float32)
    weights = np.ones((), np.float64)
    for n in roi:
        centre, sigma = (n - 1) / 2.0, max(sigma_scale * n, 1e-3)
        axis = np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights = weights / weights.max()
    positive = weights[weights > 0]
    return np.maximum(weights, positive.min()).astype(np.float32)


def sliding_window_inference(predict, volume: np.ndarray, roi, *, overlap: float = 0.5,
                             blending: str = "gaussian", batch_size: int = 1) -> np.ndarray:
    """Class probabilities of a whole ``(X, Y, Z, C)`` volume from a model that sees ``roi`` windows.

    ``predict`` maps a batch ``(B, *roi, C)`` to ``(B, *roi, K)`` (e.g. ``model.predict_on_batch``).
    Windows overlap by ``overlap`` of their size along each axis; overlapping predictions are
    averaged with the weights of :func:`importance_map` (``gaussian`` favours window centres, where
    a convolutional network sees the most context; ``constant`` is a plain mean). A volume smaller
    than ``roi`` along an axis is zero-padded at the end and the padding is cut from the result.
    Returns ``(X, Y, Z, K)`` float32.
    """
    volume = np.asarray(volume, np.float32)
    roi = tuple(int(n) for n in roi)
    if volume.ndim != 4 or len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"need a (X, Y, Z, C) volume and a 3-voxel roi, got {volume.shape} and {roi}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    shape = volume.shape[:3]
    padded_shape = tuple(max(n, r) for n, r in zip(shape, roi))
    if padded_shape != shape:
        padded = np.zeros(padded_shape + volume.shape[3:], np.float32)
        padded[: shape[0], : shape[1], : shape[2]] = volume
        volume = padded
    weights = importance_map(roi, blending)[..., None]
    corners = [(i, j, k) for i in window_starts(padded_shape[0], roi[0], overlap)
               for j in window_starts(padded_shape[1], roi[1], overlap)
               for k in window_starts(padded_shape[2], roi[2], overlap)]
    out = count = None
    for first in range(0, len(corners), batch_size):
        group = corners[first:first + batch_size]
        windows = np.stack([volume[i:i + roi[0], j:j + roi[1], k:k + roi[2]] for i, j, k in group])
        probabilities = np.asarray(predict(windows), np.float32)
        if probabilities.shape[:4] != (len(group), *roi):
            raise ValueError(f"predict returned shape {probabilities.shape} for windows {windows.shape}")
        if out is None:
            out = np.zeros(padded_shape + probabilities.shape[4:], np.float32)
            count = np.zeros(padded_shape + (1,), np.float32)
        for (i, j, k), p in zip(group, probabilities):
            window = (slice(i, i + roi[0]), slice(j, j + roi[1]), slice(k, k + roi[2]))
            out[window] += p * weights
            count[window] += weights
    return (out / count)[: shape[0], : shape[1], : shape[2]]
