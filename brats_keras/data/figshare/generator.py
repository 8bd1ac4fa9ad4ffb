"""The SYNTHETIC figshare generator: T1ce slices of a patient with a meningioma, glioma or pituitary
tumour (:func:`synthesize_figshare_patient`), or of a tumour-free subject, rendered from
:mod:`brats_keras.data.synthetic`'s MNI152 anatomy. Numbers measured on them say whether a pipeline
works, never how a method performs on patients."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from brats_keras.data import synthetic as _synthetic
from brats_keras.data.figshare.reader import FIGSHARE_LABELS, MIN_SIZE, FigshareSlice
from brats_keras.data.slices2d import linear_resize_matrix
from brats_keras.errors import BratsKerasError

# ------------------------------------------------------------------------------ synthetic: anatomy
# The head is the MNI152 brain that data.synthetic places in the BraTS grid, resampled into a cube of
# _HEAD_FOV_MM per side (isotropic voxels), with skull and scalp added as shells at fixed distances
# from the brain surface. "Head mm" below means cube voxel index × voxel size; its axes point to the
# patient's left, posterior and superior (the BraTS grid's i, j, k).
_HEAD_FOV_MM = 240.0
_HEAD_BOTTOM_K = -49.0  # BraTS full-size slice index (1 mm) of the cube's lower face; brain: k ≈ -6 … 148
_SELLA_MNI = np.array([0.0, 0.0, -27.0])  # centre of the sellar region (pituitary), MNI mm
_SPHENOID_MNI = np.array([0.0, 10.0, -45.0])  # sphenoid sinus (air, dark) below and in front of the sella
_SPHENOID_RADII_MM = np.array([12.0, 11.0, 8.0])
_T1CE = {k: _synthetic._LEVELS["t1ce"][k] for k in ("wm", "gm", "csf")}  # relative to white matter
_SLICE_SPACING_MM = 7.0  # real figshare slices: 6 mm thick + 1 mm gap
_CLEFT = 1.12  # a meningioma's CSF cleft reaches this normalised radius
_EDEMA_WM_SPREAD = _synthetic._EDEMA_WM_SPREAD  # edema boundary at edema + spread · (WM fraction − 0.5)
_VIEWS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class _Head:
    """The tumour-free head in a cube of isotropic voxels, and the sites where tumours are placed."""

    voxel_mm: float
    maps: np.ndarray  # (4, G, G, G) float32: brain fraction, GM, WM, signed distance to the brain surface (mm)
    mni_to_mm: np.ndarray  # 4×4: MNI mm → head mm
    centre_mm: np.ndarray  # centre of the brain's bounding box, head mm
    glioma_sites: np.ndarray  # (n, 3) deep white matter above the cerebellum, head mm
    convexity_sites: np.ndarray  # (n, 3) brain surface above the skull base, head mm
    convexity_normals: np.ndarray  # (n, 3) their outward normals
    falx_sites: np.ndarray  # (n, 3) the midline, above the corpus callosum, head mm


def _anatomy_grid(size: int) -> int:
    """Cube size for output images of ``size``: voxels about two output pixels, 64 … 128."""
    return int(np.clip(size // 2, 64, 128))


@functools.lru_cache(maxsize=2)
def _head(grid: int) -> _Head:
    """The head model for a cube of ``grid``³ voxels (cached per process; about 4 s at 128)."""
    mask, gm, wm, mni_affine = _synthetic._mni_maps()
    full_to_mni = _synthetic._full_to_mni(mask, mni_affine)
    v = _HEAD_FOV_MM / grid
    cube_to_full = np.diag([v, v, v, 1.0])
    cube_to_full[:3, 3] = (0.5 * v - 0.5, 0.5 * v - 0.5, _HEAD_BOTTOM_K + 0.5 * v - 0.5)
    cube_to_mni = full_to_mni @ cube_to_full
    box = int(v // 2) * 2 + 1  # anti-aliasing, as data.synthetic does for small grids
    maps = []
    for volume in (mask, gm, wm):
        if box > 1:
            volume = ndimage.uniform_filter(volume, box)
        maps.append(ndimage.affine_transform(volume, cube_to_mni[:3, :3], cube_to_mni[:3, 3],
                                             output_shape=(grid,) * 3, order=1, output=np.float32))
    brain = maps[0] >= 0.5
    outside = ndimage.distance_transform_edt(~brain, sampling=v)
    inside = ndimage.distance_transform_edt(brain, sampling=v)
    signed = np.where(brain, 0.5 * v - inside, outside - 0.5 * v).astype(np.float32)
    maps.append(signed)

    cube_mm_to_mni_mm = mni_affine @ cube_to_mni @ np.diag([1 / v, 1 / v, 1 / v, 1.0])
    mni_to_mm = np.linalg.inv(cube_mm_to_mni_mm)
    idx = np.argwhere(brain)
    centre = 0.5 * (idx.min(0) + idx.max(0)) * v

    def sites(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.argwhere(selected)
        mni = (cube_mm_to_mni_mm @ np.c_[points * v, np.ones(len(points))].T).T[:, :3]
        return points, mni

    pts, mni = sites((maps[2] >= 0.6) & (signed <= -8.0))
    keep = mni[:, 2] >= -15.0
    glioma = pts[keep] if keep.any() else np.argwhere(signed <= -0.5 * v)
    pts, mni = sites(brain & (signed > -1.5 * v))
    keep = (mni[:, 2] >= -5.0) & (np.abs(mni[:, 0]) > 4.0)
    convexity = pts[keep] if keep.any() else pts
    gradient = np.stack(np.gradient(signed), axis=-1)[tuple(convexity.T)]
    normals = gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-6)
    pts, mni = sites(brain)
    keep = (np.abs(mni[:, 0]) <= max(v, 1.0)) & (mni[:, 2] >= 35.0) & (mni[:, 2] <= 65.0)
    keep &= np.abs(mni[:, 1] + 20.0) <= 45.0  # from the frontal to the parietal lobes
    falx = pts[keep] if keep.any() else convexity
    return _Head(v, np.stack(maps), mni_to_mm, centre, glioma * v, convexity * v, normals, falx * v)


def _sample(head: _Head, points_mm: np.ndarray, which: Sequence[int]) -> list[np.ndarray]:
    """Head maps ``which`` (indices into ``head.maps``) at ``points_mm`` (3, …), linearly interpolated;
    outside the cube: no brain and far from it (air)."""
    coords = np.asarray(points_mm, np.float32) / np.float32(head.voxel_mm)
    out = []
    for i in which:
        cval = 1e3 if i == 3 else 0.0
        out.append(ndimage.map_coordinates(head.maps[i], coords, order=1, mode="constant", cval=cval,
                                           prefilter=False, output=np.float32))
    return out


def _smooth_step(x: np.ndarray, edge: float, width: float) -> np.ndarray:
    """0 well below ``edge``, 1 well above, linear over ``width``."""
    return np.clip((x - edge) / max(width, 1e-6) + 0.5, 0.0, 1.0)


# ------------------------------------------------------------------------------- synthetic: lesion
@dataclass
class _Lesion:
    """One tumour in head mm: an ellipsoid (``to_q`` maps mm offsets to normalised coordinates, 1 =
    the boundary) whose boundaries are perturbed by smooth random plane waves."""

    label: int
    centre: np.ndarray
    to_q: np.ndarray
    reach_mm: float  # nothing of the lesion (edema included) lies further from the centre
    core_reach_mm: float  # nor of the tumour the mask outlines
    waves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]]  # boundary → (k (n,3) rad/mm, phase, w, amp)
    necrosis: float = 0.0  # glioma: normalised radius of the necrotic centre
    edema: float = 0.0  # glioma: normalised radius of the edema (before the white-matter spread)
    inner_table_mm: float = 1.5  # the skull's inner surface, mm outside the brain surface (the patient's)

    def radius_at(self, points_mm: np.ndarray) -> np.ndarray:
        """Unperturbed normalised radius at ``points_mm`` (n, 3)."""
        q = (points_mm - self.centre).astype(np.float32) @ self.to_q.astype(np.float32)
        return np.sqrt(np.einsum("ij,ij->i", q, q))

    def bound(self, name: str) -> float:
        """Largest possible perturbation of boundary ``name`` (amplitude × Σ|weights|)."""
        _, _, weights, amp = self.waves[name]
        return float(amp * np.abs(weights).sum())

    def waves_at(self, points_mm: np.ndarray, name: str) -> np.ndarray:
        """The smooth random field ``name`` (unit standard deviation) at ``points_mm`` (n, 3)."""
        kvecs, phases, weights, _ = self.waves[name]
        offsets = (points_mm - self.centre).astype(np.float32)
        return np.cos(offsets @ kvecs.T.astype(np.float32) + phases.astype(np.float32)) @ weights.astype(np.float32)

    def field(self, points_mm: np.ndarray, name: str, r: np.ndarray | None = None, below: float | None = None
              ) -> np.ndarray:
        """Perturbed normalised radius at ``points_mm`` (n, 3) for boundary ``name``; ``r``: the
        unperturbed radius if known. With ``below``, the perturbation is added only where it can
        bring the radius under ``below`` (elsewhere the unperturbed radius, ≥ ``below``, is returned)."""
        r = self.radius_at(points_mm) if r is None else r.copy()
        amp = self.waves[name][3]
        if not amp:
            return r
        todo = slice(None) if below is None else np.flatnonzero(r < below + self.bound(name))
        r[todo] += np.float32(amp) * self.waves_at(points_mm[todo], name)
        return r

    def core_inside(self, points_mm: np.ndarray, signed: np.ndarray, r_core: np.ndarray | None = None
                    ) -> np.ndarray:
        """Boolean: the tumour outlined by the mask (the whole tumour; a glioma's enhancing core and
        necrosis, not its edema)."""
        inside = (self.field(points_mm, "core", below=1.0) if r_core is None else r_core) < 1.0
        if self.label == 1:  # extra-axial: limited by the skull
            inside &= signed <= self.inner_table_mm
        elif self.label == 2:  # intra-axial
            inside &= signed <= 0.0
        return inside


def _waves(rng: np.random.Generator, to_q: np.ndarray, n: int, freq: tuple[float, float], amp: float):
    directions = rng.standard_normal((n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k_norm = directions * rng.uniform(*freq, (n, 1))  # radians per radius
    phases = rng.uniform(0, 2 * np.pi, n)
    weights = rng.uniform(0.5, 1.0, n)
    weights /= np.sqrt(0.5 * np.sum(weights**2))  # unit standard deviation
    return (to_q @ k_norm.T).T, phases, weights, float(amp)


def _random_rotation(rng: np.random.Generator, max_degrees: float | None = None) -> np.ndarray:
    """Uniformly random (``max_degrees`` None) or within ±``max_degrees`` about each axis."""
    if max_degrees is None:
        return _synthetic._random_orientation(rng)
    return _synthetic._rotation(rng.uniform(-max_degrees, max_degrees, 3))


def _draw_lesion(rng: np.random.Generator, label: int, head: _Head) -> _Lesion:
    """Meningioma: on the convexity (70 %) or the falx, round, extra-axial; glioma: deep white
    matter, irregular; pituitary: small, round, at the sella."""
    if label == 1:
        radius = float(np.exp(rng.uniform(np.log(9.0), np.log(24.0))))
        elongation = np.exp(rng.uniform(-0.12, 0.12, 3))
        if rng.random() < 0.7:
            i = rng.integers(len(head.convexity_sites))
            centre = head.convexity_sites[i] - head.convexity_normals[i] * rng.uniform(0.15, 0.55) * radius
        else:
            centre = head.falx_sites[rng.integers(len(head.falx_sites))].astype(float)
        amps = {"core": rng.uniform(0.03, 0.06)}
    elif label == 2:
        radius = float(np.exp(rng.uniform(np.log(12.0), np.log(28.0))))
        elongation = np.exp(rng.uniform(-0.3, 0.3, 3))
        centre = head.glioma_sites[rng.integers(len(head.glioma_sites))].astype(float)
        amps = {"core": rng.uniform(0.10, 0.18), "necrosis": rng.uniform(0.08, 0.14),
                "edema": rng.uniform(0.15, 0.25)}
    else:
        radius = float(np.exp(rng.uniform(np.log(6.0), np.log(13.0))))
        elongation = np.array([0.95, 0.95, rng.uniform(1.1, 1.4)])  # taller than wide
        centre = (head.mni_to_mm @ np.append(_SELLA_MNI + rng.normal(0.0, 1.5, 3), 1.0))[:3]
        amps = {"core": rng.uniform(0.03, 0.07)}
    axes = radius * elongation / np.prod(elongation) ** (1 / 3)
    rotation = _random_rotation(rng, 10.0) if label == 3 else _random_rotation(rng)
    to_q = rotation / axes[None, :]
    freqs = {"core": (2.0, 6.0), "necrosis": (3.0, 7.0), "edema": (1.5, 5.0), "texture": (4.0, 10.0)}
    waves = {name: _waves(rng, to_q, 8, freqs[name], amp) for name, amp in amps.items()}
    waves["texture"] = _waves(rng, to_q, 8, freqs["texture"], 1.0)
    lesion = _Lesion(label, np.asarray(centre, float), to_q, reach_mm=0.0, core_reach_mm=0.0, waves=waves)
    lesion.core_reach_mm = float(axes.max() * (1.0 + lesion.bound("core")) + 1.0)
    outer = _CLEFT + lesion.bound("core")  # meningioma: its CSF cleft; pituitary: the tumour
    if label == 2:
        lesion.necrosis = float(rng.uniform(0.35, 0.65))
        lesion.edema = float(rng.uniform(1.3, 1.8))
        outer = lesion.edema + 0.5 * _EDEMA_WM_SPREAD + lesion.bound("edema")
    lesion.reach_mm = float(axes.max() * (outer + 0.1) + 2.0)
    return lesion


# ------------------------------------------------------------------------------ synthetic: a patient
@dataclass
class _Patient:
    """Everything drawn once per patient: pose, contrast and the view of the slices."""

    pose: np.ndarray  # 4×4: scanner mm → head mm (a small rotation, scale and shift about the brain)
    view: str
    frame: np.ndarray  # rows U (image columns), V (image rows), N (slice normal), scanner axes
    levels: dict[str, float]
    shells: tuple[np.ndarray, np.ndarray]  # boundaries (mm outside the brain) and levels of CSF/skull/scalp/air
    bias: tuple[np.ndarray, float]  # per-axis cosine coefficients (3, 2, 2) and gain
    wm_level: float
    noise: float
    fov_mm: float
    inplane_shift: np.ndarray


def _view_frame(view: str) -> np.ndarray:
    """Image column direction U, row direction V and slice normal N in head axes (left, posterior,
    superior): axial and coronal in radiological convention (patient's right on the image's left),
    axial with anterior at the top, coronal and sagittal with superior at the top, sagittal facing left."""
    e0, e1, e2 = np.eye(3)
    return {"axial": np.stack([e0, e1, e2]), "coronal": np.stack([e0, -e2, e1]),
            "sagittal": np.stack([e1, -e2, e0])}[view]


def _draw_patient(rng: np.random.Generator, label: int, head: _Head) -> _Patient:
    views = ("coronal", "sagittal") if label == 3 else _VIEWS
    view = views[rng.integers(len(views))]
    linear = _random_rotation(rng, 6.0) * rng.uniform(0.95, 1.05)
    pose = np.eye(4)
    pose[:3, :3] = linear
    pose[:3, 3] = head.centre_mm - linear @ head.centre_mm + rng.uniform(-4.0, 4.0, 3)
    levels = {name: value * rng.uniform(0.95, 1.05) for name, value in _T1CE.items()}
    levels.update(meningioma=rng.uniform(1.5, 1.9), rim=rng.uniform(1.35, 1.8), necrosis=rng.uniform(0.28, 0.45),
                  edema=rng.uniform(0.62, 0.78), pituitary=rng.uniform(1.4, 1.8), sinus=0.04)
    thickness = [rng.uniform(1.0, 2.0), rng.uniform(1.2, 2.0), rng.uniform(1.5, 3.5), rng.uniform(1.0, 1.8),
                 rng.uniform(4.0, 7.0)]  # CSF/dura, inner table, diploë, outer table, scalp
    edges = np.cumsum(thickness)
    shell_levels = np.array([levels["csf"], 0.06, rng.uniform(0.6, 0.9), 0.06, rng.uniform(1.0, 1.4), 0.0])
    bias_coef = np.stack([rng.uniform(-1, 1, (3, 2)), rng.uniform(0, 2 * np.pi, (3, 2))], axis=1)  # (3, 2, 2)
    spread = np.sum(np.abs(bias_coef[:, 0, :])) * 2
    gain = float(np.log1p(rng.uniform(*_synthetic._BIAS_RANGE)) / max(0.5 * spread, 1e-6))
    return _Patient(pose=pose, view=view, frame=_view_frame(view), levels=levels, shells=(edges, shell_levels),
                    bias=(bias_coef, gain), wm_level=float(rng.uniform(*_synthetic._WM_LEVEL_RANGE)),
                    noise=float(rng.uniform(*_synthetic._NOISE_RANGE)), fov_mm=float(rng.uniform(215.0, 245.0)),
                    inplane_shift=rng.uniform(-6.0, 6.0, 2))


def _to_head(patient: _Patient, scanner_mm: np.ndarray) -> np.ndarray:
    """(n, 3) scanner mm → head mm."""
    return scanner_mm @ patient.pose[:3, :3].T + patient.pose[:3, 3]


def _slice_offsets(lesion: _Lesion, patient: _Patient, head: _Head, count: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """Positions (mm along the slice normal, scanner frame) of ``count`` neighbouring slices through
    the tumour: spaced like the real series (7 mm) or closer, all where the tumour's cross-section is
    at least a quarter of its largest."""
    centre = np.linalg.solve(patient.pose[:3, :3], lesion.centre - patient.pose[:3, 3])
    reach = lesion.core_reach_mm
    steps = 24
    h = 2 * reach / steps
    grid = (np.arange(steps + 1) - steps / 2) * h
    u, v, n = patient.frame
    a, b, t = np.meshgrid(grid, grid, grid, indexing="ij")
    scanner = centre + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v + t.reshape(-1, 1) * n
    points = _to_head(patient, scanner)
    (signed,) = _sample(head, points.T, (3,))
    inside = lesion.core_inside(points, signed).reshape(a.shape)
    area = inside.sum(axis=(0, 1)).astype(float)
    base = float(centre @ n)
    if area.max() == 0:  # cannot happen for a drawn lesion, but never loop on it
        return base + (np.arange(count) - (count - 1) / 2) * min(_SLICE_SPACING_MM, 1.0)
    peak = int(np.argmax(area))
    ok = area >= 0.25 * area.max()
    lo = hi = peak
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < steps and ok[hi + 1]:
        hi += 1
    t_lo, t_hi = grid[lo], grid[hi]
    if count == 1:
        return np.array([base + grid[peak]])
    spacing = min(_SLICE_SPACING_MM, (t_hi - t_lo) / (count - 1))
    span = spacing * (count - 1)
    start = rng.uniform(t_lo, max(t_hi - span, t_lo))
    return base + start + spacing * np.arange(count)


def _shell_levels(signed: np.ndarray, patient: _Patient) -> np.ndarray:
    """Intensity outside the brain by distance from its surface: CSF, inner table, diploë, outer table,
    scalp, air (soft 0.6 mm steps)."""
    edges, levels = patient.shells
    out = np.full(signed.shape, levels[0], np.float32)
    for edge, before, after in zip(edges, levels[:-1], levels[1:]):
        out += np.float32(after - before) * _smooth_step(signed, edge, 0.6).astype(np.float32)
    return out


def _bias(points_mm: np.ndarray, patient: _Patient) -> np.ndarray:
    """Smooth multiplicative field: exp(gain · Σ_axes Σ_orders c cos(π·order·t + φ)), t ∈ [0, 1] across the FOV."""
    coef, gain = patient.bias
    total = np.zeros(points_mm.shape[1:], np.float32)
    for axis in range(3):
        t = points_mm[axis] / _HEAD_FOV_MM
        for order in (1, 2):
            total += np.float32(coef[axis, 0, order - 1]) * np.cos(np.pi * order * t + coef[axis, 1, order - 1])
    return np.exp(np.float32(gain) * total)


def _tissue(maps: Sequence[np.ndarray], points_mm: np.ndarray, patient: _Patient,
            sinus: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Tumour-free T1ce intensity (relative to white matter) at ``points_mm`` (3, h, w), where the
    head maps are ``maps`` (brain, GM, WM, signed distance; each (h, w))."""
    brain, gm, wm, signed = maps
    lv = patient.levels
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    values = gm * np.float32(lv["gm"]) + wm * np.float32(lv["wm"]) + csf * np.float32(lv["csf"])
    outside = _shell_levels(signed, patient)
    centre, radii = sinus
    q = (points_mm - centre[:, None, None]) / radii[:, None, None]
    in_sinus = _smooth_step(-np.sqrt(np.sum(q * q, axis=0)), -1.0, 0.1).astype(np.float32) * (signed > 1.0)
    outside = outside * (1 - in_sinus) + np.float32(lv["sinus"]) * in_sinus
    values += np.clip(1.0 - brain, 0.0, 1.0) * outside
    return values


def _render_lesion(values: np.ndarray, mask: np.ndarray, points: np.ndarray, maps: Sequence[np.ndarray],
                   lesion: _Lesion, patient: _Patient, pixel_mm: float) -> None:
    """Paint the tumour into ``values`` (n,) and mark what the mask outlines in ``mask`` (n,), at
    ``points`` (n, 3) head mm where the head maps are ``maps`` (brain, GM, WM, signed distance)."""
    brain, gm, wm, signed = maps
    lv = patient.levels
    radius = 1.0 / np.linalg.norm(lesion.to_q, axis=0).max()  # smallest semi-axis, mm
    width = max(pixel_mm, 0.5) / radius  # soft edges over about a pixel, in normalised units
    r = lesion.radius_at(points)
    r_core = lesion.field(points, "core", r, below=_CLEFT + width)
    mask[:] = lesion.core_inside(points, signed, r_core)
    core_w = _smooth_step(-r_core, -1.0, width)
    if lesion.label == 1:
        core_w *= _smooth_step(-signed, -lesion.inner_table_mm, 0.6)
    elif lesion.label == 2:
        core_w *= _smooth_step(-signed, 0.0, 0.6)
    if lesion.label == 1:
        cleft = _smooth_step(-r_core, -_CLEFT, width) * (1 - core_w) * (brain > 0.5)  # CSF cleft around it
        values[:] = values * (1 - 0.6 * cleft) + np.float32(lv["csf"]) * 0.6 * cleft
    elif lesion.label == 2:
        # Edema reaches further into white matter and avoids CSF spaces, as in data.synthetic.
        r_edema = lesion.field(points, "edema", r, below=lesion.edema + 0.5 * _EDEMA_WM_SPREAD + width)
        depth = lesion.edema + _EDEMA_WM_SPREAD * (wm - 0.5) - r_edema
        csf = np.clip(brain - gm - wm, 0, 1) / np.maximum(brain, 1e-3)
        edema_w = _smooth_step(depth, 0.0, width) * (brain > 0.5) * (csf < 0.6)
        strength = 0.8 * (0.5 + 0.5 * np.clip(depth / 0.3, 0, 1))
        edema = strength * lv["edema"] + (1 - strength) * values
        values[:] = values * (1 - edema_w) + edema * edema_w
    active = np.flatnonzero(core_w > 0)
    if not active.size:
        return
    at = points[active]
    texture = lesion.waves_at(at, "texture")
    if lesion.label == 1:
        level = lv["meningioma"] * (1 + 0.03 * texture)
    elif lesion.label == 3:
        level = lv["pituitary"] * (1 + 0.05 * texture)
    else:
        inner = _smooth_step(-lesion.field(at, "necrosis", r[active]), -lesion.necrosis, width)
        level = (lv["rim"] * (1 - inner) + lv["necrosis"] * inner) * (1 + 0.06 * texture)
    w = core_w[active]
    values[active] = values[active] * (1 - w) + level.astype(np.float32) * w


def _clean_mask(mask: np.ndarray, fallback: tuple[int, int]) -> np.ndarray:
    """uint8: the largest connected part of ``mask``, holes filled (a delineated outline encloses one
    region); the pixel ``fallback`` if ``mask`` is empty (tiny images)."""
    out = np.zeros(mask.shape, np.uint8)
    found = np.argwhere(mask)
    if not found.size:
        out[fallback] = 1
        return out
    (r0, c0), (r1, c1) = np.maximum(found.min(0) - 1, 0), found.max(0) + 2
    crop = mask[r0:r1, c0:c1]
    labels, n = ndimage.label(crop)
    if n > 1:
        sizes = ndimage.sum_labels(crop, labels, index=np.arange(1, n + 1))
        crop = labels == 1 + int(np.argmax(sizes))
    out[r0:r1, c0:c1] = ndimage.binary_fill_holes(crop)
    return out


def _upsample(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, pixel-centre aligned resize of a square float32 image to (size, size) (a copy)."""
    n = image.shape[0]
    image = image.astype(np.float32, copy=False)
    if n == size:
        return image.copy()
    if size == 2 * n:  # the common case, without matrix products: weights 3/4 and 1/4 (edges clamped)
        padded = np.pad(image, 1, mode="edge")
        rows = np.empty((size, n + 2), np.float32)
        rows[0::2] = 0.75 * padded[1:-1] + 0.25 * padded[:-2]
        rows[1::2] = 0.75 * padded[1:-1] + 0.25 * padded[2:]
        out = np.empty((size, size), np.float32)
        out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
        out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
        return out
    m = linear_resize_matrix(n, size)
    return (m @ image.astype(np.float32, copy=False)) @ m.T


def mask_border(mask: np.ndarray, max_points: int = 80) -> np.ndarray:
    """Outer contour of a binary ``mask`` (H, W) as (k, 2) float64 MATLAB image coordinates
    ``(x = column, y = row)``, 1-based, at most ``max_points`` points evenly spaced along it (the
    longest contour when there are several)."""
    import contourpy

    if not np.any(mask):
        return np.zeros((0, 2))
    padded = np.pad(np.asarray(mask, np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    line = max(lines, key=len)[:-1]  # closed: the last point repeats the first
    step = max(1, int(np.ceil(len(line) / max_points)))
    return np.asarray(line[::step], np.float64)  # padding (−1) and 1-based (+1) cancel


def synthesize_figshare_patient(rng: np.random.Generator, label: int, slices: int, size: int = 512, *,
                                pid: str | None = None) -> list[FigshareSlice]:
    """SYNTHETIC T1ce slices of one patient with a tumour of type ``label``, like a figshare patient's.

    The brain is data.synthetic's MNI152 anatomy (grey/white matter, CSF) in a 240 mm cube, with skull
    and scalp as shells around it; the patient gets a small random head pose (rotation ±6°, scale ±5 %,
    shift ±4 mm), a random view (axial, coronal or sagittal; pituitary: coronal or sagittal) and
    ``slices`` neighbouring parallel slices through the tumour (7 mm apart, closer when the tumour is
    small), a 215–245 mm field of view sampled at ``size`` × ``size``. Tumour looks:

    - meningioma (1): extra-axial on the convexity (70 %) or the falx; round, homogeneously and
      brightly enhancing, limited by the skull, with a thin CSF cleft around it;
    - glioma (2): intra-axial in deep white matter; irregular, ring-enhancing with a dark necrotic
      centre, surrounded by hypo-/iso-intense edema reaching further into white matter (the mask
      outlines the enhancing tumour with its necrosis, not the edema);
    - pituitary (3): a small round enhancing mass at the skull-base midline (sella), above the dark
      sphenoid sinus.

    Intensities: data.synthetic's T1ce tissue levels, a smooth bias field, Rician noise and a random
    white-matter level (300–2500), as int16 ≥ 0.

    Args:
        rng: every random draw (the same state gives the same patient).
        label: 1 meningioma, 2 glioma, 3 pituitary.
        slices: number of slices (≥ 1), in order along the slice normal.
        size: image side in pixels (≥ :data:`MIN_SIZE`; the release: 512).
        pid: the patient id; default a random 6-digit string.

    Returns:
        ``slices`` :class:`FigshareSlice` (``path`` None): ``image`` int16 (size, size), ``mask``
        uint8 (one filled region, never empty), ``border`` its outer contour (:func:`mask_border`).
    """
    if int(label) not in FIGSHARE_LABELS:
        raise BratsKerasError(f"label must be 1, 2 or 3, got {label!r}")
    return _synthesize_slices(rng, int(label), slices, size, pid=pid)


def synthesize_tumour_free_slices(rng: np.random.Generator, slices: int, size: int = 512) -> list[np.ndarray]:
    """SYNTHETIC tumour-free T1ce slices of one subject (int16 (size, size) images), drawn like
    :func:`synthesize_figshare_patient`'s (anatomy, pose, view, bias field, noise, contrast) but without a
    lesion: neighbouring slices through the brain within ±35 mm of its centre. Paper 5's "no tumour" class."""
    return [s.image for s in _synthesize_slices(rng, 0, slices, size, pid="0")]


def _synthesize_slices(rng: np.random.Generator, label: int, slices, size, *, pid: str | None
                       ) -> list[FigshareSlice]:
    """:func:`synthesize_figshare_patient`; ``label`` 0 renders no lesion (empty masks, label 0)."""
    if int(slices) < 1:
        raise BratsKerasError(f"slices must be ≥ 1, got {slices}")
    if int(size) < MIN_SIZE:
        raise BratsKerasError(f"size must be ≥ {MIN_SIZE}, got {size}")
    label, slices, size = int(label), int(slices), int(size)
    if pid is None:
        pid = str(rng.integers(100000, 1000000))
    head = _head(_anatomy_grid(size))
    lesion = _draw_lesion(rng, label, head) if label else None
    patient = _draw_patient(rng, label, head)
    if lesion is not None:
        lesion.inner_table_mm = float(patient.shells[0][0])
        offsets = _slice_offsets(lesion, patient, head, slices, rng)
    else:  # neighbouring slices somewhere through the brain
        centre = np.linalg.solve(patient.pose[:3, :3], head.centre_mm - patient.pose[:3, 3]) @ patient.frame[2]
        offsets = centre + rng.uniform(-35.0, 35.0) + min(_SLICE_SPACING_MM, 30.0 / max(slices, 1)) * (
            np.arange(slices) - (slices - 1) / 2)
    sinus = ((head.mni_to_mm @ np.append(_SPHENOID_MNI, 1.0))[:3], _SPHENOID_RADII_MM)

    u, v, n = patient.frame
    linear, shift = patient.pose[:3, :3], patient.pose[:3, 3]
    u_head, v_head = linear @ u, linear @ v
    pixel = patient.fov_mm / size
    coarse = min(size, 2 * _anatomy_grid(size))  # tissue maps are smooth: sample them at ≤ 2 px per voxel
    centre_scanner = np.linalg.solve(linear, head.centre_mm - shift)
    lesion_scanner = None if lesion is None else np.linalg.solve(linear, lesion.centre - shift)
    out = []
    for offset in offsets:
        origin = (centre_scanner - (centre_scanner @ n) * n + offset * n
                  + patient.inplane_shift[0] * u + patient.inplane_shift[1] * v)
        origin_head = linear @ origin + shift

        def plane(rows: np.ndarray, cols: np.ndarray, step: float) -> np.ndarray:
            """Head mm (3, len(rows), len(cols)) of pixel centres (``rows``, ``cols``: pixel offsets
            from the image centre, in units of ``step`` mm)."""
            return (origin_head[:, None, None] + (cols[None, None, :] * step) * u_head[:, None, None]
                    + (rows[None, :, None] * step) * v_head[:, None, None]).astype(np.float32)

        axis = np.arange(coarse) - (coarse - 1) / 2
        points = plane(axis, axis, patient.fov_mm / coarse)
        maps = _sample(head, points, (0, 1, 2, 3))
        image = _upsample(_tissue(maps, points, patient, sinus), size)
        axis = np.arange(32) - 15.5
        bias = _upsample(_bias(plane(axis, axis, patient.fov_mm / 32), patient), size)

        mask = np.zeros((size, size), np.uint8)
        if lesion is not None:
            drawn = np.zeros((size, size), bool)
            # The tumour, evaluated at full resolution in the square around its projection.
            rel = lesion_scanner - origin
            c0, r0 = rel @ u / pixel + (size - 1) / 2, rel @ v / pixel + (size - 1) / 2
            half = lesion.reach_mm / pixel + 2
            r_lo, r_hi = int(np.clip(np.floor(r0 - half), 0, size)), int(np.clip(np.ceil(r0 + half) + 1, 0, size))
            c_lo, c_hi = int(np.clip(np.floor(c0 - half), 0, size)), int(np.clip(np.ceil(c0 + half) + 1, 0, size))
            if r_hi > r_lo and c_hi > c_lo:
                rows = np.arange(r_lo, r_hi) - (size - 1) / 2
                cols = np.arange(c_lo, c_hi) - (size - 1) / 2
                window = plane(rows, cols, pixel).reshape(3, -1).T
                near = np.sum((window - lesion.centre) ** 2, axis=1) <= lesion.reach_mm**2
                patch = image[r_lo:r_hi, c_lo:c_hi].reshape(-1)
                values, inside = patch[near], np.zeros(int(near.sum()), bool)
                window_maps = [_upsample(m, size)[r_lo:r_hi, c_lo:c_hi].reshape(-1)[near] for m in maps]
                _render_lesion(values, inside, window[near], window_maps, lesion, patient, pixel)
                patch[near] = values
                image[r_lo:r_hi, c_lo:c_hi] = patch.reshape(r_hi - r_lo, c_hi - c_lo)
                patch_mask = np.zeros(near.shape, bool)
                patch_mask[near] = inside
                drawn[r_lo:r_hi, c_lo:c_hi] = patch_mask.reshape(r_hi - r_lo, c_hi - c_lo)
            fallback = (int(np.clip(round(r0), 0, size - 1)), int(np.clip(round(c0), 0, size - 1)))
            mask = _clean_mask(drawn, fallback)

        # Bias field, Rician noise (magnitude of a complex signal with Gaussian noise), contrast level.
        image *= bias
        noise = rng.standard_normal((2, size, size), dtype=np.float32)
        noise *= np.float32(patient.noise)
        image += noise[0]
        np.square(image, out=image)
        np.square(noise[1], out=noise[1])
        image += noise[1]
        np.sqrt(image, out=image)
        image *= np.float32(patient.wm_level)
        image = np.clip(np.rint(image, out=image), 0, np.iinfo(np.int16).max).astype(np.int16)
        out.append(FigshareSlice(path=None, label=label, pid=pid, image=image, mask=mask,
                                 border=mask_border(mask) if lesion is not None else np.zeros((0, 2))))
    return out
