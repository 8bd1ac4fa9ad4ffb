"""Paper 1's tables: Tables 6.1 / 6.2 beside the paper and the whole-volume region metrics.

``experiments/paper1_u_resunet.py`` runs the experiment; :func:`tables` turns its ``results.json``
into ``table.md``.
"""

from __future__ import annotations

from brats_keras.configs.paper1 import TABLE_6_1, TABLE_6_2, UNET_BASELINE_TEXT
from brats_keras.labels import REGION_KEYS
from brats_keras.reporting import Column, comparison_table, epoch_table

MODEL_TITLES = {"u_resunet": "U-ResUNet (proposed)", "unet2d": "U-Net (baseline)"}


def tables(results: dict) -> str:
    """table.md: Tables 6.1 and 6.2 beside the paper, and the whole-volume region metrics."""
    models = results["models"]
    proposed, baseline = models.get("u_resunet"), models.get("unet2d")
    sections = []

    def measured(entry, source, prefix=""):
        rows = {}
        for epoch, values in (entry or {}).get(source, {}).items():
            rows[int(epoch)] = {f"{prefix}{k}": v for k, v in values.items()}
        return rows

    def merge(*dicts):
        out: dict[int, dict] = {}
        for d in dicts:
            for epoch, values in d.items():
                out.setdefault(epoch, {}).update(values)
        return out

    t61 = merge(measured(proposed, "test_rows"), measured(baseline, "test_rows", "unet_"))
    sections.append(epoch_table(
        t61, TABLE_6_1,
        [Column("test_accuracy", "U-ResUNet test acc (%)", 100, 2, paper_key="accuracy"),
         Column("test_loss", "U-ResUNet test loss (%)", 100, 2, paper_key="loss"),
         Column("unet_test_accuracy", "U-Net test acc (%)", 100, 2, in_paper=False),
         Column("unet_test_loss", "U-Net test loss (%)", 100, 2, in_paper=False)],
        title="Table 6.1 — test accuracy and loss per epoch",
        note=f"Pixel accuracy is dominated by background; see the per-region Dice below. "
        f"U-Net baseline in the paper: {UNET_BASELINE_TEXT}.",
    ))
    t62 = merge(measured(proposed, "train_rows"), measured(baseline, "train_rows", "unet_"))
    sections.append(epoch_table(
        t62, TABLE_6_2,
        [Column("accuracy", "U-ResUNet train acc (%)", 100, 2), Column("loss", "U-ResUNet train loss (%)", 100, 2),
         Column("unet_accuracy", "U-Net train acc (%)", 100, 2, in_paper=False),
         Column("unet_loss", "U-Net train loss (%)", 100, 2, in_paper=False)],
        title="Table 6.2 — training accuracy and loss per epoch",
    ))
    rows = []
    for name, entry in models.items():
        for key, label in (("whole_volume", results.get("eval_slices", "training window")),
                           ("whole_volume_all_slices", "all slices (as predict)")):
            if key not in entry:
                continue
            summary = entry[key]["summary"]
            row = {"model": MODEL_TITLES[name], "slices": label,
                   "cases": summary.get("WT", {}).get("dice", {}).get("count", 0)}
            for region in REGION_KEYS:
                row[f"dice_{region}"] = summary[region]["dice"]["mean"]
                row[f"hd95_{region}"] = summary[region]["hd95"]["mean"]
            rows.append(row)
    region_columns = [Column("cases", "test patients", 1, 0, in_paper=False)]
    region_columns += [Column(f"dice_{r}", f"Dice {r}", 1, 3, in_paper=False) for r in REGION_KEYS]
    region_columns += [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in REGION_KEYS]
    sections.append(comparison_table(
        rows, [], region_columns, key=("model", "slices"),
        title="Whole-volume test metrics (mean over test patients)",
        note="The paper reports no Dice or HD95; these are measured here so accuracy cannot mislead. "
        "*Training window*: the model labels the axial slices it was trained on and every other slice is "
        "background. *All slices (as predict)*: the model labels every axial slice that holds a brain voxel, "
        "as `python -m brats_keras predict` does, so `predict` + `evaluate` on the test cases reproduce this row.",
    ))
    return "\n\n".join(sections)
