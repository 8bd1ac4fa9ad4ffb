"""Paper 3 — multimodal 2D U-Net with N4 bias-field correction, denoising and the "dwell" LR callback.

    python experiments/paper3_unet_dwell.py                        # quick profile on synthetic data
    python experiments/paper3_unet_dwell.py --data-dir BraTS2020_TrainingData   # our paper profile

Pre-processes every case (N4 per modality in the brain mask, curvature-flow denoising, z-score) into a
BraTS-layout folder once, trains the U-Net (four encoder blocks, bridge, four decoder blocks) on the
four modalities with the Dice loss and the dwell callback (the LR is lowered and the best weights come
back when the validation loss worsens), and trains the same U-Net on the raw volumes as the ablation.
Writes to the run folder: config.json, split.json, table.md (the ablation on whole test volumes and
each run's per-epoch dwell table), results.json, plots/ (Fig. 5.1's curves, LR schedules with the
restores marked, overlays) and per run preprocessed/ and raw/ with history.csv, model.keras,
saved_model/, logs/, checkpoints/. See docs/paper3.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.callbacks import DwellLearningRate
from brats_keras.cli import positive_int
from brats_keras.configs.base import make_compiled_model
from brats_keras.configs.paper3 import EXPERIMENT, MODEL, VARIANT_TITLES, VARIANTS, paper3_config
from brats_keras.data.brats import discover_cases
from brats_keras.data.inputs import input_dataset
from brats_keras.data.slices2d import SliceCache, SliceIndex
from brats_keras.data.synthetic import ensure_synthetic_dataset
from brats_keras.errors import BratsKerasError
from brats_keras.inference import InferenceSpec
from brats_keras.papers.paper3 import FIG_5_1, default_corrected_dir, preprocess, tables
from brats_keras.reporting import plot_curve_panels, plot_lr_schedule
from brats_keras.runner import Experiment, Flag, ModelRun, evaluate_slice_model, slice_flags


class Paper3(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper3_config)
    sources_of_defaults = {"train.epochs": "the paper states none: our choice, the dwell callback stops earlier",
                           "train.batch_size": "the paper states none: our choice, as paper 1",
                           "train.learning_rate": "the paper states none: our choice"}
    flags = (
        Flag("--no-preprocess", None, "train only on the raw volumes (the ablation's other half); default: both runs",
             kind="switch"),
        Flag("--preprocess-only", None, "train only on the pre-processed volumes (the paper's method)", kind="switch"),
        Flag("--corrected-dir", None, "folder for the bias-corrected volumes (BraTS layout, reused when up to date; "
             "default: a folder in the cache named after --data-dir and the settings). A folder written by "
             "data_prep/correct_bias.py with the same settings is reused as is"),
        Flag("--correction-workers", None, "cases corrected in parallel (default: the CPU count)", type=positive_int),
        Flag("--shrink-factor", "data.correction.shrink_factor", "N4 fits the field on the volume shrunk by this "
             "factor", type=positive_int),
        *slice_flags(),
        Flag("--learning-rate", "train.learning_rate", "Adam's initial learning rate", type=float),
    )

    def check(self, args, config):
        if config.options["no_preprocess"] and config.options["preprocess_only"]:
            raise BratsKerasError("--no-preprocess and --preprocess-only exclude each other: give at most one")

    def sources(self, ctx):
        c = ctx.config
        return {"data": ctx.args.data_dir or ensure_synthetic_dataset(cases=c.data.synthetic_cases, seed=c.train.seed)}

    def prepare(self, ctx):
        c, d, o = ctx.config, ctx.data, ctx.option
        d.variants = ("raw",) if o["no_preprocess"] else ("preprocessed",) if o["preprocess_only"] else VARIANTS
        settings, data_dir = c.data.correction, ctx.dirs["data"]
        d.sources = {"raw": {f.case_id: f for f in discover_cases(data_dir, modalities=settings.modalities)}}
        failed: dict[str, str] = {}
        corrected_dir = None
        if "preprocessed" in d.variants:
            corrected_dir = Path(o["corrected_dir"] or default_corrected_dir(data_dir, settings))
            d.sources["preprocessed"], failed = preprocess(data_dir, corrected_dir, settings,
                                                           o["correction_workers"] or os.cpu_count() or 1)
        usable = [i for i in d.sources["raw"] if i not in failed]  # both runs see the same patients
        d.split = ctx.patient_split(usable, test_fraction=c.data.test_fraction, val_fraction=c.data.val_fraction,
                                    data_dir=str(data_dir), corrected_dir=corrected_dir and str(corrected_dir),
                                    skipped={i: f"pre-processing failed: {e}" for i, e in failed.items()})
        ctx.results.update(corrected_dir=corrected_dir and str(corrected_dir), skipped_cases=failed)
        d.histories = {}

    def models(self, ctx):
        c, d = ctx.config, ctx.data
        for variant in d.variants:  # one run each: its slices, the dwell callback, evaluation, export
            slices, cases = c.data.slices_for(variant), d.sources[variant]
            cache = SliceCache(slices)
            index = {part: SliceIndex(cache.ensure([cases[i] for i in d.split[part]])) for part in ("train", "val", "test")}
            print(f"patients: {len(d.split['train'])} train / {len(d.split['val'])} val / {len(d.split['test'])} test; "
                  f"slices: {len(index['train'])} / {len(index['val'])} / {len(index['test'])}", flush=True)
            test_ds = input_dataset(index["test"], batch_size=ctx.batch())
            dwell = DwellLearningRate(**c.train.dwell.callback_kwargs())
            yield ModelRun(
                key=variant, title=f"U-Net {VARIANT_TITLES[variant]}",
                build=lambda slices=slices: self.build(ctx, slices),
                train=input_dataset(index["train"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed),
                validation=input_dataset(index["val"], batch_size=ctx.batch()), callbacks=[dwell],
                score=lambda model, history, v=variant, s=slices, t=test_ds, dw=dwell: self.score(ctx, v, s, t, dw,
                                                                                                model, history),
                sample=lambda index=index: index["test"].gather(np.arange(min(2, len(index["test"]))))[0],
                inference=InferenceSpec.for_slices(slices, experiment=EXPERIMENT, model=MODEL, synthetic=ctx.synthetic,
                                                   correction=c.data.correction if variant == "preprocessed" else None),
                summary=lambda e, v=variant: f"U-Net {VARIANT_TITLES[v]}: whole-volume WT Dice "
                f"{e['whole_volume']['summary'].get('WT', {}).get('dice', {}).get('mean', float('nan')):.3f} on "
                f"{e['whole_volume_cases']} test patients; best epoch {e['best_epoch']}, "
                f"{len(e['restored_epochs'])} weight restores")

    def build(self, ctx, slices) -> keras.Model:
        c = ctx.config
        return make_compiled_model(c.models[MODEL], c.train, input_shape=(slices.size, slices.size, slices.channels))

    def score(self, ctx, variant, slices, test_ds, dwell, model, history) -> dict:
        c, d, plots = ctx.config, ctx.data, ctx.run.plots
        final_test = model.evaluate(test_ds, verbose=0, return_dict=True)  # the best weights (restored at the end)
        test_files = [d.sources[variant][i] for i in d.split["test"]][: c.data.max_eval_cases or None]
        evaluation = evaluate_slice_model(model.predict_on_batch, test_files, slices, eval_slices=c.data.eval_slices,
                                          overlay_png=plots / f"{variant}_overlay.png",
                                          title=f"U-Net {VARIANT_TITLES[variant]}", synthetic=ctx.synthetic)
        plot_lr_schedule(history, plots / f"{variant}_lr_schedule.png", synthetic=ctx.synthetic,
                         title=f"Dwell learning-rate schedule — {VARIANT_TITLES[variant]}")
        d.histories[VARIANT_TITLES[variant]] = history
        return {"best_epoch": dwell.best_epoch, "stopped_epoch": dwell.stopped_epoch,
                "restored_epochs": [row["epoch"] for row in dwell.rows if row["restored"]], "dwell_rows": dwell.rows,
                "val_soft_dice": [float(v) for v in history.get("val_soft_dice", [])],
                "final_test": {k: float(v) for k, v in final_test.items()}, "whole_volume": evaluation,
                "whole_volume_cases": len(test_files)}

    def figures(self, ctx):
        plot_curve_panels(ctx.data.histories, ctx.run.plots / "fig5_1_curves.png", FIG_5_1, synthetic=ctx.synthetic,
                          title="Paper 3, Fig. 5.1 — U-Net with and without pre-processing")


main = Paper3.main


if __name__ == "__main__":
    sys.exit(main())
