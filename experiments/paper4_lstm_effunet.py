"""Paper 4 — LSTM pre-processing and a fine-tuned EfficientNet attention U-Net on the figshare set.

    python experiments/paper4_lstm_effunet.py                                  # quick profile, synthetic data
    python experiments/paper4_lstm_effunet.py --data-dir brain_tumor_dataset   # the paper's profile
    python experiments/paper4_lstm_effunet.py --data-dir ... --models unet proposed

Segments the tumour in the figshare T1ce slices (MATLAB v7.3 .mat files, split by patient ID) with
the four models of the paper's Table 3 — U-Net, Attention U-Net, Res Attention U-Net and the proposed
LSTM enhancer + EfficientNetB0 attention U-Net — plus the proposed network without its LSTM stage
(the ablation). Every model: Table 1's settings (24 filters, Leaky-ReLU, max-pool 3 / stride 2,
dropout 0.5, batch 8), AdamW at 1e-4 with ReduceLROnPlateau, Dice + focal loss, augmentation
(rotation, flips, zoom, elastic) in the input pipeline. The LSTM stage is first pre-trained as a
denoiser (RMSprop, noise-corrupted training images), then fine-tuned end to end with the U-Net.

Writes to the run folder: config.json, split.json (patient IDs), table.md (Table 3 with the paper's
and the measured DSC / JI / accuracy, precision / recall / F1, the ablation, the enhancer's denoising
and the JI ≤ DSC audit), results.json, plots/ (training curves, Table 2's image / LSTM-enhanced /
ground truth / prediction grid, the enhancer before/after figure) and per model <name>/{history.csv,
model.keras, saved_model/, logs/, checkpoints/}; enhancer/ holds the pre-trained LSTM stage.
See docs/paper4.md.
"""

from __future__ import annotations

import sys

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.callbacks import early_stopping_record, plateau_callbacks
from brats_keras.configs.base import make_compiled_model
from brats_keras.configs.paper4 import EXPERIMENT, MODELS, MODEL_TITLES, MOVED_PATHS, paper4_config
from brats_keras.data.figshare import (
    FigshareCache, FigshareIndex, discover_figshare, ensure_synthetic_figshare, patient_tumour_types, read_figshare_mat,
    read_figshare_metas,
)
from brats_keras.data.inputs import input_dataset
from brats_keras.errors import DataError
from brats_keras.models.common import ENCODER_WEIGHTS_FLAG
from brats_keras.models.paper4 import enhancer_of, resolve_encoder_weights
from brats_keras.papers.paper4 import (
    EFFICIENTNET_RUNS, all_items, encoder_note, enhancer_layer, figures, predict_probabilities, pretrain_stage,
    score_test, tables,
)
from brats_keras.runner import Experiment, Flag, ModelRun


class Paper4(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper4_config)
    moved_paths = MOVED_PATHS
    sources_of_defaults = {"train.epochs": "Table 1", "train.batch_size": "Table 1", "train.learning_rate": "Table 1"}
    flags = (
        Flag("--models", None, "runs to make ('effunet' is the proposed network without its LSTM stage)",
             choices=list(MODELS), nargs="+", default=list(MODELS)),
        Flag("--image-size", "data.size", "slices resized to this size", type=int),
        Flag("--pretrain-epochs", "train.enhancer.pretrain_epochs", "denoising pre-training epochs of the LSTM stage "
             "(0 skips the pre-training)", type=int),
        Flag("--no-augment", None, "train without augmentation", kind="switch"),
        Flag("--encoder-weights", None, "EfficientNetB0 encoder: ImageNet weights if present locally (auto), "
             "required (imagenet), or random (none); nothing is downloaded", choices=list(ENCODER_WEIGHTS_FLAG),
             default="auto"),
        Flag("--learning-rate", "train.learning_rate", "AdamW's initial learning rate", type=float),
    )

    def sources(self, ctx):
        c = ctx.config
        return {"data": ctx.args.data_dir or ensure_synthetic_figshare(
            patients=c.data.synthetic_patients, slices_per_patient=c.data.synthetic_slices_per_patient,
            seed=c.train.seed)}

    def prepare(self, ctx):
        c, d, o = ctx.config, ctx.data, ctx.option
        d.weights = None
        if any(key in EFFICIENTNET_RUNS for key in o["models"]):
            d.weights = resolve_encoder_weights(ENCODER_WEIGHTS_FLAG[o["encoder_weights"]])  # warns when absent
        metas = read_figshare_metas(discover_figshare(ctx.dirs["data"]), progress=True)
        types = patient_tumour_types(metas)  # the split is stratified by tumour type (choice, docs/paper4.md)
        split = ctx.patient_split(sorted(types), test_fraction=c.data.test_fraction, val_fraction=c.data.val_fraction,
                                  strata=types, data_dir=str(ctx.dirs["data"]),
                                  unit_note="figshare patient IDs (PID), stratified by tumour type")
        part_of = {pid: part for part, pids in split.items() for pid in pids}
        parts = {part: [m.path for m in metas if part_of.get(m.pid) == part] for part in ("train", "val", "test")}
        if not parts["train"] or not parts["test"]:
            raise DataError(f"{len(types)} patients are too few for a train / test split", path=ctx.dirs["data"])
        cache = FigshareCache(size=c.data.size, normalization=c.data.normalization)
        d.index = {part: FigshareIndex(cache.ensure(paths)) for part, paths in parts.items()}
        augment = None if o["no_augment"] or not c.data.augment.enabled else c.data.augment
        d.train = input_dataset(d.index["train"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed,
                               augment=augment)
        d.val = input_dataset(d.index["val"], batch_size=ctx.batch()) if len(d.index["val"]) else None
        d.test_images, d.test_masks = all_items(d.index["test"])
        d.source_masks = [read_figshare_mat(path).mask for path in d.index["test"].paths]  # scored at their own size
        print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; slices: "
              f"{len(d.index['train'])} / {len(d.index['val'])} / {len(d.index['test'])} at {c.data.size}²", flush=True)
        note = encoder_note(o["models"], d.weights, o["encoder_weights"])
        ctx.results.update(noise=c.train.enhancer.noise.to_dict(), encoder_weights=d.weights or "random",
                           encoder_note=note)
        if note:
            print(note, flush=True)
        d.enhancer, d.histories, d.predictions, d.enhanced = None, {}, {}, None
        if "proposed" in o["models"]:
            val_images = all_items(d.index["val"])[0] if len(d.index["val"]) else None
            d.enhancer, ctx.results["enhancer"] = pretrain_stage(c, ctx.run, ctx.resume, c.data.size,
                                                                 all_items(d.index["train"])[0], val_images,
                                                                 d.test_images)

    def models(self, ctx):
        s = ctx.config.train.schedule
        for key in ctx.option["models"]:  # one model of Table 3: training, test scores, export
            callbacks = plateau_callbacks(s.monitor, reduce_factor=s.reduce_factor, reduce_patience=s.reduce_patience,
                                          min_learning_rate=s.min_learning_rate, stop_patience=s.stop_patience)
            yield ModelRun(
                key=key, title=f"{MODEL_TITLES[key]} ({MODELS[key]})", build=lambda key=key: self.build(ctx, key),
                train=ctx.data.train, validation=ctx.data.val, callbacks=callbacks,
                score=lambda model, history, key=key, cbs=callbacks: self.score(ctx, key, model, history, cbs),
                sample=lambda: ctx.data.test_images[:2],
                summary=lambda e, key=key: f"{MODEL_TITLES[key]}: test DSC {100 * e['test']['mean']['dice']:.2f} %, JI "
                f"{100 * e['test']['mean']['iou']:.2f} %, accuracy {100 * e['test']['mean']['accuracy']:.2f} % on "
                f"{e['test']['images']} slices")

    def build(self, ctx, key: str) -> keras.Model:
        c, size = ctx.config, ctx.config.data.size
        weights = {"weights": ctx.data.weights} if key in EFFICIENTNET_RUNS else {}
        # Every model is initialised from the run's seed on its own, whatever ran before it: a model
        # trained alone (--models) starts as in the full run, and the ablation's two EfficientNet
        # models start from the same network (lstm_effunet's enhancer does not advance the seed stream).
        keras.utils.set_random_seed(c.train.seed)
        model = make_compiled_model(c.models[key], c.train, input_shape=(size, size, 1), **weights)
        if key == "proposed" and ctx.data.enhancer is not None:  # start from the pre-trained denoiser
            model.get_layer(f"{model.name}_enhancer").set_weights(enhancer_layer(ctx.data.enhancer).get_weights())
        return model

    def score(self, ctx, key, model, history, callbacks) -> dict:
        d = ctx.data
        probabilities = predict_probabilities(model, d.test_images, ctx.batch())
        d.predictions[key] = (probabilities > 0.5).astype(np.uint8)  # at the model's size, for the figures
        test = score_test(probabilities, d.source_masks, d.index["test"].labels)
        if key == "proposed":
            d.enhanced = enhancer_of(model).predict(d.test_images, batch_size=ctx.batch(), verbose=0)
        d.histories[MODEL_TITLES[key].split(" (")[0]] = history
        return {"model": MODELS[key], "early_stopping": early_stopping_record(callbacks), "test": test}

    def figures(self, ctx):
        c, d = ctx.config, ctx.data
        figures(ctx.run, ctx.results, d.histories, d.test_images, d.test_masks, d.index["test"].pids,
                d.index["test"].labels, d.predictions, d.enhanced, d.enhancer, c.train.enhancer.noise, c.train.seed,
                c.data.overlay_images, ctx.synthetic)


main = Paper4.main


if __name__ == "__main__":
    sys.exit(main())
