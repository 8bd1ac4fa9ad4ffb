"""Paper 5 — EfficientNetB1 4-class classifier and residual U-Net segmenter.

    python experiments/paper5_effnet_classify_segment.py                       # quick profile, synthetic data
    python experiments/paper5_effnet_classify_segment.py --data-dir brain-tumor-mri --lgg-dir lgg-mri-segmentation
    python experiments/paper5_effnet_classify_segment.py --task classify --data-dir brain-tumor-mri --split folders
    python experiments/paper5_effnet_classify_segment.py --task segment --lgg-dir lgg-mri-segmentation

Classification (--task classify): the brain-tumour MRI image set (Training/ and Testing/ folders of
glioma, meningioma, notumor, pituitary images), a 70/15/15 class-stratified split of both folders
pooled (the paper; --split folders keeps the release's Testing/ as the test set), EfficientNetB1
(frozen when its ImageNet weights are present locally, trained otherwise), GAP, Dense 512, dropout
0.4, Dense 4 softmax; Adam 1e-3 with weight decay 1e-4, batch 32, 50 epochs, early stopping on the
validation accuracy, LR × 0.3 after 2 epochs without improvement, rotation / flip / zoom augmentation.

Segmentation (--task segment): the LGG FLAIR set (kaggle_3m/<patient>/<patient>_<k>.tif and _mask.tif),
split by patient, the paper's residual U-Net (3×3 kernels, 1024-filter bottleneck, BN + ReLU, one
sigmoid filter), BCE + Dice, Adam 1e-4 with weight decay 1e-4, batch 32, early stopping on the
validation loss keeping the best model.

Both halves run by default. Writes to the run folder: config.json, split.json, table.md (Table 1's
image counts, accuracy, the per-class report and the confusion matrix beside the paper's report; Dice /
IoU / HD95 beside the paper's segmentation table with its audit; the residual U-Net's layer counts),
results.json (with the files that could not be read, and how many), plots/ (training curves, confusion
matrix, misclassified test images, segmentation overlays) and classifier/ and segmenter/ with
history.csv, model.keras, saved_model/, logs/, checkpoints/. See docs/paper5.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import brats_keras  # noqa: F401  (first: it quiets TensorFlow's start-up on a machine without a GPU)
import keras
import numpy as np

from brats_keras.callbacks import early_stopping_record, plateau_callbacks
from brats_keras.configs.base import make_loss, make_metrics, make_model, make_optimizer
from brats_keras.configs.paper5 import EXPERIMENT, TASKS, paper5_config
from brats_keras.data.brain_mri import CLASSES, ensure_synthetic_brain_mri
from brats_keras.data.lgg import ensure_synthetic_lgg, read_lgg_slice
from brats_keras.data.pipeline import make_dataset
from brats_keras.errors import BratsKerasError
from brats_keras.models.common import resolve_imagenet_weights
from brats_keras.models.paper5 import conv_layer_counts
from brats_keras.papers.paper5 import (
    classification_data, classifier_figures, classifier_note, overlay, score_segmentation, segmentation_data, tables,
)
from brats_keras.evaluation import classification_report, confusion_matrix
from brats_keras.reporting import plot_curve_panels
from brats_keras.runner import Experiment, Flag, ModelRun

ENCODER_WEIGHTS = {"auto": "auto", "imagenet": "imagenet", "none": None}
CURVES = {"classifier": (("loss", "training loss (cross-entropy)"), ("val_loss", "validation loss"),
                         ("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy")),
          "segmenter": (("loss", "training loss (BCE + Dice)"), ("val_loss", "validation loss"),
                        ("dice", "training Dice"), ("val_dice", "validation Dice"))}
CURVE_TITLES = {"classifier": ("EfficientNetB1 classifier", "classifier"), "segmenter": ("residual U-Net", "segmenter")}


class Paper5(Experiment):
    name = EXPERIMENT
    tables = staticmethod(tables)
    factory = staticmethod(paper5_config)
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
             choices=list(ENCODER_WEIGHTS), default="auto"),
        Flag("--no-augment", None, "train both halves without augmentation", kind="switch"),
    )

    def quick(self, args):
        """Synthetic quick profile when neither data folder is given; real data must cover every half run."""
        tasks = list(TASKS) if args.task in (None, "both") else [args.task]
        given = {"classify": args.data_dir, "segment": args.lgg_dir}
        real = [t for t in tasks if given[t]]
        if real and len(real) != len(tasks):
            missing = {"classify": "--data-dir (the classification image set)", "segment": "--lgg-dir (the LGG set)"}
            raise BratsKerasError(f"--task {args.task} on real data needs {missing[[t for t in tasks if t not in real][0]]}"
                                  "; give every folder the task needs, or none for the synthetic quick profile")
        return bool(args.quick or not real)

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
        test_ds = make_dataset(index["test"], batch_size=ctx.batch())
        weights = resolve_imagenet_weights(ENCODER_WEIGHTS[ctx.option["encoder_weights"]], "b1")  # warns when absent
        callbacks = self.stop_callbacks(c.train.stop, mode="max")

        def build() -> keras.Model:
            keras.utils.set_random_seed(c.train.seed)
            model = make_model(c.models["classifier"], input_shape=(settings.size, settings.size, 3), weights=weights)
            model.compile(optimizer=make_optimizer(c.train), loss=make_loss(c.train.loss),
                          metrics=make_metrics(c.train.metrics))
            return model

        def score(model, history) -> dict:
            frozen = not model.get_layer(f"{model.name}_base").trainable
            note = classifier_note(weights, ctx.option["encoder_weights"], frozen)
            print(note, flush=True)
            probabilities = model.predict(test_ds, verbose=0)
            y_true, y_pred = index["test"].labels.astype(int), np.argmax(probabilities, axis=-1)
            report, cm = classification_report(y_true, y_pred, list(CLASSES)), confusion_matrix(y_true, y_pred, len(CLASSES))
            classifier_figures(ctx.run, index["test"], probabilities, y_true, y_pred, cm, c.data.overlay_images,
                               ctx.synthetic)
            d.histories["classifier"] = history
            return {"model": c.models["classifier"].name, "base_frozen": frozen, "encoder_weights": weights or "random",
                    "encoder_note": note, "early_stopping": early_stopping_record(callbacks), **data,
                    "accuracy": float(report["accuracy"]), "report": report, "confusion_matrix": cm.tolist()}

        return ModelRun(
            key="classifier", title="Classifier: EfficientNetB1 + GAP + Dense 512 + Dense 4", build=build,
            train=make_dataset(index["train"], batch_size=ctx.batch(), shuffle=True, seed=c.train.seed, augment=augment),
            validation=make_dataset(index["val"], batch_size=ctx.batch()), callbacks=callbacks, score=score,
            sample=lambda: index["test"].gather(np.arange(min(2, len(index["test"]))))[0],
            summary=lambda e: f"classifier: test accuracy {100 * e['accuracy']:.2f} % on {len(index['test'])} images")

    # --------------------------------------------------------------------------------------- segment
    def segmenter(self, ctx) -> ModelRun:
        c, d, settings, train = ctx.config, ctx.data, ctx.config.data.segment, ctx.config.train.segment
        slices, split, index, data = segmentation_data(ctx.run, ctx.resume, ctx.dirs["segment"], settings,
                                                       c.train.seed, d.splits)
        augment = None if ctx.option["no_augment"] else settings.augment
        val_ds = make_dataset(index["val"], batch_size=ctx.batch(train.batch_size)) if len(index["val"]) else None
        test_ds = make_dataset(index["test"], batch_size=ctx.batch(train.batch_size))
        callbacks = self.stop_callbacks(train.stop, mode="min") if val_ds is not None else []  # they watch val_loss

        def build() -> keras.Model:
            keras.utils.set_random_seed(c.train.seed)
            model = make_model(c.models["segmenter"], input_shape=(settings.size, settings.size, 3))
            model.compile(optimizer=make_optimizer(train), loss=make_loss(train.loss),
                          metrics=make_metrics(train.metrics))
            return model

        def score(model, history) -> dict:
            probabilities = model.predict(test_ds, verbose=0)[..., 0]
            by_image = {Path(s.image).resolve(): s for s in slices if s.patient in set(split["test"])}
            truths = [read_lgg_slice(by_image[p])[1] for p in index["test"].paths]  # scored at the source size
            scores = score_segmentation(probabilities, truths)
            overlay(ctx.run, index["test"], probabilities, c.data.overlay_images, ctx.synthetic)
            d.histories["segmenter"] = history
            return {"model": c.models["segmenter"].name, "structure": conv_layer_counts(model),
                    "early_stopping": early_stopping_record(callbacks), **data, "test": scores}

        bottleneck = c.models["segmenter"].options.filters * 2 ** 4  # four poolings (§4.2)
        return ModelRun(
            key="segmenter", title=f"Segmenter: residual U-Net ({bottleneck}-filter bottleneck, sigmoid)", build=build,
            train=make_dataset(index["train"], batch_size=ctx.batch(train.batch_size), shuffle=True, seed=c.train.seed,
                               augment=augment),
            validation=val_ds, epochs=train.epochs, callbacks=callbacks, score=score,
            sample=lambda: index["test"].gather(np.arange(min(2, len(index["test"]))))[0],
            summary=lambda e: f"segmenter: test Dice {e['test']['all']['dice']:.4f} (all slices), "
            f"{'—' if e['test']['tumour'] is None else format(e['test']['tumour']['dice'], '.4f')} (tumour slices), "
            f"IoU {e['test']['all']['iou']:.4f}")

    @staticmethod
    def stop_callbacks(stop, mode: str) -> list:
        return plateau_callbacks(stop.monitor, mode=mode, reduce_factor=stop.reduce_factor,
                                 reduce_patience=stop.reduce_patience, stop_patience=stop.stop_patience)

    # ---------------------------------------------------------------------------------------- report
    def figures(self, ctx):
        for key, history in ctx.data.histories.items():
            title, short = CURVE_TITLES[key]
            plot_curve_panels({title: history}, ctx.run.plots / f"{short}_curves.png",
                              [c for c in CURVES[key] if c[0] in history], synthetic=ctx.synthetic,
                              title=f"Paper 5 — {short} training")

main = Paper5.main


if __name__ == "__main__":
    sys.exit(main())
