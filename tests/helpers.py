"""Helpers for tests: write tiny volumes in the exact BraTS file layout."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_keras.data.layout import BRATS_AFFINE, MODALITIES

TINY_SHAPE = (48, 48, 40)
EXPORT_TOLERANCE = {"float32": 1e-4, "mixed_float16": 5e-3, "mixed_bfloat16": 2e-2}
"""Largest |model − reloaded SavedModel| of a probability, by the policy the model computes in: the traced
graph orders and fuses the operations differently (oneDNN), and bfloat16 keeps 8 significant bits
(relative step 2^-8 ≈ 0.004; 0.004–0.010 measured on paper 1's tiny models). A broken export (other
weights, missing layer) differs by tenths."""


def export_tolerance(entry: dict) -> float:
    """:data:`EXPORT_TOLERANCE` for a model's ``results.json`` entry."""
    return EXPORT_TOLERANCE[entry["precision"]]


def save_nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, BRATS_AFFINE)
    img.set_qform(BRATS_AFFINE, code=1)
    img.set_sform(BRATS_AFFINE, code=1)
    nib.save(img, str(path))
    return path


def blob_case(shape=TINY_SHAPE, seed=0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Hand-made arrays: a brain-like box with a 3-region tumour (labels 1, 2, 4)."""
    rng = np.random.default_rng(seed)
    images = {m: (rng.random(shape) * 500 + 100 * (i + 1)).astype(np.int16) for i, m in enumerate(MODALITIES)}
    label = np.zeros(shape, np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    label[cx - 8 : cx + 8, cy - 8 : cy + 8, cz - 6 : cz + 6] = 2
    label[cx - 5 : cx + 5, cy - 5 : cy + 5, cz - 4 : cz + 4] = 4
    label[cx - 2 : cx + 2, cy - 2 : cy + 2, cz - 2 : cz + 2] = 1
    return images, label


def write_case(root: Path, case_id: str, images: dict, label: np.ndarray | None, *, suffix=".nii.gz",
               label_name: str | None = None) -> Path:
    folder = Path(root) / case_id
    for modality, array in images.items():
        save_nifti(folder / f"{case_id}_{modality}{suffix}", array)
    if label is not None:
        save_nifti(folder / (label_name or f"{case_id}_seg{suffix}"), label)
    return folder


REPO = Path(__file__).resolve().parents[1]


def run_experiment(script: Path, *args, cache, timeout=900) -> subprocess.CompletedProcess:
    """Run an experiment script in a subprocess with its own cache folder."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BRATS_KERAS_CACHE": str(cache)}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


def history_epochs(path: Path) -> list[int]:
    """The epoch column of a run's ``history.csv``."""
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def predict_and_evaluate(model: Path, data_dir: Path, pred_dir: Path, scores: Path) -> list[dict]:
    """``python -m brats_keras predict`` then ``evaluate`` (against the same folder's labels) in
    subprocesses, as a user runs them; the per-case rows of the scores CSV."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for args in (["predict", "--model", str(model), "--data-dir", str(data_dir), "--out", str(pred_dir)],
                 ["evaluate", "--pred-dir", str(pred_dir), "--label-dir", str(data_dir), "--out", str(scores)]):
        proc = subprocess.run([sys.executable, "-m", "brats_keras", *args], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with open(scores, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["status"]]
