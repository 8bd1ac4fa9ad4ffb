"""Score a folder of predicted label maps against reference labels (``python -m brats_keras evaluate``).

Predictions are ``<case>.nii.gz`` (or ``.nii``) files, as ``predict`` writes them and as BraTS
submissions name them. References are a BraTS 2020 / 2021 training folder (case folders with
``<case>_seg.nii.gz``, BraTS 2020's misnamed case 355 included) or a flat folder of ``<case>.nii.gz``
/ ``<case>_seg.nii.gz`` label files.

Every reference case gets one row per region (ET, TC, WT) with Dice, HD95 (mm, the label's voxel
size), sensitivity and specificity (:func:`brats_keras.evaluation.evaluate_case`, with its empty-region
conventions). A missing prediction counts as an empty one — Dice 0 and HD95 373.13 mm for every
region the reference has (REPLICATION.md), as the BraTS leaderboards penalise it — and its rows say
``missing``. A prediction that cannot be used (unreadable, wrong shape, labels outside {0, 1, 2, 4})
is scored the same way and marked ``invalid``. The summary rows follow the BraTS leaderboard
files: ``Mean``, ``StdDev`` (sample), ``Median``, ``25quantile``, ``75quantile`` over all cases.
"""

from __future__ import annotations

import csv
import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from brats_keras.data.brats import case_folders, detect_layout, find_cases, read_label_with_grid
from brats_keras.data.layout import LABEL_KEY, NIFTI_SUFFIXES
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import DataError
from brats_keras.evaluation import METRICS, REGIONS, aggregate, evaluate_case
from brats_keras.io import atomic_write_text
from brats_keras.progress import progress_bar

SUMMARY_ROWS: dict[str, str] = {"Mean": "mean", "StdDev": "std", "Median": "median",
                                "25quantile": "p25", "75quantile": "p75"}
"""Summary row name (as in the BraTS leaderboard CSVs) → :func:`~brats_keras.evaluation.aggregate` statistic."""
CSV_COLUMNS: tuple[str, ...] = ("case", "region", *METRICS, "status", "synthetic")
"""``synthetic`` is ``yes`` when the reference labels are the project's synthetic stand-in data."""


def _nifti_stem(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path, strip: str | None = None) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files directly in ``folder`` (hidden and temporary files
    skipped); ``strip`` is a name ending removed to get the case id (e.g. ``_seg``)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _nifti_stem(path.name)
        if stem is None or path.name.startswith(".") or not path.is_file():
            continue
        if strip and stem.endswith(strip):
            stem = stem[: -len(strip)]
        if stem in found:
            raise DataError(f"two files for case {stem}: {found[stem].name} and {path.name}", path=folder)
        found[stem] = path
    return found


def reference_labels(label_dir: str | Path) -> tuple[dict[str, Path], dict[str, str]]:
    """``({case_id: label file}, {case_id: problem})`` of a BraTS training folder or a flat folder."""
    root = Path(label_dir)
    if not root.is_dir():
        raise DataError("label directory does not exist or is not a directory", path=root)
    labels, problems = {}, {}
    if detect_layout(root.name) is not None or case_folders(root):
        cases, problems = find_cases(root, modalities=(), require_label=True)
        labels = {files.case_id: files.label for files in cases}
    else:
        labels = _nifti_files(root, strip=f"_{LABEL_KEY}")
    if not labels and not problems:
        raise DataError("no label files found (BraTS case folders with <case>_seg.nii.gz, or <case>.nii.gz files)",
                        path=root)
    return labels, problems


def prediction_files(pred_dir: str | Path) -> dict[str, Path]:
    """``{case_id: file}`` of the ``<case>.nii.gz`` / ``.nii`` predictions in ``pred_dir``."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise DataError("prediction directory does not exist or is not a directory", path=root)
    return _nifti_files(root)


def score_case(case_id: str, label_path: Path, pred_path: Path | None) -> dict:
    """``{"status", "scores", "note"}`` of one case; an unusable label raises :class:`DataError`."""
    label, spacing, label_affine = read_label_with_grid(label_path, case_id=case_id)
    status, note, pred = "ok", "", None
    if pred_path is None:
        status, note = "missing", "no prediction file: scored as an empty prediction"
    else:
        try:
            pred, _, pred_affine = read_label_with_grid(pred_path, case_id=case_id)
            if pred.shape != label.shape:
                raise DataError(f"prediction shape {pred.shape} differs from the label's {label.shape}",
                                case=case_id, path=pred_path)
            if not np.allclose(pred_affine, label_affine, atol=1e-3):
                note = "prediction affine differs from the label's (scored voxel by voxel)"
        except DataError as exc:
            status, note, pred = "invalid", f"{exc}; scored as an empty prediction", None
    if pred is None:
        pred = np.zeros_like(label)
    return {"status": status, "scores": evaluate_case(pred, label, spacing, case=case_id), "note": note}


def score_folder(pred_dir: str | Path, label_dir: str | Path, *, workers: int = 2, progress: bool = True) -> dict:
    """Score every reference case; returns ``{"cases": {id: score_case(...)}, "failed": {id: problem},
    "extra": [prediction ids without a reference], "summary": aggregate(...)}``."""
    labels, failed = reference_labels(label_dir)
    predictions = prediction_files(pred_dir)
    extra = sorted(set(predictions) - set(labels) - set(failed))
    ids = sorted(labels)

    def one(case_id: str):
        try:
            return case_id, score_case(case_id, labels[case_id], predictions.get(case_id)), None
        except DataError as exc:
            return case_id, None, str(exc)

    cases = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for case_id, result, problem in progress_bar(pool.map(one, ids), total=len(ids), desc="scoring", unit="case",
                                             disable=not progress):
            if problem is not None:
                failed[case_id] = problem
            else:
                cases[case_id] = result
    summary = aggregate({c: r["scores"] for c, r in cases.items()}) if cases else {}
    synthetic = is_synthetic_dataset(label_dir)
    return {"cases": cases, "failed": failed, "extra": extra, "summary": summary, "synthetic": synthetic}


def _number(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def scores_csv(report: dict) -> str:
    """The CSV text: one row per case and region, then the summary rows (``case`` = statistic)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    synthetic = "yes" if report.get("synthetic") else "no"
    writer.writerow(CSV_COLUMNS)
    for case_id, result in report["cases"].items():
        for region in REGIONS:
            writer.writerow([case_id, region, *(_number(result["scores"][region][m]) for m in METRICS),
                             result["status"], synthetic])
    for row_name, stat in SUMMARY_ROWS.items():
        for region in REGIONS:
            if region in report["summary"]:
                writer.writerow([row_name, region, *(_number(report["summary"][region][m][stat]) for m in METRICS),
                                 "", synthetic])
    return buffer.getvalue()


def write_scores_csv(path: str | Path, report: dict) -> Path:
    atomic_write_text(path, scores_csv(report))
    return Path(path)


def summary_text(report: dict) -> str:
    """A plain-text table of the mean ± std (median) per region and metric."""
    if not report["summary"]:
        return "no case could be scored"
    lines = [f"{'region':<7}" + "".join(f"{m:>26}" for m in METRICS)]
    for region in REGIONS:
        cells = []
        for m in METRICS:
            s, digits = report["summary"][region][m], 2 if m == "hd95" else 4
            cells.append(f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({s['median']:.{digits}f})".rjust(26))
        lines.append(f"{region:<7}" + "".join(cells))
    if report.get("synthetic"):
        lines.insert(0, "*** SYNTHETIC reference labels: these scores are not a result on patient data ***")
    statuses = [r["status"] for r in report["cases"].values()]
    lines.append(f"cases: {len(statuses)} scored ({statuses.count('missing')} missing, "
                 f"{statuses.count('invalid')} invalid predictions), {len(report['failed'])} unusable labels; "
                 "mean ± std (median)")
    return "\n".join(lines)
