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
