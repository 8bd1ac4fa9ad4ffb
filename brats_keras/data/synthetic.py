"""Synthetic BraTS-like multimodal MRI with three-region tumour labels.

The real BraTS releases cannot be downloaded here, so every experiment can also run on data this
module generates. The data are SYNTHETIC: numbers measured on them say whether a pipeline works
and learns, never how a method performs on patients.

How one case is made (see ``docs/synthetic_data.md``):

1. **Anatomy.** The MNI152 2009c T1 template and its grey/white-matter probability maps that
   nilearn ships inside its package (no download). Brain mask = T1 > 0 (the template is
   skull-stripped); CSF = clip(mask − GM − WM, 0, 1). The maps are placed in the BraTS grid
   (:data:`~brats_keras.data.layout.BRATS_AFFINE`: voxel i → x = −i, j → y = 239 − j, k → z = k, so
   superior is at high k) and, for grids smaller than 240×240×155, scaled per axis to fit.
   Each case applies one small random affine (rotation ±5°, scale ±5 %, shift ±4 mm) with a
   single linear interpolation per map.
2. **Tumour.** An ellipsoid with random axes and orientation whose radial function is perturbed
   by smooth random plane waves; nested thresholds give the necrotic core (1) inside the
   enhancing rim (4) inside the edema (2). Edema reaches further into white matter and avoids
   CSF spaces; every label lies inside the brain. About 15 % of cases have no enhancing tumour
   (core labelled 1 only, "non-enhancing").
3. **Contrasts.** Per modality, a tissue-probability-weighted mean of WM/GM/CSF levels, then
   tumour levels blended in with slightly blurred label weights, a smooth multiplicative bias
   field, Rician noise and a random per-case, per-modality intensity scale; zero outside the
   brain, int16.

Everything random comes from the ``numpy.random.Generator`` passed in; :func:`write_dataset` seeds
case ``n`` with ``default_rng([seed, n])`` so a case does not depend on how many others are made.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import Opener
from scipy import ndimage

from brats_keras.data.layout import (
    BRATS2020,
    BRATS_AFFINE,
    BRATS_SHAPE,
    LABEL_KEY,
    LAYOUTS,
    MISNAMED_LABELS,
    MODALITIES,
    NIFTI_SUFFIXES,
)
from brats_keras.errors import BratsKerasError
from brats_keras.io import atomic_write_json, default_cache_dir
from brats_keras.labels import BRATS
from brats_keras.progress import progress_bar

NECROTIC, EDEMA, ENHANCING = (BRATS.by_key(k).code for k in ("NCR", "ED", "ET"))
"""BraTS label values written to the ``seg`` file (1, 2, 4)."""

EMPTY_ET_FRACTION = 0.15
"""Probability that a drawn case has no enhancing tumour (labels 1 and 2 only)."""

MIN_DIM = 16
SYNTHETIC_MARKER = "SYNTHETIC_DATA.json"
"""File written at the root of every synthetic set; real BraTS releases never contain it."""
"""Smallest grid size per axis :func:`synthesize_case` accepts."""

NAME_MAPPING_HEADER = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)
"""Columns of the BraTS 2020 ``name_mapping.csv``."""

# Mean intensity of each tissue relative to white matter, per modality. ``necrosis`` is label 1 of
# an enhancing tumour, ``non_enhancing`` label 1 of a tumour without enhancement.
_LEVELS: dict[str, dict[str, float]] = {
    "t1": {"wm": 1.0, "gm": 0.70, "csf": 0.30, "edema": 0.74, "enhancing": 0.70, "necrosis": 0.42,
           "non_enhancing": 0.60},
    "t1ce": {"wm": 1.0, "gm": 0.72, "csf": 0.32, "edema": 0.76, "enhancing": 1.85, "necrosis": 0.38,
             "non_enhancing": 0.62},
    "t2": {"wm": 1.0, "gm": 1.40, "csf": 2.80, "edema": 2.20, "enhancing": 1.70, "necrosis": 2.50,
           "non_enhancing": 1.95},
    "flair": {"wm": 1.0, "gm": 1.18, "csf": 0.30, "edema": 2.30, "enhancing": 1.55, "necrosis": 1.10,
              "non_enhancing": 1.75},
}
_EDEMA_ANATOMY = 0.2
"""Share of the underlying tissue intensity kept deep inside edema (more near its boundary)."""
_TUMOUR_TEXTURE = 0.06
"""Relative standard deviation of the smooth intensity heterogeneity inside the tumour."""
_EDEMA_WM_SPREAD = 0.6
"""The edema boundary lies at 1 + spread × (WM fraction − 0.5) radii: further out in white matter."""

_WM_LEVEL_RANGE = (300.0, 2500.0)
_NOISE_RANGE = (0.02, 0.04)  # Rician sigma as a fraction of the WM level
_BIAS_RANGE = (0.10, 0.20)  # maximal relative deviation of the bias field inside the brain
_JITTER_DEGREES, _JITTER_SCALE, _JITTER_MM = 5.0, 0.05, 4.0
_TUMOUR_VOLUME_CM3 = (20.0, 120.0)  # target whole-tumour volume at full size, log-uniform
_TOP_OF_BRAIN_K = 148  # axial slice (full-size grid) holding the top of the template brain


# --------------------------------------------------------------------------------------- anatomy
@functools.lru_cache(maxsize=1)
def _mni_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brain mask, GM and WM probability maps (float32, MNI 1 mm grid) and the grid's affine."""
    import nilearn.datasets  # slow import, only needed once per process

    t1 = nilearn.datasets.load_mni152_template(resolution=1)
    gm = nilearn.datasets.load_mni152_gm_template(resolution=1)
    wm = nilearn.datasets.load_mni152_wm_template(resolution=1)
    mask = (np.asarray(t1.dataobj) > 0).astype(np.float32)
    gm_map = np.clip(np.asarray(gm.dataobj, dtype=np.float32), 0, 1) * mask
    wm_map = np.clip(np.asarray(wm.dataobj, dtype=np.float32), 0, 1) * mask
    return mask, gm_map, wm_map, np.asarray(t1.affine, dtype=float)


def _grid_to_full(shape: tuple[int, int, int]) -> np.ndarray:
    """4×4 map from voxel indices of ``shape`` to those of the full 240×240×155 grid (centres aligned)."""
    factor = np.asarray(BRATS_SHAPE, float) / np.asarray(shape, float)
    out = np.eye(4)
    out[:3, :3] = np.diag(factor)
    out[:3, 3] = 0.5 * factor - 0.5
    return out


def _full_to_mni(mask: np.ndarray, mni_affine: np.ndarray) -> np.ndarray:
    """4×4 map from full-size BraTS voxels to MNI voxels placing the template brain in the grid.

    Both affines are RAS world maps, so they differ by a translation only: the brain's left-right
    and front-back centre goes to the grid centre and its top to slice ``_TOP_OF_BRAIN_K``. The
    translation is rounded to whole millimetres so the full-size grid is an exact voxel copy.
    """
    idx = np.argwhere(mask > 0)
    lo_world = mni_affine @ np.append(idx.min(0), 1.0)
    hi_world = mni_affine @ np.append(idx.max(0), 1.0)
    brain_centre = 0.5 * (lo_world + hi_world)
    grid_centre = BRATS_AFFINE @ np.array([0.5 * (BRATS_SHAPE[0] - 1), 0.5 * (BRATS_SHAPE[1] - 1), 0.0, 1.0])
    shift = np.round(
        [brain_centre[0] - grid_centre[0], brain_centre[1] - grid_centre[1], hi_world[2] - _TOP_OF_BRAIN_K]
    )
    translate = np.eye(4)
    translate[:3, 3] = shift
    return np.linalg.inv(mni_affine) @ translate @ BRATS_AFFINE


@dataclass(frozen=True)
class _BaseMaps:
    """Jitter-free tissue maps in one grid, and the brain's bounding box there."""

    mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    lo: np.ndarray  # inclusive lower corner of the brain's bounding box (voxels)
    hi: np.ndarray  # exclusive upper corner


@functools.lru_cache(maxsize=4)
def _base_maps(shape: tuple[int, int, int]) -> _BaseMaps:
    """Resample the template maps into a grid of ``shape`` (cached per process and shape).

    For grids smaller than the BraTS one the template is first box-averaged over about one output
    voxel (an odd number of template voxels per axis) so the downsampling does not alias.
    """
    mask, gm, wm, mni_affine = _mni_maps()
    grid_to_mni = _full_to_mni(mask, mni_affine) @ _grid_to_full(shape)
    downsampling = np.abs(np.diag(grid_to_mni[:3, :3]))
    box = tuple(int(f // 2) * 2 + 1 for f in downsampling)
    maps = []
    for volume in (mask, gm, wm):
        if max(box) > 1:
            volume = ndimage.uniform_filter(volume, box)
        maps.append(
            ndimage.affine_transform(
                volume, grid_to_mni[:3, :3], grid_to_mni[:3, 3], output_shape=shape, order=1, output=np.float32
            )
        )
    idx = np.argwhere(maps[0] > 0)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, shape)
    return _BaseMaps(*maps, lo=lo, hi=hi)


def template_tissue_maps(shape=BRATS_SHAPE) -> dict[str, np.ndarray]:
    """The jitter-free anatomy in a grid of ``shape``: float32 ``brain`` mask fraction, ``gm``,
    ``wm`` and ``csf`` probabilities (copies). Each case is this anatomy moved by a small jitter.
    """
    base = _base_maps(_check_shape(shape))
    return {"brain": base.mask.copy(), "gm": base.gm.copy(), "wm": base.wm.copy(),
            "csf": np.clip(base.mask - base.gm - base.wm, 0.0, 1.0)}


@dataclass
class _Anatomy:
    """One case's jittered tissue maps inside a box of the grid (``lo`` to ``lo + brain.shape``).

    ``brain``, ``wm_volume`` and ``csf_volume`` are box volumes. The brain voxels are listed once:
    ``coords`` (box indices per axis) and ``grid_index`` (flat indices into the whole grid);
    ``positions`` gives each box voxel's place in that list (−1 outside the brain); ``gm``, ``wm``,
    ``csf`` are the tissue fractions of the listed voxels, summing to 1.
    """

    shape: tuple[int, int, int]
    lo: np.ndarray
    brain: np.ndarray
    wm_volume: np.ndarray
    csf_volume: np.ndarray
    coords: tuple[np.ndarray, np.ndarray, np.ndarray]
    grid_index: np.ndarray
    positions: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray

    @property
    def box(self) -> tuple[slice, slice, slice]:
        """The anatomy box as slices of the whole grid."""
        return tuple(slice(int(a), int(a) + n) for a, n in zip(self.lo, self.brain.shape))


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix from three angles about the x, y and z axes (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _jitter(rng: np.random.Generator, shape: tuple[int, int, int], base: _BaseMaps) -> np.ndarray:
    """4×4 map from output voxels to base-map voxels: a random rotation, scale and shift in mm."""
    to_full = _grid_to_full(shape)
    centre = (to_full @ np.append(0.5 * (base.lo + base.hi - 1), 1.0))[:3]
    linear = _rotation(rng.uniform(-_JITTER_DEGREES, _JITTER_DEGREES, 3)) * rng.uniform(
        1 - _JITTER_SCALE, 1 + _JITTER_SCALE
    )
    jitter = np.eye(4)
    jitter[:3, :3] = linear
    jitter[:3, 3] = centre - linear @ centre + rng.uniform(-_JITTER_MM, _JITTER_MM, 3)
    return np.linalg.inv(to_full) @ jitter @ to_full


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> _Anatomy:
    """Jitter the cached base maps (one interpolation per map, only over the brain's bounding box)."""
    base = _base_maps(shape)
    out_to_base = _jitter(rng, shape, base)
    # The output box: every voxel the jitter maps into the base brain box.
    corners = np.array([[a, b, c, 1.0] for a in (base.lo[0], base.hi[0]) for b in (base.lo[1], base.hi[1])
                        for c in (base.lo[2], base.hi[2])])
    back = (np.linalg.inv(out_to_base) @ corners.T).T[:, :3]
    lo = np.clip(np.floor(back.min(0)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(back.max(0)).astype(int) + 2, 0, shape)
    matrix = out_to_base[:3, :3]
    offset = matrix @ lo + out_to_base[:3, 3]
    mask, gm, wm = (
        ndimage.affine_transform(m, matrix, offset, output_shape=tuple(hi - lo), order=1, output=np.float32)
        for m in (base.mask, base.gm, base.wm)
    )
    brain = mask >= 0.5
    csf_volume = np.clip(mask - gm - wm, 0.0, 1.0)
    box_index = np.flatnonzero(brain)
    coords = np.unravel_index(box_index, brain.shape)
    grid_index = np.ravel_multi_index(tuple(c + a for c, a in zip(coords, lo)), shape)
    positions = np.full(brain.shape, -1, np.int32)
    positions.ravel()[box_index] = np.arange(box_index.size, dtype=np.int32)
    gm_b, wm_b, csf_b = (np.take(v.ravel(), box_index) for v in (gm, wm, csf_volume))
    total = gm_b + wm_b + csf_b  # ≥ mask ≥ 0.5 inside the brain
    return _Anatomy(shape, lo, brain, wm, csf_volume, coords, grid_index, positions,
                    gm_b / total, wm_b / total, csf_b / total)


# ---------------------------------------------------------------------------------------- tumour
@dataclass
class _Tumour:
    """Labels of one tumour inside its box of the anatomy box, and blurred per-region weights."""

    box: tuple[slice, slice, slice]  # within the anatomy box
    labels: np.ndarray  # uint8, BraTS values
    whole: np.ndarray  # float32 weights in [0, 1]: whole tumour, core (1 ∪ 4), label 1
    core: np.ndarray
    inner: np.ndarray
    edema_depth: np.ndarray  # float32 in [0, 1]: 0 at the edema boundary, 1 from 0.3 radii inside
    texture: np.ndarray  # float32 smooth heterogeneity, standard deviation 1


def _plane_waves(rng, offsets, to_q: np.ndarray, n_waves: int, freq: tuple[float, float]) -> np.ndarray:
    """Smooth random field of unit standard deviation: random plane waves over the tumour box.

    ``offsets`` are the box's coordinates along each axis (mm from the tumour centre), ``to_q``
    maps mm offsets to normalised tumour coordinates (1 = tumour radius), in which ``freq``
    bounds the wave numbers (radians per radius). A plane wave factorises over the axes,
    cos(Σ g_d o_d + φ) = Re(e^{iφ} Π_d e^{i g_d o_d}), so it costs a few products per voxel.
    """
    directions = rng.standard_normal((n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavevectors = directions * rng.uniform(*freq, (n_waves, 1))
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    weights = rng.uniform(0.5, 1.0, n_waves)
    weights /= np.sqrt(0.5 * np.sum(weights**2))  # a cosine of random phase has variance 1/2
    field = np.zeros([o.size for o in offsets], np.float32)
    for k, phase, weight in zip(wavevectors, phases, weights):
        g = to_q @ k  # radians per mm along each box axis
        ex, ey, ez = (np.exp(1j * g[d] * offsets[d]).astype(np.complex64) for d in range(3))
        xy = ((weight * np.exp(1j * phase) * ex)[:, None] * ey[None, :]).astype(np.complex64)
        field += xy.real[:, :, None] * ez.real
        field -= xy.imag[:, :, None] * ez.imag
    return field


def _random_orientation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 orthogonal matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _tumour(rng: np.random.Generator, anatomy: _Anatomy, enhancing: bool) -> _Tumour:
    """Draw a tumour: location in cerebral white matter, irregular nested sub-regions.

    Geometry is drawn in full-size millimetres and mapped to the grid, so smaller grids get the
    same tumour, just smaller. Fields are evaluated only in the tumour's bounding box.
    """
    scale = np.diag(_grid_to_full(anatomy.shape))[:3]  # full-size mm per grid voxel
    brain = anatomy.brain
    # Centre: a white-matter voxel above the cerebellum.
    k_full = (np.arange(brain.shape[2]) + anatomy.lo[2]) * scale[2]
    candidates = np.flatnonzero((anatomy.wm_volume >= 0.6) & brain & (k_full >= 60)[None, None, :])
    if candidates.size == 0:
        candidates = np.flatnonzero(brain)
    centre = np.array(np.unravel_index(rng.choice(candidates), brain.shape))

    volume_mm3 = 1000.0 * np.exp(rng.uniform(*np.log(_TUMOUR_VOLUME_CM3)))
    radius = (3.0 * volume_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    elongation = np.exp(rng.uniform(-0.3, 0.3, 3))
    axes = radius * elongation / np.prod(elongation) ** (1.0 / 3.0)
    to_q = _random_orientation(rng) / axes[None, :]  # mm offset (row vector) → normalised coordinates
    core_size = rng.uniform(0.55, 0.85)
    necrosis_size = core_size * rng.uniform(0.4, 0.7)
    # Boundary irregularity: standard deviation of the edema, core and necrosis boundaries (radii).
    amplitude = rng.uniform((0.15, 0.10, 0.08), (0.25, 0.18, 0.14)).astype(np.float32)

    # Box: as far as the edema boundary reaches in all but vanishingly rare cases (3 SD), in voxels.
    reach = axes.max() * (1 + _EDEMA_WM_SPREAD / 2 + 3 * amplitude[0]) / scale + 2
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))

    offsets = [((np.arange(a, b) - c) * s).astype(np.float32) for a, b, c, s in zip(lo, hi, centre, scale)]
    quad = (to_q @ to_q.T).astype(np.float32)  # |q|² = oᵀ·quad·o
    r = (
        (quad[0, 0] * offsets[0] ** 2)[:, None, None]
        + ((quad[1, 1] * offsets[1] ** 2)[None, :] + 2 * quad[0, 1] * np.outer(offsets[0], offsets[1]))[:, :, None]
        + ((quad[2, 2] * offsets[2] ** 2)[None, :] + 2 * quad[0, 2] * np.outer(offsets[0], offsets[2]))[:, None, :]
        + (2 * quad[1, 2] * np.outer(offsets[1], offsets[2]))[None, :, :]
    )
    np.sqrt(np.maximum(r, 0, out=r), out=r)
    r_edema, r_core, r_necrosis = (
        r + a * _plane_waves(rng, offsets, to_q, 8, freq)
        for a, freq in zip(amplitude, ((1.5, 5.0), (2.0, 6.0), (3.0, 7.0)))
    )
    texture = _plane_waves(rng, offsets, to_q, 8, (4.0, 10.0))

    in_brain = brain[box]
    core = in_brain & (r_core < core_size)
    edema_depth = 1.0 + _EDEMA_WM_SPREAD * (anatomy.wm_volume[box] - 0.5) - r_edema  # > 0 inside
    edema = in_brain & (edema_depth > 0) & (anatomy.csf_volume[box] < 0.6)
    labels = np.where(edema, EDEMA, 0).astype(np.uint8)
    if enhancing:
        labels[core] = ENHANCING
        labels[core & (r_necrosis < necrosis_size)] = NECROTIC
        _ensure_region(labels, NECROTIC, r_necrosis, labels == ENHANCING)
        _ensure_region(labels, ENHANCING, r_core, in_brain & (labels != NECROTIC))
    else:
        labels[core] = NECROTIC
        _ensure_region(labels, NECROTIC, r_core, in_brain)

    sigma = 0.7 / scale  # ~0.7 mm blur of the label boundaries
    weights = [
        np.clip(ndimage.gaussian_filter(region.astype(np.float32), sigma), 0, 1)
        for region in (labels > 0, (labels == NECROTIC) | (labels == ENHANCING), labels == NECROTIC)
    ]
    np.clip(edema_depth / 0.3, 0, 1, out=edema_depth)
    return _Tumour(box, labels, *weights, edema_depth=edema_depth, texture=texture)


def _ensure_region(labels: np.ndarray, value: int, distance: np.ndarray, allowed: np.ndarray) -> None:
    """If ``value`` is absent (tiny grids), give it the allowed voxel with the smallest ``distance``."""
    if (labels == value).any() or not allowed.any():
        return
    labels[np.unravel_index(np.argmin(np.where(allowed, distance, np.inf)), labels.shape)] = value


# ------------------------------------------------------------------------------------- contrasts
def _bias_field(rng: np.random.Generator, anatomy: _Anatomy) -> np.ndarray:
    """Smooth multiplicative field at the brain voxels: a product of low-order cosine sums per axis."""
    logs = []
    for n in anatomy.brain.shape:
        t = np.linspace(0.0, 1.0, n)
        logs.append(sum(rng.uniform(-1, 1) * np.cos(np.pi * order * t + rng.uniform(0, 2 * np.pi))
                        for order in (1, 2)))
    spread = sum(g.max() - g.min() for g in logs)
    gain = np.log1p(rng.uniform(*_BIAS_RANGE)) / max(0.5 * spread, 1e-6)
    fx, fy, fz = (np.exp(gain * (g - 0.5 * (g.max() + g.min()))).astype(np.float32) for g in logs)
    field = fx[anatomy.coords[0]]
    field *= fy[anatomy.coords[1]]
    field *= fz[anatomy.coords[2]]
    return field


def _render(rng: np.random.Generator, anatomy: _Anatomy, tumour: _Tumour, modality: str, enhancing: bool
            ) -> np.ndarray:
    """Intensities (float32, ≥ 0) of the brain voxels for one modality."""
    levels = {name: value * rng.uniform(0.95, 1.05) for name, value in _LEVELS[modality].items()}
    values = anatomy.gm * np.float32(levels["gm"])
    values += anatomy.wm * np.float32(levels["wm"])
    values += anatomy.csf * np.float32(levels["csf"])

    in_brain = anatomy.brain[tumour.box]
    at = anatomy.positions[tumour.box][in_brain]
    normal = values[at]
    inner_level = levels["necrosis"] if enhancing else levels["non_enhancing"]
    rim_level = levels["enhancing"] if enhancing else levels["non_enhancing"]
    # Edema: mostly its own level, nearer the underlying tissue's towards its outer boundary.
    strength = (1 - _EDEMA_ANATOMY) * (0.5 + 0.5 * tumour.edema_depth[in_brain])
    edema = strength * levels["edema"] + (1 - strength) * normal
    inner = tumour.inner[in_brain]
    core = rim_level * (1 - inner) + inner_level * inner
    core_w = tumour.core[in_brain]
    lesion = (edema * (1 - core_w) + core * core_w) * (1 + _TUMOUR_TEXTURE * tumour.texture[in_brain])
    whole = tumour.whole[in_brain]
    values[at] = normal * (1 - whole) + lesion * whole

    wm_level = rng.uniform(*_WM_LEVEL_RANGE)
    values *= _bias_field(rng, anatomy)
    values *= np.float32(wm_level)
    # Rician noise: the magnitude of a complex signal with Gaussian noise in both channels.
    sigma = np.float32(wm_level * rng.uniform(*_NOISE_RANGE))
    noise = rng.standard_normal((2, values.size), dtype=np.float32)
    noise *= sigma
    values += noise[0]
    np.square(values, out=values)
    np.square(noise[1], out=noise[1])
    values += noise[1]
    return np.sqrt(values, out=values)


def _check_shape(shape) -> tuple[int, int, int]:
    """``shape`` as three ints, each ≥ :data:`MIN_DIM`, or a :class:`BratsKerasError`."""
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise BratsKerasError(f"shape must be three integers, got {shape!r}") from None
    if len(dims) != 3 or min(dims) < MIN_DIM:
        raise BratsKerasError(f"shape must be three integers ≥ {MIN_DIM}, got {shape!r}")
    return dims


def synthesize_case(
    rng: np.random.Generator, shape=BRATS_SHAPE, *, enhancing: bool | None = None
) -> dict[str, np.ndarray]:
    """Generate one synthetic case.

    Args:
        rng: source of every random draw (the same generator state gives the same case).
        shape: grid size; the anatomy is scaled per axis to fill it as it fills 240×240×155.
        enhancing: whether the tumour has an enhancing rim (label 4). ``None`` draws it
            (``True`` with probability 1 − :data:`EMPTY_ET_FRACTION`). The draw is made in every
            case, so forcing it changes nothing else about the case.

    Returns:
        ``{"flair", "t1", "t1ce", "t2"}``: int16 arrays (0 outside the brain, ≥ 1 inside) and
        ``"seg"``: uint8 labels in {0, 1, 2, 4}, all of ``shape``.
    """
    shape = _check_shape(shape)
    drawn_enhancing = rng.random() >= EMPTY_ET_FRACTION
    enhancing = drawn_enhancing if enhancing is None else bool(enhancing)
    anatomy = _anatomy(rng, shape)
    tumour = _tumour(rng, anatomy, enhancing)

    out: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        values = _render(rng, anatomy, tumour, modality, enhancing)
        np.clip(np.rint(values, out=values), 1, np.iinfo(np.int16).max, out=values)
        volume = np.zeros(shape, np.int16)
        volume.ravel()[anatomy.grid_index] = values
        out[modality] = volume
    seg = np.zeros(shape, np.uint8)
    seg[anatomy.box][tumour.box] = tumour.labels
    out[LABEL_KEY] = seg
    return out


# ---------------------------------------------------------------------------------------- writing
def grid_affine(shape=BRATS_SHAPE) -> np.ndarray:
    """The voxel → world affine of a synthetic grid of ``shape``: the BraTS affine for the full
    240×240×155 grid; a smaller grid covers the same field of view with proportionally larger
    voxels (e.g. 4 mm for 60×60×39), so distances in mm (HD95) stay true."""
    return BRATS_AFFINE @ _grid_to_full(_check_shape(shape))


def nifti_bytes(array: np.ndarray, *, compress: bool = True) -> bytes:
    """A NIfTI-1 file (gzipped unless ``compress=False``) with the grid's affine
    (:func:`grid_affine`; the BraTS affine at full size) as qform and sform."""
    affine = grid_affine(array.shape)
    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(array.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    data = img.to_bytes()
    if compress:
        # nibabel's default gzip level; mtime=0 keeps the bytes identical for identical arrays.
        data = gzip.compress(data, compresslevel=Opener.default_compresslevel, mtime=0)
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_case(folder: Path, case_id: str, arrays: dict[str, np.ndarray]) -> None:
    """Write one case's five files (the label under its misnamed public name where one exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in (*MODALITIES, LABEL_KEY):
        name = f"{case_id}_{key}.nii.gz"
        if key == LABEL_KEY and case_id in MISNAMED_LABELS:
            name = MISNAMED_LABELS[case_id]
        write_atomic(folder / name, nifti_bytes(arrays[key], compress=name.endswith(".gz")))


def _update_name_mapping(out_dir: Path, grades: dict[str, str]) -> None:
    """Write ``name_mapping.csv``, keeping rows of cases written earlier into the same folder."""
    path = out_dir / "name_mapping.csv"
    rows: dict[str, list[str]] = {}
    if path.exists():
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            if tuple(next(reader, ())) == NAME_MAPPING_HEADER:
                rows = {row[-1]: row for row in reader if len(row) == len(NAME_MAPPING_HEADER)}
    for case_id, grade in grades.items():
        rows[case_id] = [grade, "NA", "NA", "NA", "NA", case_id]
    lines = [",".join(NAME_MAPPING_HEADER)] + [",".join(rows[k]) for k in sorted(rows)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def write_dataset(
    out_dir,
    *,
    dataset: str = "brats2020",
    cases: int = 10,
    seed: int = 0,
    shape=BRATS_SHAPE,
    first_id: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``cases`` synthetic cases in the folder layout of a public BraTS training release.

    Case ``n`` (numbers ``first_id, first_id+1, ...``; default 1 for BraTS 2020, 0 for 2021) is
    drawn from ``np.random.default_rng([seed, n])``, so it does not depend on the other cases.
    BraTS 2020 also gets ``name_mapping.csv`` (Grade HGG when the tumour enhances, else LGG), and
    case 355's label is written as the public copy's plain ``W39_1998.09.19_Segm.nii``. Existing
    cases are overwritten; every file is written atomically.

    Returns:
        The case folders written, in order.
    """
    if dataset not in LAYOUTS:
        raise BratsKerasError(f"unknown dataset {dataset!r}; choose from {', '.join(LAYOUTS)}")
    layout = LAYOUTS[dataset]
    if int(cases) < 1:
        raise BratsKerasError(f"cases must be ≥ 1, got {cases}")
    if int(seed) < 0:
        raise BratsKerasError(f"seed must be ≥ 0, got {seed}")
    shape = _check_shape(shape)
    first = (1 if layout is BRATS2020 else 0) if first_id is None else int(first_id)
    last = first + int(cases) - 1
    if first < 0 or last >= 10**layout.id_width:
        raise BratsKerasError(f"case numbers {first}..{last} do not fit {layout.id_width} digits")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders, grades = [], {}
    # Compression (zlib releases the GIL) of case n overlaps with the synthesis of case n + 1.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for number in progress_bar(range(first, last + 1), desc=f"synthetic {dataset}", unit="case", disable=not progress):
            case_id = layout.case_id(number)
            arrays = synthesize_case(np.random.default_rng([int(seed), number]), shape)
            grades[case_id] = "HGG" if (arrays[LABEL_KEY] == ENHANCING).any() else "LGG"
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_case, out_dir / case_id, case_id, arrays)
            folders.append(out_dir / case_id)
        pending.result()
    if layout is BRATS2020:
        _update_name_mapping(out_dir, grades)
    write_atomic(out_dir / SYNTHETIC_MARKER, (
        '{"synthetic": true, "generator": "brats_keras.data.synthetic", "note": "not patient data"}\n').encode())
    return folders


def is_synthetic_dataset(root) -> bool:
    """True for a folder written by :func:`write_dataset` (it leaves :data:`SYNTHETIC_MARKER`), its
    parent, or one of its case folders (a single case passed to ``predict``), so tools label their output as synthetic whichever of them
    is passed as --data-dir."""
    root = Path(root)
    is_case_folder = any(layout.matches(root.name) for layout in LAYOUTS.values())
    return ((root / SYNTHETIC_MARKER).is_file() or (is_case_folder and (root.parent / SYNTHETIC_MARKER).is_file())
            or any(p.is_file() for p in root.glob(f"*/{SYNTHETIC_MARKER}")))


def ensure_synthetic_dataset(
    cache_dir=None, *, dataset: str = "brats2020", cases: int = 12, seed: int = 0, shape=BRATS_SHAPE,
    progress: bool = True,
) -> Path:
    """A synthetic set generated once into ``<cache>/synthetic/<dataset>_<cases>cases_seed<seed>_<shape>``
    and reused afterwards (``<cache>``: ``$BRATS_KERAS_CACHE`` or ``~/.cache/brats_keras``).

    A ``.complete.json`` marker is written last, so an interrupted generation is redone.
    """
    shape = _check_shape(shape)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / f"{dataset}_{int(cases)}cases_seed{int(seed)}_{'x'.join(map(str, shape))}"
    marker = folder / ".complete.json"
    if not marker.is_file():
        write_dataset(folder, dataset=dataset, cases=cases, seed=seed, shape=shape, progress=progress)
        atomic_write_json(marker, {"dataset": dataset, "cases": int(cases), "seed": int(seed), "shape": list(shape),
                                   "synthetic": True})
    return folder


# ----------------------------------------------------------------------------------------- figure
def _find_file(folder: Path, key: str) -> Path:
    names = [f"{folder.name}_{key}{suffix}" for suffix in NIFTI_SUFFIXES]
    if key == LABEL_KEY and folder.name in MISNAMED_LABELS:
        names.append(MISNAMED_LABELS[folder.name])
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise BratsKerasError(f"{folder}: no {key} file (looked for {', '.join(names)})")


def save_case_figure(case_dir, out_png) -> Path:
    """Save a PNG of one case: the axial slice with most tumour core, each modality and the labels.

    Slices are shown in radiological convention (patient's right on the left, anterior at top),
    cropped to the brain. Label colours: necrotic/non-enhancing core red, edema green, enhancing
    yellow.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    folder = Path(case_dir)
    volumes = {key: np.asarray(nib.load(_find_file(folder, key)).dataobj) for key in (*MODALITIES, LABEL_KEY)}
    seg = volumes[LABEL_KEY]
    area = ((seg == NECROTIC) | (seg == ENHANCING)).sum(axis=(0, 1))
    k = int(np.argmax(area if area.any() else (seg > 0).sum(axis=(0, 1))))
    brain = np.argwhere(volumes["flair"].any(axis=2))
    (i0, j0), (i1, j1) = np.maximum(brain.min(0) - 4, 0), brain.max(0) + 5
    crop = (slice(i0, i1), slice(j0, j1), k)
    colours = {code: (colour, f"{BRATS.by_code(code).title} ({code})")  # legend: "edema (2)"
               for code, colour in ((NECROTIC, "red"), (EDEMA, "lime"), (ENHANCING, "yellow"))}
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.9), facecolor="black")
    for ax, key in zip(axes, (*MODALITIES, LABEL_KEY)):
        image = volumes["flair" if key == LABEL_KEY else key][crop].T  # rows: anterior → posterior
        ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image[image > 0], 99.5))
        if key == LABEL_KEY:
            overlay = np.zeros(image.shape, np.uint8)
            for index, value in enumerate(colours, start=1):
                overlay[seg[crop].T == value] = index
            ax.imshow(np.ma.masked_equal(overlay, 0), cmap=ListedColormap(["black"] + [c for c, _ in colours.values()]),
                      vmin=0, vmax=len(colours), alpha=0.6, interpolation="nearest")
        ax.set_title("FLAIR + labels" if key == LABEL_KEY else key.upper(), color="white")
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=t) for c, t in colours.values()], loc="lower center", ncol=3,
               frameon=False, labelcolor="white")
    fig.suptitle(f"SYNTHETIC case {folder.name}: axial slice {k} (radiological view)", color="white")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.1, wspace=0.03)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, facecolor="black")
    plt.close(fig)
    return out_png
