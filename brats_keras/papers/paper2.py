"""Paper 2's data step, scoring and tables: the 3D pre-processing of each cohort, Table III's
accuracy / IoU and Table IV's Dice per region on whole volumes, HD95, sensitivity and specificity.

``experiments/paper2_attention_unet3d.py`` runs the experiment; :func:`tables` turns its
``results.json`` into ``table.md``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from brats_keras.configs.paper2 import TABLE_III, TABLE_IV
from brats_keras.data.brats import discover_cases, load_label
from brats_keras.data.volumes3d import Preprocess3DSettings, VolumeIndex, preprocess_dataset_3d
from brats_keras.errors import DataError
from brats_keras.evaluation import aggregate, evaluate_case
from brats_keras.inference import uncrop_labels
from brats_keras.metrics import IoUScore
from brats_keras.reporting import Column, comparison_table, plot_volume_overlay

MODEL_TITLES = {
    "unet3d_simple": "Simple U-Net",
    "unet3d_modified": "Modified U-Net",
    "unet3d_spatial_attention": "Spatial-attention U-Net",
}
REGIONS = ("TC", "WT", "ET")  # Table IV's column order
COHORTS = ("train-2020", "val-2020", "test-2021")


def preprocessed(data_dir: Path, settings: Preprocess3DSettings, cache_root: Path, cohort: str,
                 files: dict) -> tuple[Path, dict]:
    """Pre-process ``data_dir`` into a cache folder keyed by the folder and the settings (resumable);
    the cases found are added to ``files`` (case id → CaseFiles), so the folder is walked once."""
    key = json.dumps({"data_dir": str(Path(data_dir).resolve()), "settings": settings.to_json()}, sort_keys=True)
    out = cache_root / "volumes3d" / f"{cohort}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    cases = discover_cases(data_dir, modalities=settings.modalities)
    files.update({c.case_id: c for c in cases})
    manifest = preprocess_dataset_3d(data_dir, out, settings, cases=cases)
    print(f"{cohort}: kept {len(manifest['kept'])} of {len(manifest['kept']) + len(manifest['skipped'])} cases "
          f"({out})", flush=True)
    if not manifest["kept"]:
        raise DataError("no case passed the pre-processing filter (see manifest.json)", path=out)
    return out, manifest


def score_cohort(model, index: VolumeIndex, files: dict, crop, *, max_cases: int = 0, overlay=None) -> dict:
    """Predict every crop of ``index``: accuracy and IoU(0.5) over the crops (Table III), and Dice,
    HD95, sensitivity, specificity per region with the prediction placed back into the case's
    original grid (background outside the crop; Table IV and beyond).

    ``overlay``: ``(path, title, synthetic)`` — a three-plane overlay of the case with most tumour.
    """
    iou = IoUScore(threshold=0.5, num_classes=index.num_classes)
    accuracy = keras.metrics.CategoricalAccuracy()
    ids = index.case_ids[: max_cases or None]
    per_case, best = {}, (-1, None)
    for k, case_id in enumerate(ids):
        x, y = index.gather(np.array([k]))
        probabilities = np.asarray(model.predict_on_batch(x))
        truth = keras.utils.to_categorical(y, index.num_classes)
        iou.update_state(truth, probabilities)
        accuracy.update_state(truth, probabilities)
        classes = np.argmax(probabilities[0], axis=-1).astype(np.uint8)
        label, spacing, _ = load_label(files[case_id])
        per_case[case_id] = evaluate_case(uncrop_labels(classes, crop, label.shape), label, spacing, case=case_id)
        tumour = int(np.count_nonzero(y[0]))
        if overlay is not None and tumour > best[0]:
            best = (tumour, (x[0], y[0], classes, case_id))
    if overlay is not None and best[1] is not None:
        path, title, synthetic = overlay
        image, truth_classes, pred_classes, case_id = best[1]
        plot_volume_overlay(image, truth_classes, pred_classes, path, num_classes=index.num_classes,
                            title=f"{title} — {case_id} (FLAIR, crop)", synthetic=synthetic)
    return {"cases": len(ids), "accuracy": float(accuracy.result()), "iou": float(iou.result()),
            "per_case": per_case, "summary": aggregate(per_case) if per_case else {}}


def tables(results: dict) -> str:
    """table.md: Tables III and IV beside the paper, and the whole-volume region metrics."""
    models = results["models"]
    sections = []
    rows_iii = []
    for name, entry in models.items():
        last = entry["last_epoch"]
        rows_iii.append({"model": MODEL_TITLES[name], "accuracy": last.get("accuracy"),
                         "val_accuracy": last.get("val_accuracy"), "iou": last.get("iou"),
                         "val_iou": last.get("val_iou"),
                         "test_iou": entry["cohorts"].get("test-2021", {}).get("iou")})
    sections.append(comparison_table(
        rows_iii, [{"model": MODEL_TITLES[k], **v} for k, v in TABLE_III.items()],
        [Column("accuracy", "acc train"), Column("val_accuracy", "acc val"), Column("iou", "IoU train"),
         Column("val_iou", "IoU val"), Column("test_iou", "IoU test-2021")],
        title="Table III — accuracy and IoU (threshold 0.5)",
        note="Train / val: the last epoch's Keras logs (train values with dropout active, as Keras reports "
        "them). Test: one pass over the external cohort's crops. IoU is the mean over the 4 classes of "
        "the epoch's summed counts.",
    ))

    def cohort_rows(row_of) -> list[dict]:
        rows = []
        for name, entry in models.items():
            for cohort in COHORTS:
                summary = entry["cohorts"].get(cohort, {}).get("summary")
                if summary:
                    rows.append({"model": MODEL_TITLES[name], "set": cohort, **row_of(summary)})
        return rows

    rows_iv = cohort_rows(lambda s: {"cases": s["WT"]["dice"]["count"], **{r: s[r]["dice"]["mean"] for r in REGIONS}})
    paper_iv = [{"model": MODEL_TITLES[name], "set": cohort, **values} for (name, cohort), values in TABLE_IV.items()]
    sections.append(comparison_table(
        rows_iv, paper_iv,
        [Column("cases", "patients", 1, 0, in_paper=False)] + [Column(r, f"Dice {r}") for r in REGIONS],
        key=("model", "set"), title="Table IV — Dice per region (mean over patients, whole volumes)",
        note="Predictions on the crop are placed back into the original grid (background outside) and "
        "scored against the full label with the BraTS regions ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. "
        "The paper's headers read 'Tumor (TC) / Core (WT) / Whole Tumor (ET)'; its values are listed "
        "under the abbreviation it prints. val-2020 has no paper value.",
    ))
    columns = [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in REGIONS]
    columns += [Column(f"sens_{r}", f"sens {r}", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"spec_{r}", f"spec {r}", 1, 4, in_paper=False) for r in REGIONS]
    sections.append(comparison_table(
        cohort_rows(lambda s: {f"{m}_{r}": s[r][metric]["mean"] for r in REGIONS
                               for m, metric in (("hd95", "hd95"), ("sens", "sensitivity"), ("spec", "specificity"))}),
        [], columns, key=("model", "set"),
        title="Whole-volume HD95, sensitivity and specificity (mean over patients)",
        note="The paper names these metrics but reports none. HD95 of a region empty in exactly one of "
        "prediction and reference is 373.13 mm (REPLICATION.md).",
    ))
    return "\n\n".join(sections)
