"""Seeded joint image + label augmentation for 2D segmentation (paper 4: "rotation, flipping, zooming
and elastic deformations").

Per sample, one random geometric transform gives every output pixel ``p = (row, col)`` a source
coordinate ``s(p)``; the image is resampled there **bilinearly** and the label map with **nearest
neighbour**, through the same coordinates, so image and mask stay aligned and the labels stay in the
input label set. Where ``s(p)`` falls outside the source image both read **0** (MRI background, class
0; reflecting would mirror tumours into the background). With ``c = ((H - 1) / 2, (W - 1) / 2)``::

    s(p) = c + M(θ) · F · (p - c) / z + d(p),     M(θ) = [[cos θ, sin θ], [-sin θ, cos θ]]

* ``F = diag(±1, ±1)``: vertical / horizontal flip;
* ``M(θ)``: the content turns by ``θ`` counter-clockwise as displayed (row axis pointing down), so
  ``θ = 90°`` is ``np.rot90``;
* ``z``: isotropic zoom about the centre, ``z > 1`` enlarges the content (area × z²);
* ``d(p)``: elastic displacement in source pixels, a free-form deformation: truncated-normal
  displacements on a coarse control grid, interpolated to every pixel with the cubic convolution
  kernel (Keys, a = -0.5, the kernel of ``tf.image.resize(..., "bicubic")``), as Ronneberger et al.'s
  U-Net ("random displacement vectors on a coarse grid ... bicubic interpolation").

In words: the content is zoomed, turned and mirrored about the image centre and bent by the elastic
field (whose displacements are measured in source pixels); a single resampling does all of it, so
there is no extra blur from chained interpolations.

Two implementations share the settings and the coordinate maths: :func:`augment_batch` (TensorFlow,
graph-compatible, used by :func:`brats_keras.data.pipeline.make_dataset`; random numbers from stateless
ops keyed by per-sample seeds) and :func:`augment_batch_numpy` (NumPy / ``scipy.ndimage.map_coordinates``,
used by :class:`brats_keras.data.pydataset.IndexPyDataset`; random numbers from a ``numpy`` Generator).
For the same parameters both give the same output (tested); their random draws differ, like the two
pipelines' shuffle orders.

TensorFlow is imported inside the TensorFlow functions only, so :class:`AugmentSettings` can sit in an
experiment configuration without importing TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

TRUNCATE = 2.0
"""Control-point displacements are N(0, α²) truncated at ±``TRUNCATE``·α, and the interpolated field is
clipped to its sample's largest control displacement, so no pixel moves more than 2α per axis, 2√2·α ≈
2.8α in all."""


@dataclass(frozen=True)
class AugmentSettings:
    """Random geometric augmentation of 2D images and their label maps. Defaults: paper 4 (REPLICATION.md;
    the paper names the transforms, not their ranges, so the ranges are choices for 256 × 256 slices).

    Each sample is augmented with probability :attr:`probability`; an augmented sample gets all the
    enabled transforms at once (a random angle, a random zoom, each flip with probability 0.5, a fresh
    elastic field), a sample that is not augmented is returned unchanged, bit for bit.
    """

    rotation_deg: float = 15.0
    """Maximum absolute rotation angle in degrees; the angle is uniform in ``[-r, r]`` (0 disables,
    at most 180). Brain slices are roughly aligned, so small angles model head tilt."""
    flip_horizontal: bool = True
    """Mirror left ↔ right (columns) with probability 0.5. The hemispheres are near-symmetric."""
    flip_vertical: bool = False
    """Mirror top ↔ bottom (rows) with probability 0.5. Off: an upside-down head never occurs."""
    zoom: tuple[float, float] = (0.9, 1.1)
    """Range of the isotropic zoom factor, uniform; ``> 1`` enlarges the content. ``(1, 1)`` disables."""
    elastic_alpha: float = 4.0
    """Standard deviation in pixels of the control-point displacements (normal, truncated at ±2α;
    0 disables). 4 px on 256 × 256 is Ronneberger et al.'s 10 px on 572 × 572 tiles, scaled to the
    image (≈ 1.6 % of the side); scale it with the image size."""
    elastic_spacing: float = 64.0
    """Distance in pixels between elastic control points (the smoothness): ``ceil((n - 1) / spacing) + 1``
    points per side, 5 × 5 on 256 × 256. Neighbouring points differ by ~√2·α = 5.7 px over 64 px,
    ~9 % local stretch: the tumour outline bends visibly, the anatomy stays plausible and the warp
    cannot fold (that needs a difference of the order of the spacing)."""
    probability: float = 1.0
    """Probability that a sample is augmented at all (overall, per sample, not per transform)."""

    def __post_init__(self):
        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value!r}")
            return float(value)

        rotation = number("rotation_deg", self.rotation_deg)
        if not 0.0 <= rotation <= 180.0:
            raise ValueError(f"rotation_deg: must be in [0, 180], got {rotation}")
        for name in ("flip_horizontal", "flip_vertical"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: must be True or False, got {getattr(self, name)!r}")  # noqa: TRY004
        zoom = self.zoom
        if isinstance(zoom, (str, bytes)) or not hasattr(zoom, "__len__") or len(zoom) != 2:
            raise ValueError(f"zoom: must be a (low, high) pair, got {zoom!r}")
        low, high = number("zoom", zoom[0]), number("zoom", zoom[1])
        if not 0.0 < low <= high:
            raise ValueError(f"zoom: need 0 < low <= high, got ({low}, {high})")
        alpha = number("elastic_alpha", self.elastic_alpha)
        if alpha < 0:
            raise ValueError(f"elastic_alpha: must be >= 0, got {alpha}")
        spacing = number("elastic_spacing", self.elastic_spacing)
        if spacing < 1:
            raise ValueError(f"elastic_spacing: must be >= 1 pixel, got {spacing}")
        probability = number("probability", self.probability)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability: must be in [0, 1], got {probability}")
        for name, value in (("rotation_deg", rotation), ("zoom", (low, high)), ("elastic_alpha", alpha),
                            ("elastic_spacing", spacing), ("probability", probability),
                            ("flip_horizontal", bool(self.flip_horizontal)),
                            ("flip_vertical", bool(self.flip_vertical))):
            object.__setattr__(self, name, value)

    @property
    def enabled(self) -> bool:
        """Whether augmentation can change anything (some transform on and ``probability > 0``)."""
        active = (self.rotation_deg > 0 or self.flip_horizontal or self.flip_vertical
                  or self.zoom != (1.0, 1.0) or self.elastic_alpha > 0)
        return active and self.probability > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (``zoom`` as a list), as :func:`brats_keras.configs.base.config_to_dict` gives."""
        return {**asdict(self), "zoom": list(self.zoom)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"AugmentSettings: unknown fields {unknown}")
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# shared, NumPy: the elastic control grid and its interpolation matrices


def control_grid_shape(height: int, width: int, spacing: float) -> tuple[int, int]:
    """Control points per side, ``ceil((n - 1) / spacing) + 1`` (at least 2), spanning the image."""
    return tuple(max(2, math.ceil((n - 1) / spacing) + 1) for n in (height, width))


def _keys(s: np.ndarray, a: float = -0.5) -> np.ndarray:
    s = np.abs(s)
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.where(s <= 1, near, np.where(s < 2, far, 0.0))


def cubic_interpolation_matrix(points: int, size: int) -> np.ndarray:
    """``(size, points)`` float32: values at ``points`` control points evenly spanning ``[0, size - 1]``
    (the first and last on the border pixels) → all ``size`` pixels, cubic convolution (Keys, a = -0.5),
    control values repeated beyond the ends. Rows sum to 1; control points are interpolated exactly."""
    u = np.arange(size) * ((points - 1) / max(size - 1, 1))
    i = np.minimum(np.floor(u).astype(int), points - 2)
    f = u - i
    mat = np.zeros((size, points), np.float64)
    rows = np.arange(size)
    for k in (-1, 0, 1, 2):
        np.add.at(mat, (rows, np.clip(i + k, 0, points - 1)), _keys(f - k))
    return mat.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# TensorFlow


def _spatial_shape(x: tf.Tensor, y: tf.Tensor) -> tuple[int, int]:
    if x.shape.rank != 4:
        raise ValueError(f"x: expected (B, H, W, C), got shape {x.shape}")
    if y.shape.rank != 3:
        raise ValueError(f"y: expected (B, H, W) class indices, got shape {y.shape}")
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"x: height and width must be static, got shape {x.shape}")
    if not y.shape[1:].is_compatible_with((height, width)) or not y.shape[:1].is_compatible_with(x.shape[:1]):
        raise ValueError(f"y: shape {y.shape} does not match x's {x.shape}")
    if not x.dtype.is_floating:
        raise ValueError(f"x: must be floating point, got {x.dtype.name}")
    if not y.dtype.is_integer:
        raise ValueError(f"y: must be integer class indices, got {y.dtype.name}")
    return height, width


def draw_params(seeds: tf.Tensor, settings: AugmentSettings, height: int,
                width: int) -> dict[str, tf.Tensor | None]:
    """Per-sample random parameters from ``seeds`` ``(B, 2)`` int32/int64, stateless: a seed always
    gives the same parameters, whatever else is in the batch. Returns ``angle`` (B,) radians, ``zoom``
    (B,), ``flip_h`` / ``flip_v`` (B,) bool and ``control`` ``(B, gh, gw, 2)`` float32 control-point
    displacements (row, col) in pixels (:func:`control_grid_shape`), ``None`` when the elastic part is
    off. Samples that are not augmented (``probability``) get the identity: 0, 1, no flips, zeros."""
    import tensorflow as tf

    seeds = tf.convert_to_tensor(seeds)
    if seeds.shape.rank != 2 or not seeds.shape[1:].is_compatible_with((2,)):
        raise ValueError(f"seeds: expected shape (B, 2), got {seeds.shape}")
    if not seeds.dtype.is_integer:
        raise ValueError(f"seeds: must be integers, got {seeds.dtype.name}")
    if seeds.dtype not in (tf.int32, tf.int64):
        seeds = tf.cast(seeds, tf.int64)
    grid = control_grid_shape(height, width, settings.elastic_spacing)
    rad = math.radians(settings.rotation_deg)
    flip_p = tf.constant([0.5 if settings.flip_vertical else 0.0, 0.5 if settings.flip_horizontal else 0.0])
    alpha = settings.elastic_alpha

    def one(seed):
        s = tf.random.experimental.stateless_split(seed, 5)
        apply = tf.random.stateless_uniform([], s[0]) < settings.probability
        angle = tf.random.stateless_uniform([], s[1], -rad, rad)
        zoom = tf.random.stateless_uniform([], s[2], settings.zoom[0], settings.zoom[1])
        flips = tf.logical_and(tf.random.stateless_uniform([2], s[3]) < flip_p, apply)
        control = tf.random.stateless_truncated_normal([*grid, 2], s[4]) * (alpha * tf.cast(apply, tf.float32))
        return tf.where(apply, angle, 0.0), tf.where(apply, zoom, 1.0), flips, control

    signature = (tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.bool),
                 tf.TensorSpec([*grid, 2], tf.float32))
    angle, zoom, flips, control = tf.map_fn(one, seeds, fn_output_signature=signature)
    return {"angle": angle, "zoom": zoom, "flip_h": flips[:, 1], "flip_v": flips[:, 0],
            "control": control if alpha > 0 else None}


def elastic_field(control: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Control-point displacements ``(B, gh, gw, 2)`` → the dense field ``(B, H, W, 2)`` (row, col):
    separable cubic convolution (:func:`cubic_interpolation_matrix`), clipped per sample to its largest
    control displacement so the cubic's small overshoot never moves a pixel further than a control point."""
    import tensorflow as tf

    return tf.stack(_elastic_rc(control, height, width), axis=-1)


def _elastic_rc(control, height, width):
    import tensorflow as tf

    control = tf.convert_to_tensor(control, tf.float32)
    rows = tf.constant(cubic_interpolation_matrix(control.shape[1], height))[None]
    cols_t = tf.constant(cubic_interpolation_matrix(control.shape[2], width).T)[None]
    limit = tf.reduce_max(tf.abs(control), axis=[1, 2, 3])[:, None, None]
    return tuple(tf.clip_by_value(tf.matmul(tf.matmul(rows, control[..., k]), cols_t), -limit, limit) for k in (0, 1))


def sampling_coordinates(height: int, width: int, angle: tf.Tensor, zoom: tf.Tensor, flip_h: tf.Tensor | None = None,
                         flip_v: tf.Tensor | None = None, control: tf.Tensor | None = None) -> tf.Tensor:
    """Source coordinates ``(B, H, W, 2)`` float32 (row, col) of every output pixel, the module's
    ``s(p)``, for per-sample ``angle`` (B,) radians, ``zoom`` (B,), flips (B,) bool and elastic
    ``control`` points ``(B, gh, gw, 2)`` (see :func:`draw_params`). The identity (0, 1, no flips, no
    control) gives the pixel grid exactly."""
    import tensorflow as tf

    return tf.stack(_source_rc(height, width, angle, zoom, flip_h, flip_v, control), axis=-1)


def _source_rc(height, width, angle, zoom, flip_h, flip_v, control):
    import tensorflow as tf

    # the affine part is separable: s_r = a·r + b·c + centre, s_c = d·c - e·r + centre, with the flips'
    # signs folded into the per-sample coefficients, so each coordinate is one broadcast sum
    angle = tf.cast(angle, tf.float32)
    zoom = tf.cast(zoom, tf.float32)
    sign_v = 1.0 if flip_v is None else tf.where(flip_v, -1.0, 1.0)
    sign_h = 1.0 if flip_h is None else tf.where(flip_h, -1.0, 1.0)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    r = tf.constant(np.arange(height, dtype=np.float32) - np.float32((height - 1) / 2))[None, :, None]
    c = tf.constant(np.arange(width, dtype=np.float32) - np.float32((width - 1) / 2))[None, None, :]

    def coef(v):
        return tf.reshape(v, [-1, 1, 1])

    src_r = coef(cos * sign_v) * r + coef(sin * sign_h) * c + (height - 1) / 2
    src_c = coef(cos * sign_h) * c - coef(sin * sign_v) * r + (width - 1) / 2
    if control is not None:
        dr, dc = _elastic_rc(control, height, width)
        src_r, src_c = src_r + dr, src_c + dc
    return src_r, src_c


def warp(x: tf.Tensor, y: tf.Tensor, coords: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Resample ``x`` ``(B, H, W, C)`` bilinearly and ``y`` ``(B, H, W)`` with nearest neighbour
    (``floor(s + 0.5)``) at ``coords`` ``(B, H, W, 2)`` (row, col); 0 outside the image, which
    fades to 0 over the pixel beyond its border (like ``map_coordinates``'s ``"grid-constant"``).
    Integer coordinates reproduce the input exactly. Returns the inputs' dtypes."""
    import tensorflow as tf

    return _warp_rc(tf.convert_to_tensor(x), tf.convert_to_tensor(y), coords[..., 0], coords[..., 1])


def _warp_rc(x, y, rows, cols):
    import tensorflow as tf

    height, width = x.shape[1], x.shape[2]
    batch, channels = tf.shape(x)[0], tf.shape(x)[3]
    # coordinates clamped to [-1, n] and a zero border (1 before, 2 after): every corner of every
    # coordinate is inside the padded array, so the gathers need no masks and read 0 outside
    rows = tf.clip_by_value(rows, -1.0, float(height))
    cols = tf.clip_by_value(cols, -1.0, float(width))
    padded_w = width + 3
    flat = tf.reshape(tf.pad(tf.cast(x, tf.float32), [[0, 0], [1, 2], [1, 2], [0, 0]]), tf.stack([-1, channels]))
    r0, c0 = tf.floor(rows), tf.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    base = (tf.range(batch) * ((height + 3) * padded_w))[:, None, None]
    i = base + (tf.cast(r0, tf.int32) + 1) * padded_w + tf.cast(c0, tf.int32) + 1
    # four gathers of whole pixels beat one of stacked 2 × 2 neighbourhoods (measured on CPU)
    top = tf.gather(flat, i) * (1 - fc) + tf.gather(flat, i + 1) * fc
    bottom = tf.gather(flat, i + padded_w) * (1 - fc) + tf.gather(flat, i + (padded_w + 1)) * fc
    out_x = top * (1 - fr) + bottom * fr

    flat_y = tf.reshape(tf.pad(y, [[0, 0], [1, 1], [1, 1]]), [-1])
    base_y = (tf.range(batch) * ((height + 2) * (width + 2)))[:, None, None]
    near_r = tf.cast(tf.floor(rows + 0.5), tf.int32) + 1
    near_c = tf.cast(tf.floor(cols + 0.5), tf.int32) + 1
    out_y = tf.gather(flat_y, base_y + near_r * (width + 2) + near_c)
    return tf.cast(out_x, x.dtype), out_y


def augment_batch(x: tf.Tensor, y: tf.Tensor, seeds: tf.Tensor,
                  settings: AugmentSettings) -> tuple[tf.Tensor, tf.Tensor]:
    """Randomly rotate, zoom, flip and elastically deform each sample of a batch, image and labels alike.

    ``x`` float ``(B, H, W, C)`` (static ``H`` and ``W``, square or not), ``y`` integer class indices
    ``(B, H, W)`` (e.g. uint8), ``seeds`` ``(B, 2)`` int32/int64, one stateless seed per sample (see
    :func:`augment_seeds`). Returns ``(x, y)`` with the same shapes and dtypes: ``x`` resampled
    bilinearly, ``y`` with nearest neighbour through the same coordinates, 0 outside. Pure TensorFlow,
    usable inside ``tf.data`` and ``tf.function``. When ``settings.enabled`` is false the inputs are
    returned as they are.
    """
    import tensorflow as tf

    if not isinstance(settings, AugmentSettings):
        raise TypeError(f"settings: expected AugmentSettings, got {type(settings).__name__}")
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    height, width = _spatial_shape(x, y)
    if not settings.enabled:
        return x, y
    params = draw_params(seeds, settings, height, width)
    out_x, out_y = _warp_rc(x, y, *_source_rc(height, width, **params))
    out_x.set_shape(x.shape)
    out_y.set_shape(y.shape)
    return out_x, out_y


def augment_images(x: tf.Tensor, seeds: tf.Tensor, settings: AugmentSettings) -> tf.Tensor:
    """:func:`augment_batch` of images alone (a classifier's batch: one label per image, unchanged)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    return augment_batch(x, tf.zeros_like(x[..., 0], dtype=tf.uint8), seeds, settings)[0]


def check_augment(augment, x_shape: tuple, y_shape: tuple) -> bool:
    """Whether a pipeline over samples ``x_shape`` / ``y_shape`` augments with ``augment`` (an
    :class:`AugmentSettings` or ``None``); raises for another type or samples it cannot augment
    (2D images ``(H, W, C)`` with ``(H, W)`` masks or ``()`` per-image labels)."""
    if augment is not None and not isinstance(augment, AugmentSettings):
        raise TypeError(f"augment: expected AugmentSettings or None, got {type(augment).__name__}")
    augmenting = augment is not None and augment.enabled
    if augmenting and (len(x_shape) != 3 or len(y_shape) not in (0, 2)):
        raise ValueError(f"augment: needs 2D samples (H, W, C) with (H, W) masks or per-image labels, got "
                         f"{tuple(x_shape)} / {tuple(y_shape)}")
    return augmenting


def augment_seeds(seed: int) -> tf.data.Dataset:
    """An endless dataset of per-sample seeds ``(2,)`` int64 for :func:`augment_batch`: zip it with the
    (shuffled, not yet batched) sample dataset, then batch both. A different stream every epoch
    (``rerandomize_each_iteration``), the same streams for the same ``seed`` in every run."""
    import tensorflow as tf

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: must be an integer, got {seed!r}")
    return tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2, drop_remainder=True)


# --------------------------------------------------------------------------------------------------
# NumPy / SciPy mirror (keras.utils.PyDataset on the JAX / PyTorch backends)


def draw_params_numpy(rng: np.random.Generator, batch: int, settings: AugmentSettings, height: int,
                      width: int) -> dict[str, np.ndarray | None]:
    """:func:`draw_params` with a NumPy Generator (same distributions, different numbers)."""
    apply = rng.random(batch) < settings.probability
    rad = math.radians(settings.rotation_deg)
    angle = np.where(apply, rng.uniform(-rad, rad, batch), 0.0)
    zoom = np.where(apply, rng.uniform(*settings.zoom, batch), 1.0)
    flip_p = np.array([0.5 if settings.flip_vertical else 0.0, 0.5 if settings.flip_horizontal else 0.0])
    flips = (rng.random((batch, 2)) < flip_p) & apply[:, None]
    control = None
    if settings.elastic_alpha > 0:
        control = rng.standard_normal((batch, *control_grid_shape(height, width, settings.elastic_spacing), 2))
        while (outside := np.abs(control) > TRUNCATE).any():
            control[outside] = rng.standard_normal(int(outside.sum()))
        control = (control * settings.elastic_alpha * apply[:, None, None, None]).astype(np.float32)
    return {"angle": angle.astype(np.float32), "zoom": zoom.astype(np.float32), "flip_h": flips[:, 1],
            "flip_v": flips[:, 0], "control": control}


def elastic_field_numpy(control: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`elastic_field` in NumPy."""
    rows = cubic_interpolation_matrix(control.shape[1], height)
    cols = cubic_interpolation_matrix(control.shape[2], width)
    field = np.einsum("hi,bijk,wj->bhwk", rows, control.astype(np.float32), cols, optimize=True)
    limit = np.abs(control).max(axis=(1, 2, 3))[:, None, None, None]
    return np.clip(field, -limit, limit).astype(np.float32)


def sampling_coordinates_numpy(height: int, width: int, angle: np.ndarray, zoom: np.ndarray,
                               flip_h: np.ndarray | None = None, flip_v: np.ndarray | None = None,
                               control: np.ndarray | None = None) -> np.ndarray:
    """:func:`sampling_coordinates` in NumPy (float32, the same operations)."""
    angle = np.asarray(angle, np.float32)
    zoom = np.asarray(zoom, np.float32)
    sign_v = np.float32(1) if flip_v is None else np.where(flip_v, np.float32(-1), np.float32(1))
    sign_h = np.float32(1) if flip_h is None else np.where(flip_h, np.float32(-1), np.float32(1))
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    r = (np.arange(height, dtype=np.float32) - np.float32((height - 1) / 2))[None, :, None]
    c = (np.arange(width, dtype=np.float32) - np.float32((width - 1) / 2))[None, None, :]

    def coef(v):
        return np.reshape(v, (-1, 1, 1)).astype(np.float32)

    src_r = coef(cos * sign_v) * r + coef(sin * sign_h) * c + np.float32((height - 1) / 2)
    src_c = coef(cos * sign_h) * c - coef(sin * sign_v) * r + np.float32((width - 1) / 2)
    coords = np.stack(np.broadcast_arrays(src_r, src_c), axis=-1).astype(np.float32)
    return coords if control is None else coords + elastic_field_numpy(control, height, width)


def warp_numpy(x: np.ndarray, y: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp` with ``scipy.ndimage.map_coordinates`` (order 1 for ``x``, 0 for ``y``,
    ``mode="grid-constant"``: 0 outside, the image fading to 0 across the border like :func:`warp`)."""
    from scipy.ndimage import map_coordinates

    out_x = np.empty_like(x)
    out_y = np.empty_like(y)
    for b in range(x.shape[0]):
        where = np.moveaxis(coords[b], -1, 0)
        for c in range(x.shape[-1]):
            out_x[b, ..., c] = map_coordinates(x[b, ..., c], where, order=1, mode="grid-constant", cval=0.0)
        out_y[b] = map_coordinates(y[b], where, order=0, mode="grid-constant", cval=0)
    return out_x, out_y


def augment_batch_numpy(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                        settings: AugmentSettings) -> tuple[np.ndarray, np.ndarray]:
    """:func:`augment_batch` in NumPy / SciPy: ``x`` float ``(B, H, W, C)``, ``y`` integer ``(B, H, W)``,
    random numbers from ``rng``. Same settings, transform, interpolation and fill."""
    if not isinstance(settings, AugmentSettings):
        raise TypeError(f"settings: expected AugmentSettings, got {type(settings).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or y.shape != x.shape[:3]:
        raise ValueError(f"x, y: expected (B, H, W, C) and (B, H, W), got {x.shape} and {y.shape}")
    if not settings.enabled:
        return x, y
    params = draw_params_numpy(rng, x.shape[0], settings, x.shape[1], x.shape[2])
    return warp_numpy(x, y, sampling_coordinates_numpy(x.shape[1], x.shape[2], **params))
