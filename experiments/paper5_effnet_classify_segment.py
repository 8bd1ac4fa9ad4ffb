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

Both halves run by default. Writes to the run folder: config.json, split.json, table.md (accuracy,
the per-class report and the confusion matrix beside the paper's report; Dice / IoU / HD95 beside the
paper's segmentation table with its audit; the residual U-Net's layer counts), results.json (with the
files that could not be read, and how many), plots/ (training curves, confusion matrix,
misclassified test images, segmentation overlays) and classifier/ and segmenter/ with history.csv,
model.keras, saved_model/, logs/, checkpoints/. See docs/paper5.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__ in (None, "") and "brats_keras" not in sys.modules:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from brats_keras.callbacks import early_stopping_record, plateau_callbacks  # noqa: E402
from brats_keras.configs import make_optimizer  # noqa: E402
from brats_keras.configs.paper5 import (  # noqa: E402
    EXPERIMENT, PAPER_REPORT, PAPER_SEGMENTATION, TASKS, paper5_config,
)
from brats_keras.data.brain_mri import (  # noqa: E402
    CLASS_TITLES, CLASSES, BrainMRICache, ImageItem, discover_brain_mri, ensure_synthetic_brain_mri, split_images,
)
from brats_keras.data.lgg import LGGCache, discover_lgg, ensure_synthetic_lgg, read_lgg_slice  # noqa: E402
from brats_keras.data.pipeline import make_dataset  # noqa: E402
from brats_keras.data.slices2d import resize_images  # noqa: E402
from brats_keras.data.splits import split_cases  # noqa: E402
from brats_keras.data.synthetic import is_synthetic_dataset  # noqa: E402
from brats_keras.errors import BratsKerasError, DataError, cli_errors  # noqa: E402
from brats_keras.evaluation import aggregate, hd95, overlap_counts, scores_from_counts  # noqa: E402
from brats_keras.experiment import (  # noqa: E402
    Default, configure, data_provenance, experiment_parser, finish_run, record_config, resolve_run,
)
from brats_keras.export import export_checked  # noqa: E402
from brats_keras.io import atomic_write_json  # noqa: E402
from brats_keras.losses import BCEDiceLoss  # noqa: E402
from brats_keras.metrics import DiceScore, IoUScore  # noqa: E402
from brats_keras.models import create_model  # noqa: E402
from brats_keras.models.common import imagenet_weights_file, resolve_imagenet_weights  # noqa: E402
from brats_keras.models.paper5 import conv_layer_counts  # noqa: E402
from brats_keras.reporting import (  # noqa: E402
    SYNTHETIC_WARNING, Column, classification_report, classification_report_markdown, comparison_table,
    confusion_matrix, plot_captioned_images, plot_confusion_matrix, plot_curve_panels, plot_image_grid,
)
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy  # noqa: E402

ENCODER_WEIGHTS = {"auto": "auto", "imagenet": "imagenet", "none": None}
CLASSIFY_CURVES = (("loss", "training loss (cross-entropy)"), ("val_loss", "validation loss"),
                   ("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy"))
SEGMENT_CURVES = (("loss", "training loss (BCE + Dice)"), ("val_loss", "validation loss"),
                  ("dice", "training Dice"), ("val_dice", "validation Dice"))
PAPER_COUNTS = {"conv_layers": 23, "residual_blocks": 10}
"""§4.2: "23 convolutional layers, consisting of 10 residual blocks"."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = experiment_parser(EXPERIMENT, __doc__, epochs=Default(50, "Table 2: 50 epochs (classifier)"),
                               batch_size=Default(32, "Table 2: batch size 32 (classifier)"))
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both",
                        help="which half to run: classify, segment, or both (default)")
    parser.add_argument("--lgg-dir", help="the LGG segmentation set (the folder holding kaggle_3m/); --data-dir is "
                        "the classification image set (Training/, Testing/)")
    parser.add_argument("--split", choices=["paper", "folders"],
                        help="classification split: paper (both folders pooled, 70/15/15; default) or folders "
                        "(the release's Testing/ as test, 15 %% of Training/ for validation)")
    parser.add_argument("--image-size", type=int, help="classifier input size (paper profile 240; quick 96)")
    parser.add_argument("--seg-size", type=int, help="segmenter input size (paper profile 256; quick 64)")
    parser.add_argument("--seg-epochs", type=int, help="segmenter epochs (paper: 50 — §4.3)")
    parser.add_argument("--seg-batch-size", type=int, help="segmenter batch size (paper: 32 — §4.2)")
    parser.add_argument("--seg-filters", type=int, help="residual U-Net base filters (paper: 64 → 1024 bottleneck)")
    parser.add_argument("--encoder-weights", choices=list(ENCODER_WEIGHTS), default="auto",
                        help="EfficientNetB1: ImageNet weights if present locally (auto, default; then frozen), "
                        "required (imagenet), or random (none; then trained); nothing is downloaded")
    parser.add_argument("--no-augment", action="store_true", help="train both halves without augmentation")
    return parser.parse_args(argv)


def settle_sources(args) -> tuple[list[str], bool]:
    """The halves to run and whether this is the synthetic quick profile (neither data folder given)."""
    tasks = list(TASKS) if args.task == "both" else [args.task]
    given = {"classify": args.data_dir, "segment": args.lgg_dir}
    real = [t for t in tasks if given[t]]
    if real and len(real) != len(tasks):
        missing = {"classify": "--data-dir (the classification image set)", "segment": "--lgg-dir (the LGG set)"}
        raise BratsKerasError(f"--task {args.task} on real data needs {missing[[t for t in tasks if t not in real][0]]}"
                              "; give every folder the task needs, or none for the synthetic quick profile")
    return tasks, args.quick or not real


# ---------------------------------------------------------------------------------------------- classify
def classifier_note(resolved, requested: str, frozen: bool) -> str:
    """Where the EfficientNetB1 base's weights came from and whether it is frozen (for the log and table)."""
    if resolved == "imagenet":
        state = "frozen, as the paper's" if frozen else "fine-tuned"
        return f"EfficientNetB1 base: ImageNet weights ({imagenet_weights_file('b1')}), {state}."
    why = ("--encoder-weights none" if requested == "none" else
           f"no ImageNet weights at {imagenet_weights_file('b1')} and nothing is downloaded")
    return (f"EfficientNetB1 base: random initialisation ({why}), so it is trained with the head instead of frozen; "
            "the paper's frozen pre-trained base cannot be reproduced here.")


def relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def classification_split(run: RunDir, resume: bool, items: list[ImageItem], mode: str, seed: int, root: Path):
    """The run's classification split: reloaded from ``split.json`` when resuming, else a new one."""
    saved = json.loads(run.split.read_text()).get("classify") if resume and run.split.is_file() else None
    if saved:
        by_path = {relative(it.path, root): it for it in items}
        return {part: [by_path[p] for p in saved[part] if p in by_path] for part in ("train", "val", "test")}
    return split_images(items, mode=mode, seed=seed)


def write_splits(run: RunDir, splits: dict, seed: int) -> None:
    """``split.json``: each half's parts (classification: image files relative to the data folder,
    split by image — the set has no patient ids; segmentation: patient ids), written before training."""
    atomic_write_json(run.split, {"seed": seed, "unit": {"classify": "image file", "segment": "patient"}, **splits})


def stop_callbacks(stop, mode: str) -> list:
    return plateau_callbacks(stop.monitor, mode=mode, reduce_factor=stop.reduce_factor,
                             reduce_patience=stop.reduce_patience, stop_patience=stop.stop_patience)


def run_classification(config, run: RunDir, resume: bool, data_dir: Path, strategy, requested_weights: str,
                       augment: bool, synthetic: bool, splits: dict) -> tuple[dict, dict]:
    settings = config.data.classify
    items = discover_brain_mri(data_dir)
    split = classification_split(run, resume, items, settings.split, config.train.seed, data_dir)
    splits["classify"] = {part: [relative(it.path, data_dir) for it in split[part]] for part in split}
    write_splits(run, splits, config.train.seed)
    cache = BrainMRICache(size=settings.size)
    index = {part: cache.index(split[part]) for part in ("train", "val", "test")}
    skipped = [s for part in index.values() for s in part.skipped]
    for s in skipped:
        print(f"skipped {s['path']}: {s['problem']}", flush=True)
    counts = {part: {c: int(np.sum(index[part].labels == k)) for k, c in enumerate(CLASSES)} for part in index}
    print(f"images: {len(index['train'])} train / {len(index['val'])} val / {len(index['test'])} test at "
          f"{settings.size}²; {len(skipped)} unreadable files skipped", flush=True)
    batch = global_batch_size(config.train.batch_size, strategy)
    train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed,
                            augment=settings.augment if augment else None)
    val_ds = make_dataset(index["val"], batch_size=batch)
    test_ds = make_dataset(index["test"], batch_size=batch)

    resolved = resolve_imagenet_weights(ENCODER_WEIGHTS[requested_weights], "b1")  # warns when absent

    def build():
        keras.utils.set_random_seed(config.train.seed)
        model = create_model(config.model.name, input_shape=(settings.size, settings.size, 3), weights=resolved,
                             num_classes=len(CLASSES), **config.model.options)
        model.compile(optimizer=make_optimizer(config.train), loss="categorical_crossentropy",  # Table 2
                      metrics=["accuracy"])
        return model

    print("\n=== Classifier: EfficientNetB1 + GAP + Dense 512 + Dense 4 ===", flush=True)
    callbacks = stop_callbacks(config.train.stop, mode="max")
    model_run = RunDir.create(run.path / "classifier", EXPERIMENT)
    started = time.perf_counter()
    model, history = fit(build, train_ds, run=model_run, epochs=config.train.epochs, validation_data=val_ds,
                         callbacks=callbacks, strategy=strategy, resume=resume)
    seconds = time.perf_counter() - started
    frozen = not model.get_layer(f"{config.model.name}_base").trainable
    note = classifier_note(resolved, requested_weights, frozen)
    print(note, flush=True)
    probabilities = model.predict(test_ds, verbose=0)
    y_true = index["test"].labels.astype(int)
    y_pred = np.argmax(probabilities, axis=-1)
    report = classification_report(y_true, y_pred, list(CLASSES))
    cm = confusion_matrix(y_true, y_pred, len(CLASSES))
    plot_confusion_matrix(cm, [CLASS_TITLES[c] for c in CLASSES], run.plots / "confusion_matrix.png",
                          synthetic=synthetic, title="Paper 5 — classifier, test images")
    wrong = np.flatnonzero(y_pred != y_true)[: 2 * config.data.overlay_images]
    images = index["test"].gather(wrong)[0] if len(wrong) else []
    plot_captioned_images(
        list(images), [f"{CLASS_TITLES[CLASSES[y_true[i]]]} → {CLASS_TITLES[CLASSES[y_pred[i]]]} "
                       f"({probabilities[i, y_pred[i]]:.2f})" for i in wrong],
        run.plots / "misclassified.png", synthetic=synthetic,
        title=f"Paper 5 — misclassified test images (true → predicted), {len(np.flatnonzero(y_pred != y_true))} in all")
    sample = index["test"].gather(np.arange(min(2, len(index["test"]))))[0]
    entry = {
        "model": config.model.name, "params": int(model.count_params()), "base_frozen": frozen,
        "encoder_weights": resolved or "random", "encoder_note": note,
        "epochs_run": len(history.get("loss", [])), "early_stopping": early_stopping_record(callbacks),
        "train_seconds_this_session": round(seconds, 1), "class_counts": counts,
        "skipped_files": skipped, "skipped_count": len(skipped),
        "accuracy": float(report["accuracy"]), "report": report, "confusion_matrix": cm.tolist(),
        **export_checked(model, model_run.model_keras, model_run.saved_model, sample),
    }
    print(f"classifier: test accuracy {100 * entry['accuracy']:.2f} % on {len(y_true)} images", flush=True)
    return entry, history


# ----------------------------------------------------------------------------------------------- segment
def segmentation_split(run: RunDir, resume: bool, patients: list[str], settings, seed: int) -> dict:
    saved = json.loads(run.split.read_text()).get("segment") if resume and run.split.is_file() else None
    if saved:
        return saved
    return split_cases(sorted(set(patients)), test_fraction=settings.test_fraction,
                       val_fraction=settings.val_fraction, seed=seed)


def slice_scores(pred: np.ndarray, truth: np.ndarray, counts: dict) -> dict:
    """Dice, IoU and HD95 (pixels) of one slice from its ``overlap_counts``; both empty → 1, 1, 0; one
    empty → 0, 0, the diagonal."""
    c = scores_from_counts(**counts)
    return {"dice": c["dsc"], "iou": c["ji"],
            "hd95": hd95(pred, truth, empty_value=float(np.hypot(*truth.shape))), "tumour": bool(truth.any())}


def score_segmentation(probabilities: np.ndarray, truths: list[np.ndarray]) -> dict:
    """Per-slice scores at the source resolution (probabilities resized back, thresholded at 0.5),
    summarised three ways: every test slice (empty slices count 1 when the prediction is empty too),
    tumour slices only, and all test pixels pooled (Dice, IoU)."""
    per_slice, counts = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for prob, truth in zip(probabilities, truths):
        size = truth.shape[0]
        p = prob if prob.shape[0] == size else resize_images(prob[None, :, :, None], size)[0, :, :, 0]
        pred = (p > 0.5).astype(np.uint8)
        c = overlap_counts(pred, truth)
        per_slice.append(slice_scores(pred, truth, c))
        for k, v in c.items():
            counts[k] += v
    metrics = ("dice", "iou", "hd95")
    every = aggregate([{"s": {m: s[m] for m in metrics}} for s in per_slice])["s"]
    tumour = [s for s in per_slice if s["tumour"]]
    with_tumour = aggregate([{"s": {m: s[m] for m in metrics}} for s in tumour])["s"] if tumour else None
    pooled = scores_from_counts(**counts)
    return {"all": {m: every[m]["mean"] for m in metrics}, "all_sd": {m: every[m]["std"] for m in metrics},
            "tumour": None if with_tumour is None else {m: with_tumour[m]["mean"] for m in metrics},
            "pooled": {"dice": pooled["dsc"], "iou": pooled["ji"]}, "slices": len(per_slice),
            "tumour_slices": len(tumour), "per_slice": per_slice}


def run_segmentation(config, run: RunDir, resume: bool, lgg_dir: Path, strategy, augment: bool, synthetic: bool,
                     splits: dict) -> tuple[dict, dict]:
    settings, train = config.data.segment, config.train.segment
    slices, problems = discover_lgg(lgg_dir)
    split = segmentation_split(run, resume, [s.patient for s in slices], settings, config.train.seed)
    splits["segment"] = split
    write_splits(run, splits, config.train.seed)
    cache = LGGCache(size=settings.size)
    index = {part: cache.index([s for s in slices if s.patient in set(split[part])]) for part in ("train", "val", "test")}
    skipped = problems + [s for part in index.values() for s in part.skipped]
    for s in skipped:
        print(f"skipped {s['path']}: {s['problem']}", flush=True)
    print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; slices: "
          f"{len(index['train'])} / {len(index['val'])} / {len(index['test'])} at {settings.size}²; "
          f"{len(skipped)} files skipped", flush=True)
    if not len(index["train"]) or not len(index["test"]):
        raise DataError(f"{len(set(s.patient for s in slices))} patients are too few for a train / test split",
                        path=lgg_dir)
    batch = global_batch_size(train.batch_size, strategy)
    train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed,
                            augment=settings.augment if augment else None)
    val_ds = make_dataset(index["val"], batch_size=batch) if len(index["val"]) else None
    test_ds = make_dataset(index["test"], batch_size=batch)

    def build():
        keras.utils.set_random_seed(config.train.seed)
        model = create_model(train.model.name, input_shape=(settings.size, settings.size, 3), **train.model.options)
        model.compile(optimizer=make_optimizer(train), loss=BCEDiceLoss(),  # §4.3: BCE + Dice
                      metrics=[DiceScore(num_classes=1, name="dice"), IoUScore(num_classes=1, name="iou")])
        return model

    bottleneck = train.model.options.get("filters", 64) * 16
    print(f"\n=== Segmenter: residual U-Net ({bottleneck}-filter bottleneck, sigmoid) ===", flush=True)
    callbacks = stop_callbacks(train.stop, mode="min") if val_ds is not None else []  # they watch val_loss
    model_run = RunDir.create(run.path / "segmenter", EXPERIMENT)
    started = time.perf_counter()
    model, history = fit(build, train_ds, run=model_run, epochs=train.epochs, validation_data=val_ds,
                         callbacks=callbacks, strategy=strategy, resume=resume)
    seconds = time.perf_counter() - started
    probabilities = model.predict(test_ds, verbose=0)[..., 0]
    test_items = [s for s in slices if s.patient in set(split["test"])]
    by_image = {Path(s.image).resolve(): s for s in test_items}
    truths = [read_lgg_slice(by_image[p])[1] for p in index["test"].paths]  # scored at the source size
    scores = score_segmentation(probabilities, truths)
    overlay(run, index["test"], probabilities, config.data.overlay_images, synthetic)
    sample = index["test"].gather(np.arange(min(2, len(index["test"]))))[0]
    entry = {
        "model": train.model.name, "params": int(model.count_params()), "structure": conv_layer_counts(model),
        "epochs_run": len(history.get("loss", [])), "early_stopping": early_stopping_record(callbacks),
        "train_seconds_this_session": round(seconds, 1), "skipped_files": skipped, "skipped_count": len(skipped),
        "test": scores, **export_checked(model, model_run.model_keras, model_run.saved_model, sample),
    }
    print(f"segmenter: test Dice {scores['all']['dice']:.4f} (all slices), "
          f"{'—' if scores['tumour'] is None else format(scores['tumour']['dice'], '.4f')} (tumour slices), "
          f"IoU {scores['all']['iou']:.4f}", flush=True)
    return entry, history


def overlay(run: RunDir, index, probabilities, count: int, synthetic: bool) -> None:
    """Test slices with the largest tumours, one per patient: FLAIR, ground truth, prediction."""
    area = index.targets().reshape(len(index), -1).sum(axis=1)  # masks only: the images are read for the picks
    best: dict[str, int] = {}
    for i, patient in enumerate(index.patients):
        if area[i] and (patient not in best or area[i] > area[best[patient]]):
            best[patient] = i
    picks = sorted(best.values(), key=lambda i: -int(area[i]))[:count] or list(range(min(count, len(index))))
    x, y = index.gather(np.asarray(picks, dtype=np.int64))
    rows = [[(x[k, :, :, 1], None), (x[k, :, :, 1], y[k]), (x[k, :, :, 1], (probabilities[i] > 0.5))]
            for k, i in enumerate(picks)]
    plot_image_grid(rows, ["FLAIR", "ground truth", "prediction"], run.plots / "segmentation_overlay.png",
                    row_titles=[index.patients[i] for i in picks], synthetic=synthetic,
                    title="Paper 5 — residual U-Net on test slices (FLAIR channel)")


# ------------------------------------------------------------------------------------------------ report
def tables(results: dict, synthetic: bool) -> str:
    sections = [SYNTHETIC_WARNING] if synthetic else []
    c = results.get("classify")
    if c:
        sections.append(classification_report_markdown(
            c["report"], PAPER_REPORT, title="Classification report on the test images (§3.4)"))
        sections.append(c["encoder_note"] + f" {c['skipped_count']} unreadable image files were skipped.")
        header = "| true \\ predicted | " + " | ".join(CLASS_TITLES[k] for k in CLASSES) + " |"
        lines = ["### Confusion matrix (test images)", "", header, "|---|" + "---|" * len(CLASSES)]
        lines += [f"| {CLASS_TITLES[CLASSES[i]]} | " + " | ".join(str(v) for v in row) + " |"
                  for i, row in enumerate(c["confusion_matrix"])]
        sections.append("\n".join(lines))
        stop = c["early_stopping"]
        sections.append(f"Classifier: {c['epochs_run']} epochs, "
                        + ("no early stopping." if stop is None else
                           f"early stopping on {stop['monitor']}: best epoch {stop['best_epoch']}"
                           + (f", stopped at {stop['stopped_at']}." if stop["stopped_at"] else ", not triggered.")))
    s = results.get("segment")
    if s:
        t = s["test"]
        rows = [{"set": "every test slice", **t["all"]},
                {"set": "tumour slices only", **(t["tumour"] or {})},
                {"set": "all test pixels pooled", **t["pooled"]}]
        paper = [{"set": "every test slice", "dice": PAPER_SEGMENTATION["dice"], "iou": PAPER_SEGMENTATION["iou"]}]
        sections.append(comparison_table(
            rows, paper, [Column("dice", "Dice"), Column("iou", "IoU"), Column("hd95", "HD95 (px)", 1, 2, in_paper=False)],
            key="set", title="Segmentation on the test patients' slices (§4.4)",
            note=f"{t['slices']} test slices, {t['tumour_slices']} with tumour; scored at the source resolution. "
            "A slice with neither a true nor a predicted tumour scores Dice 1, IoU 1, HD95 0; exactly one empty "
            "scores 0, 0 and the image diagonal. The paper's text gives Dice 0.8477 with the same IoU 0.9981."))
        d, i = t["all"]["dice"], t["all"]["iou"]
        sections.append(
            "### Audit: IoU ≤ Dice\n\nFor any two masks IoU = Dice / (2 − Dice) ≤ Dice, so the paper's IoU 0.9981 "
            "cannot go with Dice 0.9977 (nor with the text's 0.8477, which would give IoU 0.7357). Per-slice means "
            f"keep the inequality: measured Dice {d:.4f}, IoU {i:.4f}. Averaging over every slice, the "
            "tumour-free ones included, pushes both towards 1 when the model predicts nothing on them: compare "
            "the rows above.")
        counts = s["structure"]
        sections.append(
            "### Residual U-Net structure (§4.2: 23 convolutional layers, 10 residual blocks)\n\n"
            "| counted | here | paper |\n|---|---|---|\n"
            f"| residual blocks | {counts['residual_blocks']} | {PAPER_COUNTS['residual_blocks']} |\n"
            f"| 3×3 convolutions + transposed + head | {counts['conv3x3'] + counts['transposed'] + counts['head']} | "
            f"{PAPER_COUNTS['conv_layers']} |\n"
            f"| every convolution (with the {counts['conv1x1_shortcut']} 1×1 shortcut projections) | {counts['total']} | — |")
        stop = s["early_stopping"]
        sections.append(f"Segmenter: {s['epochs_run']} epochs, {s['params']:,} parameters, "
                        + ("no early stopping." if stop is None else
                           f"early stopping on {stop['monitor']}: best epoch {stop['best_epoch']} (its weights "
                           "are the evaluated model's)" + (f", stopped at {stop['stopped_at']}." if stop["stopped_at"]
                                                          else ", not triggered."))
                        + f" {s['skipped_count']} files skipped.")
    return "\n\n".join(sections)


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    tasks, quick = settle_sources(args)
    run = resolve_run(args, EXPERIMENT)
    args.quick = quick
    resume = args.resume is not None
    # --- configuration ---------------------------------------------------------------------
    config = configure(paper5_config(quick=quick), args, {
        "data.classify.size": args.image_size, "data.classify.split": args.split, "data.segment.size": args.seg_size,
        "train.segment.epochs": args.seg_epochs, "train.segment.batch_size": args.seg_batch_size,
    })
    if args.seg_filters is not None:
        config.train.segment.model.options["filters"] = args.seg_filters
    keras.utils.set_random_seed(config.train.seed)

    # --- data -------------------------------------------------------------------------------
    dirs = {}
    if "classify" in tasks:
        c = config.data.classify
        dirs["classify"] = Path(args.data_dir) if args.data_dir else ensure_synthetic_brain_mri(
            per_class=c.synthetic_per_class, test_per_class=c.synthetic_test_per_class, seed=config.train.seed)
    if "segment" in tasks:
        g = config.data.segment
        dirs["segment"] = Path(args.lgg_dir) if args.lgg_dir else ensure_synthetic_lgg(
            patients=g.synthetic_patients, slices=g.synthetic_slices, seed=config.train.seed)
    synthetic = any(is_synthetic_dataset(d) for d in dirs.values())
    config = record_config(run, config, synthetic)
    strategy = select_strategy(config.train.strategy)
    results = {"experiment": EXPERIMENT, "synthetic": synthetic, "data_dirs": {k: str(v) for k, v in dirs.items()},
               "data_provenance": data_provenance(synthetic)}
    splits, histories = {}, {}
    if "classify" in tasks:
        results["classify"], histories["classify"] = run_classification(
            config, run, resume, dirs["classify"], strategy, args.encoder_weights, not args.no_augment, synthetic,
            splits)
    if "segment" in tasks:
        results["segment"], histories["segment"] = run_segmentation(
            config, run, resume, dirs["segment"], strategy, not args.no_augment, synthetic, splits)

    # --- report -----------------------------------------------------------------------------
    if "classify" in histories:
        plot_curve_panels({"EfficientNetB1 classifier": histories["classify"]}, run.plots / "classifier_curves.png",
                          [c for c in CLASSIFY_CURVES if c[0] in histories["classify"]], synthetic=synthetic,
                          title="Paper 5 — classifier training")
    if "segment" in histories:
        plot_curve_panels({"residual U-Net": histories["segment"]}, run.plots / "segmenter_curves.png",
                          [c for c in SEGMENT_CURVES if c[0] in histories["segment"]], synthetic=synthetic,
                          title="Paper 5 — segmenter training")
    finish_run(run, tables(results, synthetic), results, synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
