"""Paper 3's data step and tables: the N4 + denoise + z-score pre-processing of the cohort, the
ablation table and each run's dwell-callback table.

``experiments/paper3_unet_dwell.py`` runs the experiment; :func:`tables` turns its ``results.json``
into ``table.md``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from brats_keras.configs.paper3 import VARIANT_TITLES
from brats_keras.data.brats import discover_cases
from brats_keras.data.correction import MANIFEST_NAME, CorrectionSettings, correct_dataset
from brats_keras.io import default_cache_dir
from brats_keras.labels import REGION_KEYS
from brats_keras.errors import DataError
from brats_keras.reporting import Column, comparison_table

FIG_5_1 = (("loss", "training loss"), ("val_loss", "validation loss"),
           ("accuracy", "training accuracy"), ("val_soft_dice", "validation Dice coefficient"))
"""Paper 3's Fig. 5.1: training / validation loss on the left, training accuracy / validation Dice on the right."""
REGIONS = REGION_KEYS  # ET, TC, WT


def default_corrected_dir(data_dir: Path, settings: CorrectionSettings) -> Path:
    """``<cache>/corrected/<data folder>_<hash of its path and the settings>``."""
    key = hashlib.sha1(json.dumps({"data_dir": str(data_dir.resolve()), "settings": settings.to_json()},
                                  sort_keys=True).encode()).hexdigest()[:12]
    return default_cache_dir() / "corrected" / f"{data_dir.name}_{key}"


def preprocess(data_dir: Path, corrected_dir: Path, settings: CorrectionSettings, workers: int) -> tuple[dict, dict]:
    """Correct (or reuse) every case; returns the corrected cases by id and the failed ones' errors."""
    print(f"pre-processing (N4 + {settings.denoise} + z-score) into {corrected_dir}", flush=True)
    started = time.perf_counter()
    manifest = correct_dataset(data_dir, corrected_dir, settings, workers=workers)
    failed = {c: e["error"] for c, e in manifest["cases"].items() if e["status"] == "failed"}
    statuses = [e["status"] for e in manifest["cases"].values()]
    print(f"pre-processing: {statuses.count('corrected')} corrected, {statuses.count('up to date')} up to date, "
          f"{len(failed)} failed in {time.perf_counter() - started:.0f} s", flush=True)
    ok = [c for c, e in manifest["cases"].items() if e["status"] != "failed"]
    if not ok:
        raise DataError("no case could be pre-processed; see the errors above", path=corrected_dir / MANIFEST_NAME)
    corrected = {c.case_id: c for c in discover_cases(corrected_dir, modalities=settings.modalities) if c.case_id in ok}
    return corrected, failed


def summary_row(name: str, entry: dict) -> dict:
    summary = entry["whole_volume"]["summary"]
    row = {"run": name, "cases": summary.get("WT", {}).get("dice", {}).get("count", 0),
           "epochs": entry["epochs_run"], "best_epoch": entry["best_epoch"], "restores": len(entry["restored_epochs"]),
           "test_soft_dice": entry["final_test"].get("soft_dice"), "test_accuracy": entry["final_test"].get("accuracy")}
    for region in REGIONS:
        row[f"dice_{region}"] = summary[region]["dice"]["mean"]
        row[f"dice_sd_{region}"] = summary[region]["dice"]["std"]
        row[f"hd95_{region}"] = summary[region]["hd95"]["mean"]
    return row


def tables(results: dict) -> str:
    """table.md: the ablation and each run's dwell table; the paper reports no numbers to set beside them."""
    runs = results["models"]
    sections = []
    sections.append("The paper reports no table (only the curves of Fig. 5.1, see `plots/fig5_1_curves.png`), "
                    "so every number here is measured by this run and there is no *paper* column.")
    columns = [Column("cases", "test patients", 1, 0, in_paper=False)]
    columns += [Column(f"dice_{r}", f"Dice {r}", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"dice_sd_{r}", f"Dice {r} SD", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in REGIONS]
    columns += [Column("test_soft_dice", "test Dice coef. (slices)", 1, 4, in_paper=False),
                Column("test_accuracy", "test accuracy (slices, %)", 100, 2, in_paper=False),
                Column("epochs", "epochs run", 1, 0, in_paper=False),
                Column("best_epoch", "best epoch", 1, 0, in_paper=False),
                Column("restores", "weight restores", 1, 0, in_paper=False)]
    sections.append(comparison_table(
        [summary_row(VARIANT_TITLES[name], entry) for name, entry in runs.items()], [], columns, key="run",
        title="Ablation — whole-volume test metrics with and without pre-processing (same test patients)",
        note="Dice / HD95: mean (and SD of Dice) over the test patients' whole volumes, BraTS regions. "
        "Slice metrics: the test slices of the training window.",
    ))
    for name, entry in runs.items():
        rows = [{**row, "restored": "yes" if row["restored"] else "no",
                 "val_soft_dice": entry["val_soft_dice"][i] if i < len(entry["val_soft_dice"]) else None}
                for i, row in enumerate(entry["dwell_rows"])]
        sections.append(comparison_table(
            rows, [],
            [Column("loss", "loss", 1, 4, in_paper=False), Column("accuracy", "accuracy (%)", 100, 3, in_paper=False),
             Column("val_loss", "val loss", 1, 4, in_paper=False),
             Column("val_accuracy", "val accuracy (%)", 100, 3, in_paper=False),
             Column("val_soft_dice", "val Dice coef.", 1, 4, in_paper=False),
             Column("lr", "LR", 1, 6, in_paper=False), Column("next_lr", "next LR", 1, 6, in_paper=False),
             Column("improvement_pct", "improvement (%)", 1, 2, in_paper=False),
             Column("duration_s", "duration (s)", 1, 1, in_paper=False)],
            key=("epoch", "monitor", "restored"),
            title=f"Dwell callback, per epoch — {VARIANT_TITLES[name]}",
            note="*restored*: the epoch ended worse than the best so far, so the best weights so far were put "
            f"back and the LR multiplied by the factor. Best epoch {entry['best_epoch']}: its weights are the "
            "evaluated and exported model's."
            + (f" Training stopped at epoch {entry['stopped_epoch']} (stop_patience reached)."
               if entry["stopped_epoch"] else ""),
        ))
    return "\n\n".join(sections)
