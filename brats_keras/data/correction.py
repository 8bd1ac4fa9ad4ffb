"""Paper 3's offline pre-processing: N4 bias-field correction, light denoising, z-score — as NIfTI.

Paper 3 names "intensity normalization, noise reduction, and bias field correction" and nothing
more; REPLICATION.md fixes the choice: per modality, inside the brain mask,

1. **N4 bias-field correction** (SimpleITK's ``N4BiasFieldCorrectionImageFilter``, Tustison et al.
   2010) fitted on a copy shrunk by ``shrink_factor`` with ``iterations`` per fitting level, then the
   log field evaluated at full resolution and divided out (SimpleITK's documented recipe);
2. a **light edge-preserving denoiser**: ``denoise_iterations`` steps of curvature flow
   (``sitk.CurvatureFlow``, which smooths along iso-intensity contours and not across edges), or
   ``denoise="none"``;
3. **z-score** inside the brain mask (mean 0, standard deviation 1), background 0.

The brain mask is every voxel that is non-zero in any modality: BraTS volumes are skull-stripped with
a background of exactly 0. :func:`correct_dataset` writes the result in the BraTS layout (same case
folders and file names, float32, the source's affine and header; label files copied unchanged), so
every reader of this package, and any other BraTS tool, reads it as a data folder. A manifest records
the settings and each case's source files; re-running skips cases whose sources and settings are
unchanged, and a case that fails is reported while the others complete.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_keras.data.brats import CaseFiles, find_cases, load_case, write_nifti_like
from brats_keras.data.layout import MODALITIES
from brats_keras.errors import DataError
from brats_keras.io import atomic_path, atomic_write_json, read_json_or_none
from brats_keras.progress import progress_bar, progress_write

MANIFEST_NAME = "correction_manifest.json"
MANIFEST_FORMAT = 1
DENOISERS = ("curvature_flow", "none")
COPIED_FILES = ("name_mapping.csv", "survival_info.csv", "SYNTHETIC_DATA.json")
"""Files beside the case folders that travel with the corrected set (so provenance markers and the
grade table stay with it)."""


@dataclass(frozen=True)
class CorrectionSettings:
    """Settings of :func:`correct_case` (defaults: REPLICATION.md's choice for paper 3)."""

    modalities: tuple[str, ...] = MODALITIES
    """Modalities corrected and written (paper 3 uses all four)."""
    shrink_factor: int = 4
    """N4 is fitted on the volume shrunk by this factor per axis (SimpleITK's example uses 4)."""
    iterations: tuple[int, ...] = (50, 50, 30, 20)
    """N4 iterations per fitting level (4 levels, coarse to fine)."""
    convergence_threshold: float = 1e-6
    """N4 stops a level when the field changes less than this."""
    denoise: str = "curvature_flow"
    """``curvature_flow`` (edge-preserving) or ``none``."""
    denoise_iterations: int = 3
    """Curvature-flow steps: a light smoothing."""
    denoise_time_step: float = 0.0625
    """Curvature-flow time step (≤ 1/2^(dims+1) = 0.0625 in 3D for a stable explicit scheme)."""

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "iterations", tuple(int(n) for n in self.iterations))
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"modalities: {list(self.modalities)} invalid; choose from {list(MODALITIES)}")
        if self.shrink_factor < 1:
            raise ValueError(f"shrink_factor must be >= 1, got {self.shrink_factor}")
        if not self.iterations or min(self.iterations) < 1:
            raise ValueError(f"iterations: need at least one level of >= 1 iteration, got {self.iterations}")
        if self.denoise not in DENOISERS:
            raise ValueError(f"denoise: {self.denoise!r} not in {DENOISERS}")
        if self.denoise_iterations < 0 or not 0.0 < self.denoise_time_step <= 0.0625:
            raise ValueError("denoise_iterations must be >= 0 and denoise_time_step in (0, 0.0625], got "
                             f"{self.denoise_iterations}, {self.denoise_time_step}")

    def to_json(self) -> dict:
        return {**asdict(self), "modalities": list(self.modalities), "iterations": list(self.iterations)}


# --------------------------------------------------------------------------------------------
# One volume
# --------------------------------------------------------------------------------------------


def _to_sitk(array: np.ndarray, spacing, pixel=None):
    import SimpleITK as sitk

    # SimpleITK indexes (x, y, z) from arrays laid out (z, y, x)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image if pixel is None else sitk.Cast(image, pixel)


def _from_sitk(image) -> np.ndarray:
    import SimpleITK as sitk

    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel of ``(X, Y, Z, C)`` (skull-stripped BraTS: background is 0)."""
    return np.any(image != 0, axis=-1)


def n4_correct(volume: np.ndarray, mask: np.ndarray, spacing=(1.0, 1.0, 1.0), *,
               settings: CorrectionSettings = CorrectionSettings()) -> tuple[np.ndarray, np.ndarray]:
    """N4-corrected ``volume`` and the multiplicative bias field (both ``(X, Y, Z)`` float32) fitted
    inside ``mask``; outside the mask the corrected volume is 0."""
    import SimpleITK as sitk

    mask = np.asarray(mask, bool)
    if volume.shape != mask.shape:
        raise ValueError(f"volume {volume.shape} and mask {mask.shape} differ")
    if not mask.any():
        return np.zeros_like(volume, np.float32), np.ones_like(volume, np.float32)
    positive = np.where(mask, np.maximum(volume, 0), 0).astype(np.float32)
    image = _to_sitk(positive, spacing, sitk.sitkFloat32)
    mask_image = _to_sitk(mask.astype(np.uint8), spacing, sitk.sitkUInt8)
    shrink = [max(1, min(settings.shrink_factor, n // 4)) for n in volume.shape]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(settings.iterations))
    corrector.SetConvergenceThreshold(settings.convergence_threshold)
    corrector.Execute(sitk.Shrink(image, shrink), sitk.Shrink(mask_image, shrink))
    field = _from_sitk(sitk.Exp(corrector.GetLogBiasFieldAsImage(image))).astype(np.float32)
    corrected = np.where(mask, positive / field, 0).astype(np.float32)
    return corrected, field


def denoise(volume: np.ndarray, spacing=(1.0, 1.0, 1.0), *,
            settings: CorrectionSettings = CorrectionSettings()) -> np.ndarray:
    """The light edge-preserving denoiser of ``settings`` (curvature flow), float32."""
    import SimpleITK as sitk

    if settings.denoise == "none" or settings.denoise_iterations == 0:
        return volume.astype(np.float32, copy=False)
    image = _to_sitk(volume.astype(np.float32, copy=False), spacing)
    smoothed = sitk.CurvatureFlow(image, timeStep=settings.denoise_time_step,
                                  numberOfIterations=settings.denoise_iterations)
    return _from_sitk(smoothed).astype(np.float32)


def zscore_in_mask(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(v - mean) / std`` over ``mask``, 0 outside it (float32)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(volume.shape, np.float32)
    if mask.any():
        values = volume[mask].astype(np.float64)
        out[mask] = ((values - values.mean()) / max(float(values.std()), 1e-6)).astype(np.float32)
    return out


CROP_MARGIN = 2
"""Voxels kept around the brain's bounding box when :func:`correct_volume` crops (more than the
denoiser's reach of one voxel per step, so the brain's values do not depend on the crop)."""


def brain_box(mask: np.ndarray, margin: int = CROP_MARGIN) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array); the whole array
    when the mask is empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, n in enumerate(mask.shape):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(present[0]) - margin), min(n, int(present[-1]) + 1 + margin)))
    return tuple(box)


def correct_volume(volume: np.ndarray, mask: np.ndarray, spacing=(1.0, 1.0, 1.0), *,
                   settings: CorrectionSettings = CorrectionSettings()) -> np.ndarray:
    """N4, then the denoiser, then z-score inside ``mask`` (background 0).

    The steps run on the brain's bounding box (:func:`brain_box`): a BraTS brain fills about half of
    the 240 × 240 × 155 grid, so this halves the work; outside the box the result is 0 as before.
    """
    box = brain_box(mask)
    corrected, _ = n4_correct(volume[box], mask[box], spacing, settings=settings)
    smoothed = denoise(corrected, spacing, settings=settings)
    out = np.zeros(volume.shape, np.float32)
    out[box] = zscore_in_mask(smoothed, mask[box])
    return out


def correct_image(image: np.ndarray, spacing=(1.0, 1.0, 1.0),
                  settings: CorrectionSettings = CorrectionSettings()) -> np.ndarray:
    """Every channel of an ``(X, Y, Z, C)`` case image (``settings.modalities``, in that order)
    through :func:`correct_volume`, with one brain mask for all channels; float32, same shape.

    What :func:`correct_case` writes, and what ``predict`` applies on the fly to a model trained on
    corrected data (its ``inference.json`` carries the settings)."""
    if image.ndim != 4 or image.shape[-1] != len(settings.modalities):
        raise ValueError(f"image {image.shape}: expected (X, Y, Z, {len(settings.modalities)}) holding "
                         f"{list(settings.modalities)}")
    mask = brain_mask(image)
    return np.stack([correct_volume(image[..., c], mask, spacing, settings=settings)
                     for c in range(image.shape[-1])], axis=-1)


# --------------------------------------------------------------------------------------------
# A data folder
# --------------------------------------------------------------------------------------------


def correct_case(files: CaseFiles, out_root: str | Path, settings: CorrectionSettings = CorrectionSettings()) -> dict:
    """Correct one case into ``out_root/<case>/`` (same file names); returns its manifest entry."""
    case = load_case(files, settings.modalities, with_label=False)
    corrected = correct_image(case.image, case.spacing, settings)
    folder = Path(out_root) / files.case_id
    outputs = []
    for c, modality in enumerate(settings.modalities):
        source = files.images[modality]
        target = folder / source.name
        source_img = nib.load(str(source))  # header only: each modality keeps its own
        write_nifti_like(target, corrected[..., c], source_img.affine, source_img.header)
        outputs.append(target.name)
    if files.label is not None:
        target = folder / files.label.name
        with atomic_path(target) as tmp:
            shutil.copyfile(files.label, tmp)
        outputs.append(target.name)
    return {"status": "corrected", "sources": files.fingerprint(), "outputs": outputs,
            "brain_voxels": int(brain_mask(case.image).sum())}


def _correct_one(args) -> tuple[str, dict]:
    files, out_root, settings, threads = args
    if threads:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # one per worker process
    try:
        return files.case_id, correct_case(files, out_root, settings)
    except DataError as exc:
        return files.case_id, {"status": "failed", "error": str(exc)}
    except RuntimeError as exc:  # SimpleITK refusing degenerate data
        return files.case_id, {"status": "failed", "error": f"case {files.case_id}: {files.folder}: "
                               f"correction failed ({str(exc).strip().splitlines()[-1][:300]})"}


def correct_dataset(data_dir: str | Path, out_dir: str | Path, settings: CorrectionSettings = CorrectionSettings(),
                    *, workers: int = 1, progress: bool = True) -> dict:
    """Correct every case of ``data_dir`` into ``out_dir`` (BraTS layout) with ``MANIFEST_NAME``.

    Cases whose source files (size, mtime) and settings match the manifest and whose outputs exist
    are skipped (``status: up to date``). A case that cannot be read is recorded as ``failed`` with
    the error, and the rest complete. ``workers`` processes correct cases in parallel.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if data_dir.resolve() == out_dir.resolve():
        raise DataError("the output folder must differ from the data folder (sources are never overwritten)",
                        path=out_dir)
    cases, failed = find_cases(data_dir, modalities=settings.modalities)
    manifest_path = out_dir / MANIFEST_NAME
    previous = read_json_or_none(manifest_path) or {}
    same_settings = previous.get("format") == MANIFEST_FORMAT and previous.get("settings") == settings.to_json()
    earlier = previous.get("cases", {}) if same_settings else {}
    manifest = {"format": MANIFEST_FORMAT, "data_dir": str(data_dir.resolve()), "settings": settings.to_json(),
                "cases": {case_id: {"status": "failed", "error": error} for case_id, error in failed.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        if (data_dir / name).is_file():
            shutil.copyfile(data_dir / name, out_dir / name)
    todo = []
    for files in cases:
        entry = earlier.get(files.case_id, {})
        fresh = (entry.get("status") in ("corrected", "up to date") and entry.get("sources") == files.fingerprint()
                 and all((out_dir / files.case_id / name).is_file() for name in entry.get("outputs", [])))
        if fresh:
            manifest["cases"][files.case_id] = {**entry, "status": "up to date"}
        else:
            todo.append(files)
    atomic_write_json(manifest_path, manifest)
    parallel = workers > 1 and len(todo) > 1
    jobs = [(files, out_dir, settings, 1 if parallel else 0) for files in todo]
    bar = progress_bar(total=len(jobs), desc="bias correction", unit="case", disable=not progress)
    if parallel:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_correct_one, jobs)
            for case_id, entry in results:
                _record(manifest, manifest_path, case_id, entry, bar)
    else:
        for job in jobs:
            _record(manifest, manifest_path, *_correct_one(job), bar)
    bar.close()
    manifest["cases"] = dict(sorted(manifest["cases"].items()))
    atomic_write_json(manifest_path, manifest)
    return manifest


def _record(manifest: dict, path: Path, case_id: str, entry: dict, bar) -> None:
    manifest["cases"][case_id] = entry
    atomic_write_json(path, manifest)
    if entry["status"] == "failed":
        progress_write(f"{case_id}: FAILED — {entry['error']}")
    bar.update(1)
