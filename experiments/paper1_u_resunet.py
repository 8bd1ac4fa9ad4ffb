"""Paper 1 — U-ResUNet cascade vs plain U-Net on 2D BraTS 2020 slices (the suite's main job).

    python experiments/paper1_u_resunet.py                       # quick profile on synthetic data
    python experiments/paper1_u_resunet.py --data-dir BraTS2020_TrainingData   # the paper's profile

Trains the proposed U-Net → ResUNet cascade and the U-Net baseline on FLAIR + T1ce axial slices
(22..121, 240 → 128), Adam 1e-3, categorical cross-entropy, batch 32, split 80/20 by patient with
15 % of the training patients for validation. Writes to the run folder: config.json, split.json,
table.md (Tables 6.1 / 6.2 measured beside the paper, per-region Dice and HD95 on whole test
volumes, on the training window and on all slices as `predict` labels them), results.json, plots/
(training curves, prediction overlays) and per model <model>/{history.csv, model.keras,
saved_model/, logs/, checkpoints/}. See docs/paper1.md.
"""

from __future__ import annotations

import sys

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.callbacks import EpochTable
from brats_keras.configs.base import make_compiled_model
from brats_keras.configs.paper1 import EXPERIMENT, MODELS, MOVED_PATHS, TABLE_6_1, paper1_config
from brats_keras.data.brats import discover_cases
from brats_keras.data.inputs import input_dataset
from brats_keras.data.slices2d import SliceCache, SliceIndex
from brats_keras.data.synthetic import ensure_synthetic_dataset
from brats_keras.inference import InferenceSpec
from brats_keras.papers.paper1 import MODEL_TITLES, tables
from brats_keras.reporting import history_to_epoch_dict, plot_training_curves
from brats_keras.runner import Experiment, Flag, ModelRun, evaluate_slice_model, slice_flags, window_text


class Paper1(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper1_config)
    moved_paths = MOVED_PATHS
    sources_of_defaults = {"train.epochs": "Tables 6.1 / 6.2 go to epoch 20", "train.batch_size": "paper §5.5"}
    flags = (
        Flag("--model", None, "train the proposed cascade, the U-Net baseline, or both", choices=(*MODELS, "both"),
             default="both"),
        *slice_flags(),
        Flag("--cascade-input", "models.u_resunet.options.cascade_input", "what the U-Net hands the ResUNet: its "
             "last decoder features (our choice) or its softmax output", choices=("features", "probabilities")),
    )

    def sources(self, ctx):
        c = ctx.config
        return {"data": ctx.args.data_dir or ensure_synthetic_dataset(cases=c.data.synthetic_cases, seed=c.train.seed)}

    def prepare(self, ctx):
        c, d = ctx.config, ctx.data
        cases = {f.case_id: f for f in discover_cases(ctx.dirs["data"], modalities=c.data.slices.modalities)}
        d.split = ctx.patient_split(cases, test_fraction=c.data.test_fraction, val_fraction=c.data.val_fraction,
                                    data_dir=str(ctx.dirs["data"]))
        cache = SliceCache(c.data.slices)
        d.index = {part: SliceIndex(cache.ensure([cases[i] for i in d.split[part]])) for part in ("train", "val", "test")}
        d.train = input_dataset(d.index["train"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed)
        d.val, d.test = (input_dataset(d.index[part], batch_size=ctx.batch()) for part in ("val", "test"))
        d.test_files = [cases[i] for i in d.split["test"]][: c.data.max_eval_cases or None]
        ctx.results["eval_slices"] = window_text(c.data.slices, c.data.eval_slices)
        print(f"patients: {len(d.split['train'])} train / {len(d.split['val'])} val / {len(d.split['test'])} test; "
              f"slices: {len(d.index['train'])} / {len(d.index['val'])} / {len(d.index['test'])}", flush=True)

    def models(self, ctx):
        names = MODELS if ctx.option["model"] == "both" else (ctx.option["model"],)
        for name in names:
            test_table = EpochTable(keys=["loss"], epochs=sorted(TABLE_6_1), data=ctx.data.test)
            yield ModelRun(
                key=name, title=MODEL_TITLES[name], build=lambda name=name: self.build(ctx, name),
                train=ctx.data.train, validation=ctx.data.val, callbacks=[test_table],
                score=lambda model, history, name=name, table=test_table: self.score(ctx, name, model, history, table),
                sample=lambda: ctx.data.index["test"].gather(np.arange(min(2, len(ctx.data.index["test"]))))[0],
                inference=InferenceSpec.for_slices(ctx.config.data.slices, experiment=EXPERIMENT, model=name,
                                                   synthetic=ctx.synthetic),
                train_items=len(ctx.data.index["train"]),
                summary=lambda e, name=name: f"{MODEL_TITLES[name]}: whole-volume WT Dice "
                f"{e['whole_volume']['summary'].get('WT', {}).get('dice', {}).get('mean', float('nan')):.3f} on "
                f"{len(ctx.data.test_files)} test patients")

    def build(self, ctx, name: str) -> keras.Model:
        c = ctx.config
        return make_compiled_model(c.models[name], c.train,
                                   input_shape=(c.data.slices.size, c.data.slices.size, c.data.slices.channels))

    def score(self, ctx, name, model, history, test_table) -> dict:
        c, plots = ctx.config, ctx.run.plots
        final_test = model.evaluate(ctx.data.test, verbose=0, return_dict=True)
        scored = {"whole_volume": evaluate_slice_model(
            model.predict_on_batch, ctx.data.test_files, c.data.slices, eval_slices=c.data.eval_slices,
            overlay_png=plots / f"{name}_overlay.png", title=MODEL_TITLES[name], synthetic=ctx.synthetic)}
        if c.data.eval_slices != "all":  # the figure predict + evaluate reproduce
            scored["whole_volume_all_slices"] = evaluate_slice_model(
                model.predict_on_batch, ctx.data.test_files, c.data.slices, eval_slices="all", skip_empty=True)
        plot_training_curves(history, plots / f"{name}_curves.png", metrics=("accuracy", "loss", "dice_wt"),
                             title=f"{MODEL_TITLES[name]} — training curves", synthetic=ctx.synthetic)
        return {
            "train_rows": {e: {k: v for k, v in row.items() if k in ("accuracy", "loss")}
                           for e, row in history_to_epoch_dict(history).items()},
            "test_rows": {e: {k: v for k, v in row.items() if k.startswith("test_")}
                          for e, row in test_table.rows.items()},
            "final_test": {k: float(v) for k, v in final_test.items()},
            **scored,
        }


main = Paper1.main


if __name__ == "__main__":
    sys.exit(main())
