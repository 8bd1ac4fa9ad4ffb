"""Paper 2 — simple, modified and spatial-attention 3D U-Nets on 128³ BraTS 2020 crops, tested on BraTS 2021.

    python experiments/paper2_attention_unet3d.py                  # quick profile on synthetic data
    python experiments/paper2_attention_unet3d.py --data-dir BraTS2020_TrainingData \\
        --test-dir BraTS2021_Training_Data                         # the paper's profile

Pre-processes both cohorts once into the 3D cache (FLAIR/T1ce/T2, MinMaxScaler per axial slice as
the reference does, crop [56:184, 56:184, 13:141], > 1 % tumour filter on BraTS 2020), splits the
kept 2020 cases 75:25 by patient, and trains each model with Adam 1e-4, Dice (class weights
0.25 × 4) + 1 × categorical focal loss, accuracy and IoU(0.5), batch 2. Writes to the run folder:
config.json, split.json, table.md (Tables III and IV measured beside the paper; HD95, sensitivity
and specificity per region on whole volumes), results.json, plots/ (curves, three-plane overlays)
and per model <model>/{history.csv, model.keras, saved_model/, logs/, checkpoints/}. See docs/paper2.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.bench import peak_rss_mb
from brats_keras.configs.base import make_compiled_model
from brats_keras.configs.paper2 import EXPERIMENT, MODELS, paper2_config
from brats_keras.data.inputs import input_dataset
from brats_keras.io import default_cache_dir
from brats_keras.data.synthetic import ensure_synthetic_dataset
from brats_keras.data.volumes3d import SCALINGS, VolumeIndex, parse_crop
from brats_keras.inference import InferenceSpec
from brats_keras.papers.paper2 import MODEL_TITLES, preprocessed, score_cohort, tables
from brats_keras.reporting import plot_training_curves
from brats_keras.runner import Experiment, Flag, ModelRun
from brats_keras.training import inference_without_xla_on_cpu

ATTENTION = "models.unet3d_spatial_attention.options"
"""The settings of the proposed model, the only one with spatial attention."""


class Paper2(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper2_config)
    sources_of_defaults = {"train.epochs": "paper §VIII: 100 epochs", "train.batch_size": "paper §VIII / Table II",
                           "train.learning_rate": "Table II", "data.preprocess.crop": "reference code",
                           "models.*.options.filters": "16, doubling to 256", "train.jit_compile": "a 128³ batch of 2 "
                           "needs 6.8 GB instead of 19.6 GB of host memory on CPU with XLA"}
    flags = (
        Flag("--test-dir", None, "external test cohort in BraTS 2021 layout (the paper's Test-2021); without it a "
             "synthetic BraTS 2021 set with another seed is used (quick profile) or no external test is run"),
        Flag("--model", None, "train one of the three networks, or all of them", choices=(*MODELS, "all"),
             default="all"),
        Flag("--crop", "data.preprocess.crop", "x0:x1,y0:y1,z0:z1 crop", convert=parse_crop),
        Flag("--scaling", "data.preprocess.scaling", "min-max scaling per axial slice (reference) or per volume",
             choices=SCALINGS),
        Flag("--filters", "models.*.options.filters", "base filters", type=int),
        Flag("--attention-activation", f"{ATTENTION}.attention_activation", "spatial attention gate: sigmoid (CBAM) or "
             "the paper's literal softmax, which makes the attention an identity (docs/paper2.md)",
             choices=("sigmoid", "softmax")),
        Flag("--attention-in-decoder", f"{ATTENTION}.attention_in_decoder", "spatial attention after each decoder "
             "up-sampling too (§III: \"during encoding and decoding\"; the spatial-attention model only)", kind="switch"),
        Flag("--learning-rate", "train.learning_rate", "Adam learning rate", type=float),
        Flag("--max-eval-cases", "data.max_eval_cases", "score at most this many patients of each cohort on whole "
             "volumes (0: all)", type=int),
        Flag("--cache-dir", None, "folder of the pre-processed 3D arrays (default: $BRATS_KERAS_CACHE or "
             "~/.cache/brats_keras, under volumes3d/)"),
    )

    def sources(self, ctx):
        c, args = ctx.config, ctx.args
        shape, dirs = c.data.synthetic_shape, {}
        dirs["train-2020"] = args.data_dir or ensure_synthetic_dataset(
            dataset="brats2020", cases=c.data.synthetic_cases, seed=c.train.seed, shape=shape)
        if ctx.option["test_dir"]:
            dirs["test-2021"] = ctx.option["test_dir"]
        elif args.data_dir is None:  # the synthetic external cohort: another seed, 2021 layout
            dirs["test-2021"] = ensure_synthetic_dataset(dataset="brats2021", cases=c.data.synthetic_test_cases,
                                                         seed=c.train.seed + 1, shape=shape)
        return dirs

    def prepare(self, ctx):
        c, d = ctx.config, ctx.data
        cache_root = Path(ctx.option["cache_dir"]) if ctx.option["cache_dir"] else default_cache_dir()
        d.files = {}  # case id → CaseFiles of both cohorts (whole-volume scoring reads their labels)
        train_cache, manifest = preprocessed(ctx.dirs["train-2020"], c.data.preprocess, cache_root, "train-2020",
                                             d.files)
        split = ctx.patient_split([e["case_id"] for e in manifest["kept"]], test_fraction=0.0,
                                  val_fraction=c.data.val_fraction, data_dir=str(ctx.dirs["train-2020"]),
                                  skipped={e["case_id"]: e["reason"] for e in manifest["skipped"]})
        d.cohorts = {"train-2020": VolumeIndex(train_cache, split["train"]),
                     "val-2020": VolumeIndex(train_cache, split["val"])}
        test_cache = None
        if "test-2021" in ctx.dirs:
            test_cache, _ = preprocessed(ctx.dirs["test-2021"], c.data.test_preprocess(), cache_root, "test-2021",
                                         d.files)
            d.cohorts["test-2021"] = VolumeIndex(test_cache)
        d.train = input_dataset(d.cohorts["train-2020"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed)
        d.val = input_dataset(d.cohorts["val-2020"], batch_size=ctx.batch())
        ctx.results["preprocessed"] = {"train-2020": str(train_cache), "test-2021": test_cache and str(test_cache),
                                       "skipped": len(manifest["skipped"])}
        print(f"patients: {len(split['train'])} train / {len(split['val'])} val (BraTS 2020 layout), "
              f"{len(d.cohorts.get('test-2021', ()))} external test; crop {c.data.input_shape}", flush=True)

    def models(self, ctx):
        names = MODELS if ctx.option["model"] == "all" else (ctx.option["model"],)
        for name in names:
            yield ModelRun(
                key=name, title=MODEL_TITLES[name], build=lambda name=name: self.build(ctx, name),
                train=ctx.data.train, validation=ctx.data.val,
                score=lambda model, history, name=name: self.score(ctx, name, model, history),
                sample=lambda: ctx.data.cohorts["val-2020"].gather(np.arange(1))[0],
                inference=InferenceSpec.for_volume(ctx.config.data.preprocess, experiment=EXPERIMENT, model=name,
                                                   synthetic=ctx.synthetic),
                summary=lambda e, name=name: f"{MODEL_TITLES[name]}: " + " / ".join(
                    f"{c} WT Dice {s['summary']['WT']['dice']['mean']:.3f}" for c, s in e["cohorts"].items()),
                clear_session=True)

    def build(self, ctx, name: str) -> keras.Model:
        c = ctx.config
        return make_compiled_model(c.models[name], c.train, input_shape=c.data.input_shape)

    def score(self, ctx, name, model, history) -> dict:
        inference_without_xla_on_cpu(model)
        cohorts, plots = ctx.data.cohorts, ctx.run.plots
        overlay_cohort = list(cohorts)[-1]  # the external cohort, or the validation patients without one
        scores = {cohort: score_cohort(model, index, ctx.data.files, ctx.config.data.preprocess.crop,
                                       max_cases=ctx.config.data.max_eval_cases,
                                       overlay=(plots / f"{name}_overlay.png", MODEL_TITLES[name], ctx.synthetic)
                                       if cohort == overlay_cohort else None)
                  for cohort, index in cohorts.items()}
        plot_training_curves(history, plots / f"{name}_curves.png", metrics=("loss", "accuracy", "iou"),
                             title=f"{MODEL_TITLES[name]} — training curves", synthetic=ctx.synthetic)
        return {"last_epoch": {k: float(v[-1]) for k, v in history.items() if v}, "cohorts": scores,
                "peak_host_memory_mb": round(peak_rss_mb(), 1)}


main = Paper2.main


if __name__ == "__main__":
    sys.exit(main())
