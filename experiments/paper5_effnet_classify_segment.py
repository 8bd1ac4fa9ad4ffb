"""Paper 5 — EfficientNetB1 4-class classifier and residual U-Net segmenter.

    python experiments/paper5_effnet_classify_segment.py                       # quick profile, synthetic data
    python experiments/paper5_effnet_classify_segment.py --data-dir brain-tumor-mri --lgg-dir lgg-mri-segmentation
    python experiments/paper5_effnet_classify_segment.py --task classify --data-dir brain-tumor-mri --split folders

Classification: the brain-tumour MRI image set (Training/, Testing/ of glioma, meningioma, notumor,
pituitary), a 70/15/15 class-stratified split of both folders pooled, EfficientNetB1 (frozen with local
ImageNet weights, trained otherwise) + GAP + Dense 512 + dropout 0.4 + Dense 4, Adam 1e-3 (Table 2).
Segmentation: the LGG FLAIR set (kaggle_3m/), split by patient, the residual U-Net of §4.2 (1024-filter
bottleneck, one sigmoid filter), BCE + Dice, Adam 1e-4. Both halves run by default. Writes config.json,
split.json, table.md (Table 1's counts, the report and confusion matrix, the segmentation table and its
audit beside the paper), results.json, plots/ and classifier/, segmenter/. See docs/paper5.md.
"""

from __future__ import annotations

import sys

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.callbacks import early_stopping_record
from brats_keras.configs.base import make_compiled_model
from brats_keras.configs.paper5 import EXPERIMENT, MOVED_PATHS, TASKS, paper5_config
from brats_keras.data.brain_mri import ensure_synthetic_brain_mri
from brats_keras.data.lgg import ensure_synthetic_lgg
from brats_keras.data.inputs import input_dataset
from brats_keras.models.common import ENCODER_WEIGHTS_FLAG, resolve_imagenet_weights
from brats_keras.models.paper5 import conv_layer_counts
from brats_keras.papers.paper5 import (
    classification_data, classifier_note, curves, score_classifier, score_segmenter, segmentation_data, stop_callbacks,
    synthetic_profile, tables,
)
from brats_keras.runner import Experiment, Flag, ModelRun


class Paper5(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper5_config)
    moved_paths = MOVED_PATHS
    sources_of_defaults = {"train.epochs": "Table 2 (classifier)", "train.batch_size": "Table 2 (classifier)",
                           "train.segment.epochs": "§4.3", "train.segment.batch_size": "§4.2"}
    flags = (
        Flag("--task", None, "which half to run", choices=[*TASKS, "both"], default="both"),
        Flag("--lgg-dir", None, "the LGG segmentation set (the folder holding kaggle_3m/); --data-dir is the "
             "classification image set (Training/, Testing/)"),
        Flag("--split", "data.classify.split", "classification split: paper (both folders pooled, 70/15/15) or "
             "folders (the release's Testing/ as test, 15 % of Training/ for validation)", choices=["paper", "folders"]),
        Flag("--image-size", "data.classify.size", "classifier input size", type=int),
        Flag("--seg-size", "data.segment.size", "segmenter input size", type=int),
        Flag("--seg-epochs", "train.segment.epochs", "segmenter epochs", type=int),
        Flag("--seg-batch-size", "train.segment.batch_size", "segmenter batch size", type=int),
        Flag("--seg-filters", "models.segmenter.options.filters", "residual U-Net base filters", type=int),
        Flag("--encoder-weights", None, "EfficientNetB1: ImageNet weights if present locally (auto; then frozen), "
             "required (imagenet), or random (none; then trained); nothing is downloaded",
             choices=list(ENCODER_WEIGHTS_FLAG), default="auto"),
        Flag("--no-augment", None, "train both halves without augmentation", kind="switch"),
    )

    def quick(self, args):
        return synthetic_profile(args.task, {"classify": args.data_dir, "segment": args.lgg_dir}, args.quick)

    def sources(self, ctx):
        c, o, dirs = ctx.config, ctx.option, {}
        self.tasks = list(TASKS) if o["task"] == "both" else [o["task"]]
        if "classify" in self.tasks:
            g = c.data.classify
            dirs["classify"] = ctx.args.data_dir or ensure_synthetic_brain_mri(
                per_class=g.synthetic_per_class, test_per_class=g.synthetic_test_per_class, seed=c.train.seed)
        if "segment" in self.tasks:
            g = c.data.segment
            dirs["segment"] = o["lgg_dir"] or ensure_synthetic_lgg(patients=g.synthetic_patients,
                                                                   slices=g.synthetic_slices, seed=c.train.seed)
        return dirs

    def prepare(self, ctx):
        ctx.data.splits, ctx.data.histories = {}, {}

    def models(self, ctx):
        if "classify" in self.tasks:
            yield self.classifier(ctx)
        if "segment" in self.tasks:
            yield self.segmenter(ctx)

    # -------------------------------------------------------------------------------------- classify
    def classifier(self, ctx) -> ModelRun:
        c, d, settings = ctx.config, ctx.data, ctx.config.data.classify
        index, data = classification_data(ctx.run, ctx.resume, ctx.dirs["classify"], settings, c.train.seed, d.splits)
        augment = None if ctx.option["no_augment"] else settings.augment
        test_ds = input_dataset(index["test"], batch_size=ctx.batch())
        weights = resolve_imagenet_weights(ENCODER_WEIGHTS_FLAG[ctx.option["encoder_weights"]], "b1")  # warns if absent
        callbacks = stop_callbacks(c.train.stop, mode="max")

        def build() -> keras.Model:
            keras.utils.set_random_seed(c.train.seed)
            return make_compiled_model(c.models["classifier"], c.train, input_shape=(settings.size, settings.size, 3),
                                       weights=weights)

        def score(model, history) -> dict:
            frozen = not model.get_layer(f"{model.name}_base").trainable
            note = classifier_note(weights, ctx.option["encoder_weights"], frozen)
            print(note, flush=True)
            d.histories["classifier"] = history
            return {"model": c.models["classifier"].name, "base_frozen": frozen, "encoder_weights": weights or "random",
                    "encoder_note": note, "early_stopping": early_stopping_record(callbacks), **data,
                    **score_classifier(ctx.run, index["test"], model.predict(test_ds, verbose=0), c.data.overlay_images,
                                       ctx.synthetic)}

        return ModelRun(
            key="classifier", title="Classifier: EfficientNetB1 + GAP + Dense 512 + Dense 4", build=build,
            train=input_dataset(index["train"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed,
                                augment=augment),
            validation=input_dataset(index["val"], batch_size=ctx.batch()), callbacks=callbacks, score=score,
            sample=lambda: index["test"].gather(np.arange(min(2, len(index["test"]))))[0],
            summary=lambda e: f"classifier: test accuracy {100 * e['accuracy']:.2f} % on {len(index['test'])} images")

    # --------------------------------------------------------------------------------------- segment
    def segmenter(self, ctx) -> ModelRun:
        c, d, settings, train = ctx.config, ctx.data, ctx.config.data.segment, ctx.config.train.segment
        slices, split, index, data = segmentation_data(ctx.run, ctx.resume, ctx.dirs["segment"], settings,
                                                       c.train.seed, d.splits)
        augment = None if ctx.option["no_augment"] else settings.augment
        val_ds = input_dataset(index["val"], batch_size=ctx.batch(train.batch_size)) if len(index["val"]) else None
        test_ds = input_dataset(index["test"], batch_size=ctx.batch(train.batch_size))
        callbacks = stop_callbacks(train.stop, mode="min") if val_ds is not None else []  # they watch val_loss

        def build() -> keras.Model:
            keras.utils.set_random_seed(c.train.seed)
            return make_compiled_model(c.models["segmenter"], train, input_shape=(settings.size, settings.size, 3))

        def score(model, history) -> dict:
            scores = score_segmenter(ctx.run, index["test"], model.predict(test_ds, verbose=0)[..., 0], slices,
                                     split["test"], c.data.overlay_images, ctx.synthetic)
            d.histories["segmenter"] = history
            return {"model": c.models["segmenter"].name, "structure": conv_layer_counts(model),
                    "early_stopping": early_stopping_record(callbacks), **data, "test": scores}

        bottleneck = c.models["segmenter"].options.filters * 2 ** 4  # four poolings (§4.2)
        return ModelRun(
            key="segmenter", title=f"Segmenter: residual U-Net ({bottleneck}-filter bottleneck, sigmoid)", build=build,
            train=input_dataset(index["train"], batch_size=ctx.batch(train.batch_size), shuffle=True, seed=c.train.seed,
                               augment=augment),
            validation=val_ds, epochs=train.epochs, callbacks=callbacks, score=score,
            sample=lambda: index["test"].gather(np.arange(min(2, len(index["test"]))))[0],
            summary=lambda e: f"segmenter: test Dice {e['test']['all']['dice']:.4f} (all slices), "
            f"{'—' if e['test']['tumour'] is None else format(e['test']['tumour']['dice'], '.4f')} (tumour slices), "
            f"IoU {e['test']['all']['iou']:.4f}")

    def figures(self, ctx):
        curves(ctx.run, ctx.data.histories, ctx.synthetic)


main = Paper5.main


if __name__ == "__main__":
    sys.exit(main())
