"""Paper 5's splits, scoring, tables and figures: the classification report and confusion matrix, the
segmentation scores over every slice / tumour slices / pooled pixels with the IoU ≤ Dice audit, the
residual U-Net's layer counts, and Table 1's image counts.

``experiments/paper5_effnet_classify_segment.py`` runs the experiment; :func:`tables` turns its
``results.json`` into ``table.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from brats_keras.callbacks import plateau_callbacks
from brats_keras.configs.paper5 import PAPER_REPORT, PAPER_SEGMENTATION, PAPER_TABLE1, TASKS
from brats_keras.data.brain_mri import (
    CLASS_TITLES, CLASSES, BrainMRICache, ImageItem, discover_brain_mri, split_images,
)
from brats_keras.data.lgg import LGGCache, discover_lgg, read_lgg_slice
from brats_keras.data.slices2d import resize_images
from brats_keras.data.splits import split_cases
from brats_keras.errors import BratsKerasError, DataError
from brats_keras.evaluation import (
    aggregate, classification_report, confusion_matrix, hd95, overlap_counts, scores_from_counts,
)
from brats_keras.io import atomic_write_json
from brats_keras.labels import LGG_SLICES
from brats_keras.models.common import imagenet_weights_file
from brats_keras.reporting import (
    Column, classification_report_markdown, comparison_table, plot_captioned_images, plot_confusion_matrix,
    plot_curve_panels, plot_image_grid,
)
from brats_keras.training import RunDir

PAPER_COUNTS = {"conv_layers": 23, "residual_blocks": 10}
"""§4.2: "23 convolutional layers, consisting of 10 residual blocks"."""


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


def classification_data(run: RunDir, resume: bool, root: Path, settings, seed: int, splits: dict):
    """The classification half's data: the images of ``root`` split (or the saved split reloaded), written
    to ``split.json`` (``splits["classify"]``), decoded once (:class:`BrainMRICache`). Returns the index of
    each part and the record of the data for ``results.json``: images per class and part, the release
    folders' counts (Table 1), the files that could not be read."""
    items = discover_brain_mri(root)
    split = classification_split(run, resume, items, settings.split, seed, root)
    splits["classify"] = {part: [relative(it.path, root) for it in split[part]] for part in split}
    write_splits(run, splits, seed)
    cache = BrainMRICache(size=settings.size)
    index = {part: cache.index(split[part]) for part in ("train", "val", "test")}
    skipped = [s for part in index.values() for s in part.skipped]
    for s in skipped:
        print(f"skipped {s['path']}: {s['problem']}", flush=True)
    unreadable = {str(Path(s["path"]).resolve()) for s in skipped}
    readable = [it for it in items if str(Path(it.path).resolve()) not in unreadable]
    record = {"class_counts": {part: {n: int(np.sum(index[part].labels == k)) for k, n in enumerate(CLASSES)}
                               for part in index},
              "release_counts": {part: {n: sum(1 for it in readable if it.part == part and it.label == k)
                                        for k, n in enumerate(CLASSES)} for part in ("Training", "Testing")},
              "skipped_files": skipped, "skipped_count": len(skipped)}
    print(f"images: {len(index['train'])} train / {len(index['val'])} val / {len(index['test'])} test at "
          f"{settings.size}²; {len(skipped)} unreadable files skipped", flush=True)
    return index, record


CURVES = {"classifier": (("loss", "training loss (cross-entropy)"), ("val_loss", "validation loss"),
                         ("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy")),
          "segmenter": (("loss", "training loss (BCE + Dice)"), ("val_loss", "validation loss"),
                        ("dice", "training Dice"), ("val_dice", "validation Dice"))}
CURVE_TITLES = {"classifier": ("EfficientNetB1 classifier", "classifier"), "segmenter": ("residual U-Net", "segmenter")}


def synthetic_profile(task: str | None, folders: dict, quick: bool) -> bool:
    """Whether the run is the synthetic quick profile: ``--quick``, or no data folder given for the halves
    run (``folders``: ``{"classify": --data-dir, "segment": --lgg-dir}``). Real data must cover every
    half run: ``BratsKerasError`` naming the missing flag otherwise."""
    tasks = list(TASKS) if task in (None, "both") else [task]
    real = [t for t in tasks if folders[t]]
    if real and len(real) != len(tasks):
        missing = {"classify": "--data-dir (the classification image set)", "segment": "--lgg-dir (the LGG set)"}
        raise BratsKerasError(f"--task {task} on real data needs {missing[[t for t in tasks if t not in real][0]]}"
                              "; give every folder the task needs, or none for the synthetic quick profile")
    return bool(quick or not real)


def stop_callbacks(stop, mode: str) -> list:
    """The LR plateau and early stopping of one half (:class:`~brats_keras.configs.paper5.StopSettings`)."""
    return plateau_callbacks(stop.monitor, mode=mode, reduce_factor=stop.reduce_factor,
                             reduce_patience=stop.reduce_patience, stop_patience=stop.stop_patience)


def score_classifier(run: RunDir, test, probabilities: np.ndarray, count: int, synthetic: bool) -> dict:
    """The classifier's test accuracy, classification report and confusion matrix (``results.json``), with
    the confusion-matrix and misclassified-images figures."""
    y_true, y_pred = test.labels.astype(int), np.argmax(probabilities, axis=-1)
    report, cm = classification_report(y_true, y_pred, list(CLASSES)), confusion_matrix(y_true, y_pred, len(CLASSES))
    classifier_figures(run, test, probabilities, y_true, y_pred, cm, count, synthetic)
    return {"accuracy": float(report["accuracy"]), "report": report, "confusion_matrix": cm.tolist()}


def score_segmenter(run: RunDir, test, probabilities: np.ndarray, slices, test_patients, count: int,
                    synthetic: bool) -> dict:
    """The segmenter's test scores at the source resolution (:func:`score_segmentation`; the masks are
    read again from ``slices``, the LGG set as found) and the overlay figure."""
    by_image = {Path(s.image).resolve(): s for s in slices if s.patient in set(test_patients)}
    truths = [read_lgg_slice(by_image[p])[1] for p in test.paths]
    overlay(run, test, probabilities, count, synthetic)
    return score_segmentation(probabilities, truths)


def curves(run: RunDir, histories: dict, synthetic: bool) -> None:
    """One training-curves PNG per trained half."""
    for key, history in histories.items():
        title, short = CURVE_TITLES[key]
        plot_curve_panels({title: history}, run.plots / f"{short}_curves.png",
                          [c for c in CURVES[key] if c[0] in history], synthetic=synthetic,
                          title=f"Paper 5 — {short} training")


def classifier_figures(run: RunDir, test, probabilities, y_true, y_pred, cm, count: int, synthetic: bool) -> None:
    """The confusion matrix and up to ``2 · count`` misclassified test images with their captions."""
    plot_confusion_matrix(cm, [CLASS_TITLES[k] for k in CLASSES], run.plots / "confusion_matrix.png",
                          synthetic=synthetic, title="Paper 5 — classifier, test images")
    wrong = np.flatnonzero(y_pred != y_true)
    shown = wrong[: 2 * count]
    plot_captioned_images(
        list(test.gather(shown)[0]) if len(shown) else [],
        [f"{CLASS_TITLES[CLASSES[y_true[i]]]} → {CLASS_TITLES[CLASSES[y_pred[i]]]} ({probabilities[i, y_pred[i]]:.2f})"
         for i in shown], run.plots / "misclassified.png", synthetic=synthetic,
        title=f"Paper 5 — misclassified test images (true → predicted), {len(wrong)} in all")


def segmentation_data(run: RunDir, resume: bool, root: Path, settings, seed: int, splits: dict):
    """The segmentation half's data: the LGG slices of ``root`` split by patient (or the saved split), written
    to ``split.json`` (``splits["segment"]``), decoded once (:class:`LGGCache`). Returns the slices, the
    split, the index of each part and the record for ``results.json`` (slices with / without tumour per
    part, the files skipped). Raises ``DataError`` when the train or test part is empty."""
    slices, problems = discover_lgg(root)
    split = segmentation_split(run, resume, [s.patient for s in slices], settings, seed)
    splits["segment"] = split
    write_splits(run, splits, seed)
    cache = LGGCache(size=settings.size)
    index = {part: cache.index([s for s in slices if s.patient in set(split[part])]) for part in ("train", "val", "test")}
    skipped = problems + [s for part in index.values() for s in part.skipped]
    for s in skipped:
        print(f"skipped {s['path']}: {s['problem']}", flush=True)
    print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; slices: "
          f"{len(index['train'])} / {len(index['val'])} / {len(index['test'])} at {settings.size}²; "
          f"{len(skipped)} files skipped", flush=True)
    if not len(index["train"]) or not len(index["test"]):
        raise DataError(f"{len(set(s.patient for s in slices))} patients are too few for a train / test split", path=root)
    tumour = {part: index[part].targets().reshape(len(index[part]), -1).any(axis=1) for part in index}
    present, absent = LGG_SLICES[1].key, LGG_SLICES[0].key  # "tumour present", "no tumour"
    record = {"tumour_counts": {part: {present: int(t.sum()), absent: int((~t).sum())} for part, t in tumour.items()},
              "skipped_files": skipped, "skipped_count": len(skipped)}
    return slices, split, index, record


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
    return {"dice": c["dice"], "iou": c["iou"],
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
            "pooled": {"dice": pooled["dice"], "iou": pooled["iou"]}, "slices": len(per_slice),
            "tumour_slices": len(tumour), "per_slice": per_slice}


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
def table1(results: dict) -> str:
    """Table 1 beside the paper's: images per class (classification: the release's Training / Testing
    folders as found) and slices with / without tumour (segmentation: this run's train + val / test),
    with this run's train / val / test split of each."""
    rows, paper = [], []
    c, s = results["models"].get("classifier"), results["models"].get("segmenter")
    if c:
        for k, name in enumerate(CLASSES):
            counts = {part: c["class_counts"][part][name] for part in ("train", "val", "test")}
            rows.append({"set": "classification", "class": CLASS_TITLES[name], **counts,
                         "training": c["release_counts"]["Training"][name],
                         "testing": c["release_counts"]["Testing"][name]})
            paper.append({"set": "classification", "class": CLASS_TITLES[name],
                          **dict(zip(("training", "testing"), PAPER_TABLE1["classify"][name]))})
    if s:
        for name in PAPER_TABLE1["segment"]:
            counts = {part: s["tumour_counts"][part][name] for part in ("train", "val", "test")}
            rows.append({"set": "segmentation", "class": name, **counts,
                         "training": counts["train"] + counts["val"], "testing": counts["test"]})
            paper.append({"set": "segmentation", "class": name,
                          **dict(zip(("training", "testing"), PAPER_TABLE1["segment"][name]))})
    if not rows:
        return ""
    return comparison_table(
        rows, paper, [Column("training", "Training", 1, 0), Column("testing", "Testing", 1, 0),
                      Column("train", "train", 1, 0, in_paper=False), Column("val", "val", 1, 0, in_paper=False),
                      Column("test", "test", 1, 0, in_paper=False)],
        key=("set", "class"), title="Table 1 — images per class and split",
        note="Classification: *Training* / *Testing* count the release's two folders as read (unreadable files "
        "excluded); train / val / test are this run's split. Segmentation: slices with and without a tumour in "
        "the mask; the paper's Training / Testing is its own split, here train + val / test by patient. The "
        "paper's \"Dataset After\" rows (after augmentation) have no counterpart.")


def tables(results: dict) -> str:
    sections = []
    first = table1(results)
    if first:
        sections.append(first)
    c = results["models"].get("classifier")
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
    s = results["models"].get("segmenter")
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
