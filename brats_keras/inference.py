"""Whole-volume inference: a 2D slice model (papers 1 and 3) or a 3D crop model (paper 2).

A 2D model sees normalised, resized axial slices; :func:`predict_volume_2d` applies exactly the
pre-processing of :mod:`brats_keras.data.slices2d` to a whole case, predicts slice by slice, resizes
the class probabilities back to the original in-plane grid (bilinear, then argmax — smoother
borders than resizing hard labels) and returns a label volume with BraTS values {0, 1, 2, 4}, ready
for :func:`brats_keras.evaluation.evaluate_case`.

A 3D crop model sees the pre-processed crop of :mod:`brats_keras.data.volumes3d`. Two ways back to
the original grid: :func:`uncrop_labels` places the crop's prediction in it (background outside,
what paper 2's tables score), and :func:`predict_volume_3d` slides the model's window over the
whole scaled volume (:func:`sliding_window_inference`, Gaussian or constant blending as MONAI's
``sliding_window_inference``), which is what ``python -m brats_keras predict`` does.

:class:`InferenceSpec` is the pre-processing a model was trained with; every exported model carries
it (``inference.json``), so inference never asks a user to re-type it.

Every function takes the model as ``predict``: a callable from a batch ``(B, ...)`` to class
probabilities ``(B, ..., K)`` — ``model.predict_on_batch``, or a
:class:`brats_keras.export.Predictor` loaded from ``model.keras`` or ``saved_model/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from brats_keras.data.brats import Case
from brats_keras.data.correction import CorrectionSettings
from brats_keras.data.slices2d import SliceSettings, normalization_stats, normalize_volume, resize_images
from brats_keras.data.volumes3d import Preprocess3DSettings, scale_channels
from brats_keras.labels import BRATS

PredictFn = Callable[[np.ndarray], Any]
"""A batch ``(B, ...)`` → class probabilities ``(B, ..., K)``."""
Progress = Callable[[int], Any]
"""Called with the number of items (slices, windows) just predicted, e.g. ``tqdm.update``."""

INFERENCE_FILE = "inference.json"
"""File name of the pre-processing record written beside (and inside) every exported model."""
SPEC_FORMAT = 1
KINDS = ("slices2d", "volume3d")


# --------------------------------------------------------------------------------------------
# What a model expects
# --------------------------------------------------------------------------------------------


def _volume_settings(data: Mapping) -> Preprocess3DSettings:
    # min_tumour_fraction selects training cases; inference predicts every case
    return Preprocess3DSettings(modalities=data["modalities"], scaling=data["scaling"], crop=data["crop"])


@dataclass(frozen=True)
class InferenceSpec:
    """How a raw BraTS case becomes a trained model's input.

    ``kind="slices2d"``: axial slices prepared with :class:`~brats_keras.data.slices2d.SliceSettings`
    (papers 1 and 3). ``kind="volume3d"``: the whole volume scaled as
    :class:`~brats_keras.data.volumes3d.Preprocess3DSettings` says (paper 2) and predicted in windows
    of the model's input size. ``correction``: the case is first put through paper 3's offline
    pre-processing (:func:`brats_keras.data.correction.correct_image`: N4, denoiser, z-score) with
    these settings, as the model's training data was; ``None`` for models trained on raw volumes.
    ``experiment``, ``model`` and ``synthetic`` (trained on synthetic data) are provenance, reported
    with every prediction.
    """

    kind: str
    slices: SliceSettings | None = None
    volume: Preprocess3DSettings | None = None
    experiment: str = ""
    model: str = ""
    synthetic: bool = False
    correction: CorrectionSettings | None = None
    precision: str = "float32"
    """The dtype policy the model was trained in (:mod:`brats_keras.precision`); provenance: a
    ``.keras`` file rebuilds in it unless ``predict --precision`` asks for another."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} not in {KINDS}")
        if (self.slices is None) == (self.kind == "slices2d") or (self.volume is None) == (self.kind == "volume3d"):
            raise ValueError(f"a {self.kind} spec needs its own settings only "
                             "(slices for slices2d, volume for volume3d)")
        if self.correction is not None and not set(self.modalities) <= set(self.correction.modalities):
            raise ValueError(f"correction covers {list(self.correction.modalities)} but the model reads "
                             f"{list(self.modalities)}")

    @classmethod
    def for_slices(cls, slices: SliceSettings, **provenance) -> "InferenceSpec":
        return cls("slices2d", slices=slices, **provenance)

    @classmethod
    def for_volume(cls, volume: Preprocess3DSettings, **provenance) -> "InferenceSpec":
        return cls("volume3d", volume=volume, **provenance)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The model's input channels, in order."""
        return (self.slices or self.volume).modalities

    @property
    def input_modalities(self) -> tuple[str, ...]:
        """The modality files a case must have: the model's, or all the corrected ones with ``correction``."""
        return self.modalities if self.correction is None else self.correction.modalities

    def to_json(self) -> dict:
        slices = None
        if self.slices is not None:
            slices = {**dataclasses.asdict(self.slices), "modalities": list(self.slices.modalities)}
        volume = None
        if self.volume is not None:
            volume = {k: v for k, v in self.volume.to_json().items() if k != "min_tumour_fraction"}
        return {"format": SPEC_FORMAT, "kind": self.kind, "slices": slices, "volume": volume,
                "experiment": self.experiment, "model": self.model, "synthetic": bool(self.synthetic),
                "correction": None if self.correction is None else self.correction.to_json(),
                "precision": self.precision}

    @classmethod
    def from_json(cls, data: Mapping) -> "InferenceSpec":
        if not isinstance(data, Mapping) or data.get("format") != SPEC_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"inference spec format {found!r}; this version reads format {SPEC_FORMAT}")
        slices, volume = data.get("slices"), data.get("volume")
        return cls(kind=data["kind"], slices=None if slices is None else SliceSettings(**slices),
                   volume=None if volume is None else _volume_settings(volume),
                   experiment=data.get("experiment", ""), model=data.get("model", ""),
                   synthetic=bool(data.get("synthetic", False)),
                   correction=None if data.get("correction") is None else CorrectionSettings(**data["correction"]),
                   precision=data.get("precision", "float32"))

    @classmethod
    def from_run_config(cls, config: Mapping, model: str = "") -> "InferenceSpec":
        """The spec in a run's ``config.json`` (for runs exported before ``inference.json``):
        ``data.slices`` means a 2D slice model, ``data.preprocess`` a 3D one."""
        data = config.get("data") or {}
        if "correction" in data:
            raise ValueError("this run trained models with and without bias-field correction (paper 3); "
                             f"only each model's own {INFERENCE_FILE} says which input it expects")
        if not model:  # the run's one model: "models" (one entry) or, in configs before it, "model"
            models = [m.get("name", "") for m in (config.get("models") or {}).values() if isinstance(m, Mapping)]
            model = models[0] if len(models) == 1 else (config.get("model") or {}).get("name", "")
        provenance = {"experiment": config.get("name", ""), "synthetic": bool(config.get("synthetic", False)),
                      "model": model}
        if isinstance(data.get("slices"), Mapping):
            return cls.for_slices(SliceSettings(**data["slices"]), **provenance)
        if isinstance(data.get("preprocess"), Mapping):
            return cls.for_volume(_volume_settings(data["preprocess"]), **provenance)
        raise ValueError("the run configuration holds neither data.slices (2D) nor data.preprocess (3D) settings")


# --------------------------------------------------------------------------------------------
# Labels back in the original grid
# --------------------------------------------------------------------------------------------


def to_brats_labels(classes: np.ndarray) -> np.ndarray:
    """Training classes {0, 1, 2, 3} → BraTS labels {0, 1, 2, 4} (uint8)."""
    classes = np.asarray(classes).astype(np.uint8)
    et = BRATS.by_key("ET")
    return np.where(classes == et.index, et.code, classes).astype(np.uint8)


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


# --------------------------------------------------------------------------------------------
# 2D slice models
# --------------------------------------------------------------------------------------------


def slice_range(settings: SliceSettings, depth: int, which: str = "window") -> range:
    """The axial slices to predict: the training window or the whole depth."""
    if which == "all":
        return range(depth)
    if which != "window":
        raise ValueError(f"which: {which!r} not in ('window', 'all')")
    return range(settings.start, min(settings.stop, depth))


def slices_to_predict(image: np.ndarray, settings: SliceSettings, which: str = "window",
                      skip_empty: bool = False) -> list[int]:
    """Axial slices of an ``(H, W, D, C)`` image :func:`predict_volume_2d` runs the model on."""
    chosen = list(slice_range(settings, image.shape[2], which))
    if skip_empty:
        has_brain = image.any(axis=(0, 1, 3))
        chosen = [k for k in chosen if has_brain[k]]
    return chosen


def predict_in_batches(predict: PredictFn, x: np.ndarray, batch_size: int,
                       progress: Progress | None = None) -> np.ndarray:
    """``predict`` over ``x`` in batches of ``batch_size``, concatenated as float32."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    out = []
    for first in range(0, len(x), batch_size):
        chunk = x[first:first + batch_size]
        out.append(np.asarray(predict(chunk), np.float32))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)


def predict_volume_2d(predict: PredictFn, case: Case, settings: SliceSettings, *, slices: str = "window",
                      batch_size: int = 16, skip_empty: bool = False,
                      progress: Progress | None = None) -> np.ndarray:
    """Predict a ``(H, W, D)`` BraTS label volume for ``case``; slices outside ``slices`` are background.

    ``case.image`` must hold ``settings.modalities`` in that order (``load_case(files,
    settings.modalities)``). ``skip_empty``: a slice without one non-zero voxel in any channel lies
    outside the skull-stripped brain and is labelled background without running the model (tumour
    lies inside the brain; nnU-Net likewise crops a case to its non-zero box before inference).
    ``progress`` is called with the number of slices of each batch.
    """
    if tuple(case.modalities) != tuple(settings.modalities):
        raise ValueError(f"case modalities {case.modalities} differ from the model's {settings.modalities}")
    h, w, depth, _ = case.image.shape
    chosen = slices_to_predict(case.image, settings, slices, skip_empty)
    labels = np.zeros((h, w, depth), np.uint8)
    if not chosen:
        return labels
    stats = normalization_stats(case.image, settings.normalization)
    slab = normalize_volume(case.image[:, :, chosen], settings.normalization, stats)
    x = resize_images(np.transpose(slab, (2, 0, 1, 3)), settings.size)
    probabilities = predict_in_batches(predict, x, batch_size, progress)
    classes = np.argmax(resize_images(probabilities, (h, w)), axis=-1).astype(np.uint8)
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


def window_corners(shape, roi, overlap: float) -> list[tuple[int, int, int]]:
    """Start corners of the windows :func:`sliding_window_inference` predicts for a ``shape`` volume
    (``shape`` at least ``roi`` along every axis)."""
    return [(i, j, k) for i in window_starts(shape[0], roi[0], overlap)
            for j in window_starts(shape[1], roi[1], overlap)
            for k in window_starts(shape[2], roi[2], overlap)]


def count_windows(shape, roi, overlap: float) -> int:
    """How many windows :func:`sliding_window_inference` predicts for a ``shape`` volume."""
    return len(window_corners(tuple(max(int(n), int(r)) for n, r in zip(shape, roi)), tuple(int(r) for r in roi),
                              overlap))


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


def sliding_window_inference(predict: PredictFn, volume: np.ndarray, roi, *, overlap: float = 0.5,
                             blending: str = "gaussian", batch_size: int = 1,
                             progress: Progress | None = None) -> np.ndarray:
    """Class probabilities of a whole ``(X, Y, Z, C)`` volume from a model that sees ``roi`` windows.

    ``predict`` maps a batch ``(B, *roi, C)`` to ``(B, *roi, K)`` (e.g. ``model.predict_on_batch``).
    Windows overlap by ``overlap`` of their size along each axis; overlapping predictions are
    averaged with the weights of :func:`importance_map` (``gaussian`` favours window centres, where
    a convolutional network sees the most context; ``constant`` is a plain mean). A volume smaller
    than ``roi`` along an axis is zero-padded at the end and the padding is cut from the result.
    ``progress`` is called with the number of windows of each batch. Returns ``(X, Y, Z, K)`` float32.
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
    corners = window_corners(padded_shape, roi, overlap)
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
        if progress is not None:
            progress(len(group))
    return (out / count)[: shape[0], : shape[1], : shape[2]]


def predict_volume_3d(predict: PredictFn, case: Case, settings: Preprocess3DSettings, roi, *,
                      overlap: float = 0.5, blending: str = "gaussian", batch_size: int = 1,
                      progress: Progress | None = None) -> np.ndarray:
    """Predict a BraTS label volume over ``case``'s whole grid with a 3D model that sees ``roi`` windows.

    The whole volume is scaled as in training (``settings.scaling`` over whole axial slices or the
    whole volume, before any crop, as :func:`~brats_keras.data.volumes3d.preprocess_case_3d` does);
    :func:`sliding_window_inference` then covers all of it, not only the training crop.
    """
    if tuple(case.modalities) != tuple(settings.modalities):
        raise ValueError(f"case modalities {case.modalities} differ from the model's {settings.modalities}")
    volume = scale_channels(case.image, settings.scaling)
    probabilities = sliding_window_inference(predict, volume, roi, overlap=overlap, blending=blending,
                                             batch_size=batch_size, progress=progress)
    return to_brats_labels(np.argmax(probabilities, axis=-1))
