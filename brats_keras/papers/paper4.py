"""Paper 4's scoring, pre-training stage, tables and figures: Table 3 (DSC, JI, accuracy and the other
measures at the source resolution), the LSTM stage's denoising pre-training and report, the ablation,
the JI ≤ DSC audit, DSC by tumour type, Table 2's image grid.

``experiments/paper4_lstm_effunet.py`` runs the experiment; :func:`tables` turns its ``results.json``
into ``table.md``.
"""

from __future__ import annotations

import keras
import numpy as np

from brats_keras.configs.paper4 import MODEL_TITLES, MODELS, PAPER_TABLE3
from brats_keras.data.figshare import FIGSHARE_LABELS
from brats_keras.data.slices2d import resize_images
from brats_keras.enhancement import corrupt, denoising_report, pretrain_enhancer
from brats_keras.evaluation import aggregate, overlap_counts, scores_from_counts
from brats_keras.export import export_checked, load_model
from brats_keras.io import atomic_write_json, read_json_or_none
from brats_keras.layers import LSTMEnhancer
from brats_keras.models import create_model
from brats_keras.models.paper4 import efficientnet_weights_file
from brats_keras.reporting import Column, comparison_table, plot_curve_panels, plot_image_grid
from brats_keras.training import RunDir

METRICS = ("dice", "iou", "precision", "sensitivity", "accuracy", "f1")
CURVES = (("loss", "training loss (Dice + focal)"), ("val_loss", "validation loss"),
          ("dice", "training DSC"), ("val_dice", "validation DSC"))
EFFICIENTNET_RUNS = ("effunet", "proposed")


def encoder_note(models, resolved, requested: str) -> str:
    """One sentence for the table and the log: where the EfficientNetB0 encoder's weights came from."""
    if not any(key in EFFICIENTNET_RUNS for key in models):
        return ""
    if resolved == "imagenet":
        return f"EfficientNetB0 encoder: ImageNet weights ({efficientnet_weights_file()}), fine-tuned."
    why = ("--encoder-weights none" if requested == "none" else
           f"no ImageNet weights at {efficientnet_weights_file()} and nothing is downloaded")
    return (f"EfficientNetB0 encoder: random initialisation ({why}); the paper fine-tunes a pre-trained backbone, "
            "so the EfficientNet rows are not its method as published.")


def enhancer_layer(model: keras.Model):
    """The ``LSTMEnhancer`` layer of an ``lstm_enhancer`` model."""
    layers = [layer for layer in model.layers if isinstance(layer, LSTMEnhancer)]
    if len(layers) != 1:
        raise ValueError(f"{model.name}: expected one LSTMEnhancer layer, found {len(layers)}")
    return layers[0]


def all_items(index) -> tuple[np.ndarray, np.ndarray]:
    """Every image and mask of an index: ``(N, S, S, 1)`` float32, ``(N, S, S)`` uint8."""
    return index.gather(np.arange(len(index)))


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Tumour probabilities ``(N, S, S)`` float32 at the model's input size."""
    return model.predict(images, batch_size=batch_size, verbose=0)[..., 1].astype(np.float32)


def at_source_size(probabilities: np.ndarray, size: int) -> np.ndarray:
    """One image's tumour probabilities ``(S, S)`` resized bilinearly to the source ``(size, size)``,
    then thresholded at 0.5 (the argmax of two softmax classes): the uint8 mask scored against the
    file's own ``tumorMask``."""
    p = probabilities if probabilities.shape[0] == size else resize_images(probabilities[None, :, :, None], size)[0, :, :, 0]
    return (p > 0.5).astype(np.uint8)


def score_test(probabilities: np.ndarray, truths: list[np.ndarray], labels) -> dict:
    """Paper 4's six metrics on the test slices at their source resolution (the predicted
    probabilities resized back from the model's input size): the mean over the images of each
    image's scores (``mean``, ``sd``), the scores of all test pixels pooled (``pooled``), and the
    per-image DSC per tumour type."""
    per_image, counts = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for prob, truth in zip(probabilities, truths):
        c = overlap_counts(at_source_size(prob, truth.shape[0]), truth)
        per_image.append(scores_from_counts(**c))
        for k in counts:
            counts[k] += c[k]
    summary = aggregate([{"tumour": s} for s in per_image])["tumour"]
    by_type = {}
    for label, name in FIGSHARE_LABELS.items():
        values = [s["dice"] for s, lab in zip(per_image, labels) if int(lab) == label]
        by_type[name] = {"dice": float(np.mean(values)) if values else None, "images": len(values)}
    return {"mean": {m: summary[m]["mean"] for m in METRICS}, "sd": {m: summary[m]["std"] for m in METRICS},
            "pooled": scores_from_counts(**counts), "pooled_counts": counts, "by_type": by_type,
            "images": len(per_image), "per_image": per_image}


def pretrain_stage(config, run, resume: bool, size: int, train_images, val_images, test_images) -> tuple:
    """Pre-train the LSTM stage as a denoiser (or reload it when resuming); returns it and its record:
    the pre-training history and the denoising report on the held-out test images."""
    settings = config.train.enhancer
    folder = run.path / "enhancer"
    path, history_path = folder / "model.keras", folder / "pretrain_history.json"
    if resume and path.is_file() and history_path.is_file():
        print(f"LSTM stage: reusing the pre-trained enhancer {path}", flush=True)
        enhancer, history = load_model(path), read_json_or_none(history_path) or {}
    else:
        enhancer = create_model("lstm_enhancer", input_shape=(size, size, 1),
                                units=config.models["proposed"].options.enhancer_units)
        history = {}
        if settings.pretrain_epochs:
            print(f"\n=== LSTM stage: denoising pre-training, RMSprop, {settings.pretrain_epochs} epochs ===", flush=True)
            history = pretrain_enhancer(enhancer, train_images, val_images, noise=settings.noise,
                                        epochs=settings.pretrain_epochs, batch_size=config.train.batch_size,
                                        learning_rate=settings.pretrain_learning_rate, seed=config.train.seed)
        folder.mkdir(parents=True, exist_ok=True)
        export_checked(enhancer, path, None, test_images[:2])
        atomic_write_json(history_path, history)  # written last: marks the stage done for --resume
    report = denoising_report(enhancer, test_images, noise=settings.noise, seed=config.train.seed)
    print(f"LSTM stage on the test images: PSNR noisy {report['noisy_psnr_db']:.2f} dB → enhanced "
          f"{report['enhanced_psnr_db']:.2f} dB ({report['psnr_gain_db']:+.2f} dB)", flush=True)
    return enhancer, {"report": report, "history": history, "params": int(enhancer.count_params())}


def table3_row(key: str, entry: dict) -> dict:
    stop = entry["early_stopping"]
    row = {"model": MODEL_TITLES[key], "images": entry["test"]["images"], "epochs": entry["epochs_run"],
           "early_stop": "off" if stop is None else f"epoch {stop['stopped_at']} (best {stop['best_epoch']})"
           if stop["stopped_at"] else f"not triggered (best {stop['best_epoch']})"}
    row.update({m: entry["test"]["mean"][m] for m in METRICS})
    row.update({f"pooled_{m}": entry["test"]["pooled"][m] for m in ("dice", "iou")})
    return row


def tables(results: dict) -> str:
    """table.md: Table 3 beside the paper's, the ablation, the LSTM stage's denoising, the audit."""
    runs = results["models"]
    sections = []
    paper_rows = [{"model": MODEL_TITLES[k], **v} for k, v in PAPER_TABLE3.items()]
    columns = [Column("dice", "DSC (%)", 100, 2), Column("iou", "JI (%)", 100, 2), Column("accuracy", "accuracy (%)", 100, 2),
               Column("precision", "precision (%)", 100, 2, in_paper=False),
               Column("sensitivity", "recall (%)", 100, 2, in_paper=False), Column("f1", "F1 (%)", 100, 2, in_paper=False),
               Column("pooled_dice", "DSC pooled (%)", 100, 2, in_paper=False),
               Column("pooled_iou", "JI pooled (%)", 100, 2, in_paper=False),
               Column("images", "test images", 1, 0, in_paper=False), Column("epochs", "epochs run", 1, 0, in_paper=False),
               Column("early_stop", "early stopping", in_paper=False)]
    sections.append(comparison_table(
        [table3_row(k, runs[k]) for k in MODELS if k in runs], paper_rows, columns, key="model",
        title="Table 3 — DSC, JI and accuracy on the test patients' slices",
        note="Measured: the mean over the test images of each image's score, tumour vs background, at the "
        "slice's source resolution (the softmax resized back from the model's input size, then the argmax), "
        "against the file's tumorMask; *pooled*: the same formulas on all test pixels at once. The ablation "
        "row (the proposed network without its LSTM stage) is not in the paper. " + results["encoder_note"],
    ))
    if "effunet" in runs and "proposed" in runs:
        with_lstm, without = runs["proposed"]["test"]["mean"], runs["effunet"]["test"]["mean"]
        sections.append(
            "### LSTM ablation\n\n"
            f"DSC with the LSTM stage {100 * with_lstm['dice']:.2f} %, without {100 * without['dice']:.2f} % "
            f"(difference {100 * (with_lstm['dice'] - without['dice']):+.2f} points); JI {100 * with_lstm['iou']:.2f} % vs "
            f"{100 * without['iou']:.2f} %. Both models start from the same network (the run's seed; the untrained "
            "LSTM stage is the identity, then it gets its denoising pre-training) and see the same split, augmentation "
            "and schedule. One run of each: docs/paper4.md shows how far such differences move between seeds.")
    enh = results.get("enhancer")
    if enh:
        r = enh["report"]
        sections.append(
            "### LSTM stage as a denoiser (held-out test images)\n\n"
            "| | MSE | PSNR (dB) |\n|---|---|---|\n"
            f"| noisy input vs clean | {r['noisy_mse']:.6f} | {r['noisy_psnr_db']:.2f} |\n"
            f"| enhanced vs clean | {r['enhanced_mse']:.6f} | {r['enhanced_psnr_db']:.2f} |\n\n"
            f"Noise: {results['noise']['kind']}, σ drawn per image from {100 * results['noise']['sigma'][0]:g}–"
            f"{100 * results['noise']['sigma'][1]:g} % of its robust maximum. The proposed model starts from these "
            "weights and fine-tunes them end to end.")
    audit = ["### Audit: JI ≤ DSC (and F1 = DSC)", "",
             "For any pair of masks JI = DSC / (2 − DSC) ≤ DSC, and F1 (the harmonic mean of precision and recall) "
             "equals DSC. The paper's U-Net row has JI 84.2 > DSC 83.45, which no segmentation can produce. "
             "Measured pairs (pooled over the test pixels, where the identity is exact):", "",
             "| model | DSC | JI | DSC / (2 − DSC) | F1 |", "|---|---|---|---|---|"]
    for key in MODELS:
        if key in runs:
            p = runs[key]["test"]["pooled"]
            audit.append(f"| {MODEL_TITLES[key]} | {p['dice']:.4f} | {p['iou']:.4f} | "
                         f"{p['dice'] / (2 - p['dice']):.4f} | {p['f1']:.4f} |")
    sections.append("\n".join(audit))
    by_type = ["### DSC by tumour type (mean over test images)", "",
               "| model | " + " | ".join(FIGSHARE_LABELS.values()) + " |",
               "|---|" + "---|" * len(FIGSHARE_LABELS)]
    for key in MODELS:
        if key in runs:
            cells = []
            for name in FIGSHARE_LABELS.values():
                t = runs[key]["test"]["by_type"][name]
                cells.append("—" if t["dice"] is None else f"{100 * t['dice']:.2f} ({t['images']})")
            by_type.append(f"| {MODEL_TITLES[key]} | " + " | ".join(cells) + " |")
    sections.append("\n".join(by_type))
    return "\n\n".join(sections)


def showcase_slices(masks, pids, labels, count: int) -> list[int]:
    """Up to ``count`` test slices for the figures: each patient's slice with the largest tumour,
    taking the tumour types in turn (meningioma, glioma, pituitary), largest tumours first."""
    best: dict[str, int] = {}
    for i, pid in enumerate(pids):
        if pid not in best or masks[i].sum() > masks[best[pid]].sum():
            best[pid] = i
    queues = {label: sorted((i for i in best.values() if int(labels[i]) == label), key=lambda i: -int(masks[i].sum()))
              for label in FIGSHARE_LABELS}
    picks = []
    while len(picks) < count and any(queues.values()):
        for label in FIGSHARE_LABELS:
            if queues[label] and len(picks) < count:
                picks.append(queues[label].pop(0))
    return picks


def figures(run: RunDir, results: dict, histories: dict, test_images, test_masks, pids, labels, predictions: dict,
            enhanced, enhancer, noise, seed: int, count: int, synthetic: bool) -> None:
    """Training curves, Table 2's grid and the LSTM stage's before/after figure."""
    plot_curve_panels(histories, run.plots / "training_curves.png", CURVES, synthetic=synthetic,
                      title="Paper 4 — training of the Table 3 models")
    picks = showcase_slices(test_masks, pids, labels, count)
    columns = ["MRI image"] + (["LSTM-enhanced image"] if enhanced is not None else []) + ["ground truth"]
    columns += [MODEL_TITLES[k].split(" (")[0].split(",")[0] for k in predictions]
    rows = []
    for i in picks:
        row = [(test_images[i], None)] + ([(enhanced[i], None)] if enhanced is not None else [])
        row += [(test_images[i], test_masks[i])] + [(test_images[i], predictions[k][i]) for k in predictions]
        rows.append(row)
    row_titles = [f"{FIGSHARE_LABELS[int(labels[i])]}, PID {pids[i]}" for i in picks]
    plot_image_grid(rows, columns, run.plots / "table2_segmentations.png", row_titles=row_titles, synthetic=synthetic,
                    title="Paper 4, Table 2 — test slices: image, LSTM-enhanced image, ground truth, predictions")
    if enhancer is not None:

        clean = test_images[picks]
        noisy = corrupt(clean, noise, np.random.default_rng(seed))
        denoised = enhancer.predict(noisy, verbose=0)
        rows = [[(c, None), (n, None), (d, None), (np.abs(d - n), None)] for c, n, d in zip(clean, noisy, denoised)]
        plot_image_grid(rows, ["clean", "noisy input", "LSTM stage output", "|correction|"],
                        run.plots / "enhancer_denoising.png", row_titles=row_titles, synthetic=synthetic,
                        title="Paper 4 — the pre-trained LSTM stage on held-out test slices")
