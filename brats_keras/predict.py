"""Label maps for a folder of new BraTS cases (``python -m brats_keras predict``).

For every case folder under ``--data-dir`` (BraTS 2020 or 2021 naming, label file optional) this
loads the modalities the model was trained on, applies the pre-processing recorded with the model
(:func:`brats_keras.export.find_inference_spec`), predicts the whole volume — every axial slice for
a 2D model, sliding windows over the whole grid for a 3D model — and writes ``<case>.nii.gz`` with
labels {0, 1, 2, 4} on the input's grid (shape, affine, header).

A case that fails validation (missing or unreadable modality, NaN voxels, mismatched shapes) is
reported and skipped; the others complete. ``predictions.json`` in the output folder records the
model, the settings and every case's outcome after each case (atomically), so an interrupted run
resumes where it stopped; a folder holding another model's or other settings' predictions is refused
unless ``overwrite`` is set. The next case is decoded in a background thread while the model runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path


from brats_keras.data.brats import CaseFiles, find_cases, load_case, write_label_nifti
from brats_keras.data.correction import correct_image
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import BratsKerasError, DataError
from brats_keras.export import Predictor, accelerator_present, find_inference_spec, load_predictor
from brats_keras.inference import (
    BLENDINGS, InferenceSpec, count_windows, predict_volume_2d, predict_volume_3d, slices_to_predict,
)
from brats_keras.io import atomic_write_json
from brats_keras.precision import Precision, check_precision, resolve_precision
from brats_keras.progress import progress_bar, progress_write

PREDICTIONS_FILE = "predictions.json"
DEFAULT_BATCH = {"slices2d": 16, "volume3d": 1}
"""Default batch size per model kind: 16 slices (2D) or one window (3D)."""


@dataclass(frozen=True)
class PredictSettings:
    """How to run a model over whole volumes (defaults: ``python -m brats_keras predict``)."""

    overlap: float = 0.5
    """3D: fraction by which neighbouring windows overlap (nnU-Net's step of half a window)."""
    blending: str = "gaussian"
    """3D: ``gaussian`` (weights favour window centres) or ``constant`` (plain mean)."""
    skip_empty: bool = True
    """2D: slices without a brain voxel are background without running the model."""
    batch_size: int | None = None
    """Slices (2D) or windows (3D) per forward pass; ``None``: :data:`DEFAULT_BATCH`."""
    jit_compile: bool | str = "auto"
    """XLA-compile the forward pass on TensorFlow (JAX always compiles): ``True``, ``False`` or
    ``"auto"`` — on for 2D models and on GPUs, off for 3D models on a CPU (:func:`use_xla`)."""
    precision: str = "auto"
    """The dtype policy of the forward pass (:data:`brats_keras.precision.PRECISIONS`); a ``.keras`` model
    is rebuilt in it, a SavedModel computes in the policy it was exported with (:meth:`resolve_precision`)."""

    def __post_init__(self):
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blending not in BLENDINGS:
            raise ValueError(f"blending must be one of {BLENDINGS}, got {self.blending!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile must be True, False or 'auto', got {self.jit_compile!r}")
        check_precision(self.precision)

    def resolve_precision(self, model_path: Path, spec: InferenceSpec) -> Precision:
        """The policy for this model: ``auto`` resolved for the hardware, or the one asked for; a SavedModel's
        traced graph keeps its training policy (``spec.precision``), so another explicit one is an error."""
        if not (model_path.is_dir() and (model_path / "saved_model.pb").is_file()):
            return resolve_precision(self.precision)
        if self.precision not in ("auto", spec.precision):
            raise BratsKerasError(f"{model_path}: a SavedModel computes in the precision it was exported with "
                                  f"({spec.precision}); give the run's model.keras for --precision {self.precision}")
        return Precision(spec.precision, "a SavedModel keeps the policy it was exported with", self.precision)

    def use_xla(self, spec: InferenceSpec) -> bool:
        """``jit_compile`` resolved for a model kind. Measured on this 2-core CPU (docs/inference.md):
        paper 1's cascade runs 150 slices in 17 s under XLA against 20.5 s without; paper 2's 3D
        U-Nets run a 128³ forward pass about 5× slower under XLA (docs/paper2.md). Keras compiles
        with XLA on GPUs anyway."""
        if self.jit_compile != "auto":
            return bool(self.jit_compile)
        return spec.kind == "slices2d" or accelerator_present()

    def result_key(self, spec: InferenceSpec) -> dict:
        """The settings that change the labels written (batch size and XLA do not; the precision, resolved,
        can in a few voxels)."""
        if spec.kind == "slices2d":
            return {"skip_empty": self.skip_empty, "precision": self.precision}
        return {"overlap": self.overlap, "blending": self.blending, "precision": self.precision}


def check_model_matches_spec(predictor: Predictor, spec: InferenceSpec) -> tuple[int, ...] | None:
    """Raise when the model's input cannot take what ``spec`` prepares; return the 3D window size."""
    shape = predictor.input_shape
    channels = len(spec.modalities)
    if spec.kind == "slices2d":
        expected = (spec.slices.size, spec.slices.size, channels)
        if len(shape) != 3 or any(n is not None and n != e for n, e in zip(shape, expected)):
            raise BratsKerasError(f"{predictor.source}: model input {shape} does not match its pre-processing "
                                  f"({spec.slices.size}×{spec.slices.size} slices of {channels} modalities)")
        return None
    if len(shape) != 4 or shape[-1] != channels:
        raise BratsKerasError(f"{predictor.source}: model input {shape} is not a 3D volume of {channels} "
                              f"modalities {spec.modalities}")
    crop = tuple(hi - lo for lo, hi in spec.volume.crop)
    return tuple(n if n is not None else c for n, c in zip(shape[:3], crop))


def _load(files: CaseFiles, spec: InferenceSpec):
    """Decode a case as the model's spec needs it (bias-corrected first when the spec says so)."""
    started = time.perf_counter()
    if spec.correction is None:
        return load_case(files, spec.modalities, with_label=False), time.perf_counter() - started
    corrected_modalities = spec.correction.modalities
    case = load_case(files, corrected_modalities, with_label=False)
    try:
        image = correct_image(case.image, case.spacing, spec.correction)
    except RuntimeError as exc:  # SimpleITK refusing degenerate data
        raise DataError(f"bias-field correction failed ({str(exc).strip().splitlines()[-1][:300]})",
                        path=files.folder) from None
    image = image[..., [corrected_modalities.index(m) for m in spec.modalities]]
    return dataclasses.replace(case, image=image, modalities=tuple(spec.modalities)), time.perf_counter() - started


def _description(spec: InferenceSpec, synthetic_data: bool) -> str:
    text = f"brats_keras {spec.model or spec.kind} prediction"
    if synthetic_data or spec.synthetic:
        text += " (SYNTHETIC)"
    return text


def model_fingerprint(model_path: Path) -> str:
    """SHA-1 of the model's bytes (every file of a SavedModel folder): a re-trained model at the
    same path is a different model."""
    digest = hashlib.sha1()
    files = sorted(p for p in model_path.rglob("*") if p.is_file()) if model_path.is_dir() else [model_path]
    for path in files:
        digest.update(str(path.relative_to(model_path) if model_path.is_dir() else path.name).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _manifest(model_path: Path, spec: InferenceSpec, spec_source: str, settings: PredictSettings,
              data_dir: Path, synthetic_data: bool) -> dict:
    return {"model": str(model_path.resolve()), "model_sha1": model_fingerprint(model_path),
            "spec": spec.to_json(), "spec_source": spec_source,
            "settings": settings.result_key(spec), "data_dir": str(data_dir), "synthetic_data": synthetic_data,
            "model_trained_on_synthetic_data": spec.synthetic, "run_settings": asdict(settings), "cases": {}}


def _resume_state(out_dir: Path, manifest: dict, overwrite: bool) -> dict:
    """Case outcomes of an earlier run into ``out_dir`` with the same model and settings."""
    path = out_dir / PREDICTIONS_FILE
    if overwrite or not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BratsKerasError(f"{path}: unreadable ({exc}); remove it or pass --overwrite") from None
    same = all(earlier.get(key) == manifest[key] for key in ("model_sha1", "spec", "settings"))
    if not same:
        raise BratsKerasError(
            f"{out_dir} holds predictions of another model or other settings ({PREDICTIONS_FILE}: model "
            f"{earlier.get('model')} sha1 {str(earlier.get('model_sha1'))[:12]}, settings {earlier.get('settings')}); "
            "use another --out or --overwrite")
    return {case: outcome for case, outcome in earlier.get("cases", {}).items()
            if outcome.get("status") == "written" and (out_dir / Path(outcome.get("output", "")).name).is_file()}


def predict_folder(model_path: str | Path, data_dir: str | Path, out_dir: str | Path, *,
                   settings: PredictSettings = PredictSettings(), overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Predict every case of ``data_dir`` into ``out_dir``; returns the ``predictions.json`` record.

    ``record["cases"][case_id]["status"]`` is ``written``, ``done earlier`` (resumed) or ``failed``
    (with ``error``); ``record["failed"]`` counts the failures.
    """
    model_path, data_dir, out_dir = Path(model_path), Path(data_dir), Path(out_dir)
    spec, spec_source = find_inference_spec(model_path)
    precision = settings.resolve_precision(model_path, spec)
    settings = dataclasses.replace(settings, precision=precision.policy)
    cases, failed_discovery = find_cases(data_dir, modalities=spec.input_modalities)
    synthetic_data = is_synthetic_dataset(data_dir)
    record = _manifest(model_path, spec, spec_source, settings, data_dir, synthetic_data)
    done = _resume_state(out_dir, record, overwrite)
    batch_size = settings.batch_size or DEFAULT_BATCH[spec.kind]
    predictor = load_predictor(model_path, batch_size=batch_size, jit_compile=settings.use_xla(spec),
                               precision=precision.policy)
    roi = check_model_matches_spec(predictor, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / PREDICTIONS_FILE
    say = progress_write if progress else (lambda _message: None)
    say(f"model: {model_path} ({spec.kind}, {spec.experiment or 'experiment unknown'} / "
        f"{spec.model or 'model unknown'}; pre-processing from {spec_source})")
    say(f"{precision.line()}; the model was trained in {spec.precision}")
    if spec.synthetic or synthetic_data:
        say("*** SYNTHETIC: " + ("the model was trained on synthetic data; " if spec.synthetic else "")
            + ("the input cases are synthetic; " if synthetic_data else "") + "these labels are not clinical results ***")

    outcomes = record["cases"]
    for case_id, error in failed_discovery.items():
        outcomes[case_id] = {"status": "failed", "error": error}
        say(f"{case_id}: FAILED — {error}")
    todo = []
    for files in cases:
        if files.case_id in done:
            outcomes[files.case_id] = {**done[files.case_id], "status": "done earlier"}
        else:
            todo.append(files)
    if done:
        say(f"resuming: {len(done)} case(s) already written in {out_dir}, {len(todo)} to go")

    def finish(case_id: str, outcome: dict) -> None:
        outcomes[case_id] = outcome
        record["failed"] = sum(o["status"] == "failed" for o in outcomes.values())
        atomic_write_json(manifest_path, record)

    record["failed"] = sum(o["status"] == "failed" for o in outcomes.values())
    atomic_write_json(manifest_path, record)
    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(_load, todo[0], spec) if todo else None
        for index, files in enumerate(todo):
            loading, pending = pending, (loader.submit(_load, todo[index + 1], spec) if index + 1 < len(todo) else None)
            started = time.perf_counter()
            try:
                case, load_s = loading.result()
            except DataError as exc:
                finish(files.case_id, {"status": "failed", "error": str(exc)})
                say(f"{files.case_id}: FAILED — {exc}")
                continue
            if spec.kind == "slices2d":
                total, unit = len(slices_to_predict(case.image, spec.slices, "all", settings.skip_empty)), "slice"
            else:
                total, unit = count_windows(case.image.shape[:3], roi, settings.overlap), "window"
            with progress_bar(total=total, desc=f"[{index + 1}/{len(todo)}] {files.case_id}", unit=unit, leave=False,
                      disable=not progress) as bar:
                t0 = time.perf_counter()
                if spec.kind == "slices2d":
                    labels = predict_volume_2d(predictor, case, spec.slices, slices="all", batch_size=batch_size,
                                               skip_empty=settings.skip_empty, progress=bar.update)
                else:
                    labels = predict_volume_3d(predictor, case, spec.volume, roi, overlap=settings.overlap,
                                               blending=settings.blending, batch_size=batch_size,
                                               progress=bar.update)
                predict_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            output = write_label_nifti(out_dir / f"{files.case_id}.nii.gz", labels, case.affine, case.header,
                                       description=_description(spec, synthetic_data))
            write_s = time.perf_counter() - t0
            seconds = time.perf_counter() - started  # wall clock, including any wait for the decode
            finish(files.case_id, {"status": "written", "output": str(output), unit + "s": total,
                                   "seconds": round(seconds, 2), "load_s": round(load_s, 2),
                                   "predict_s": round(predict_s, 2), "write_s": round(write_s, 2)})
            say(f"{files.case_id}: {output} ({total} {unit}s, {seconds:.1f} s)")
    written = sum(o["status"] == "written" for o in outcomes.values())
    say(f"{written} written, {sum(o['status'] == 'done earlier' for o in outcomes.values())} done earlier, "
        f"{record['failed']} failed; record: {manifest_path}")
    return record
