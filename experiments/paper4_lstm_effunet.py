"""Paper 4 — LSTM pre-processing and a fine-tuned EfficientNet attention U-Net on the figshare set.

    python experiments/paper4_lstm_effunet.py                                  # quick profile, synthetic data
    python experiments/paper4_lstm_effunet.py --data-dir brain_tumor_dataset   # the paper's profile
    python experiments/paper4_lstm_effunet.py --data-dir ... --models unet proposed

Segments the tumour in the figshare T1ce slices (MATLAB v7.3 .mat files, split by patient ID) with
the four models of the paper's Table 3 — U-Net, Attention U-Net, Res Attention U-Net and the proposed
LSTM enhancer + EfficientNetB0 attention U-Net — plus the proposed network without its LSTM stage
(the ablation). Every model: Table 1's settings (24 filters, Leaky-ReLU, max-pool 3 / stride 2,
dropout 0.5, batch 8), AdamW at 1e-4 with ReduceLROnPlateau, Dice + focal loss, augmentation
(rotation, flips, zoom, elastic) in the tf.data pipeline. The LSTM stage is first pre-trained as a
denoiser (RMSprop, noise-corrupted training images), then fine-tuned end to end with the U-Net.

Writes to the run folder: config.json, split.json (patient IDs), table.md (Table 3 with the paper's
and the measured DSC / JI / accuracy, precision / recall / F1, the ablation, the enhancer's denoising
and the JI ≤ DSC audit), results.json, plots/ (training curves, Table 2's image / LSTM-enhanced /
ground truth / prediction grid, the enhancer before/after figure) and per model <name>/{history.csv,
model.keras, saved_model/, logs/, checkpoints/}; enhancer/ holds the pre-trained LSTM stage.
See docs/paper4.md.
"""

from __future__ import annotations

import argparse
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
from brats_keras.configs.paper4 import (  # noqa: E402
    EXPERIMENT, MODEL_TITLES, MODELS, PAPER_TABLE3, paper4_config,
)
from brats_keras.data.figshare import (  # noqa: E402
    FIGSHARE_LABELS, FigshareCache, FigshareIndex, discover_figshare, ensure_synthetic_figshare, patient_tumour_types,
    read_figshare_mat, read_figshare_metas,
)
from brats_keras.data.pipeline import make_dataset  # noqa: E402
from brats_keras.data.synthetic import is_synthetic_dataset  # noqa: E402
from brats_keras.enhancement import corrupt, denoising_report, pretrain_enhancer  # noqa: E402
from brats_keras.errors import DataError, cli_errors  # noqa: E402
from brats_keras.data.slices2d import resize_images  # noqa: E402
from brats_keras.evaluation import aggregate, overlap_counts, scores_from_counts  # noqa: E402
from brats_keras.experiment import (  # noqa: E402
    Default, configure, data_provenance, experiment_parser, finish_run, patient_split, record_config, resolve_run,
)
from brats_keras.export import export_checked, load_model  # noqa: E402
from brats_keras.io import atomic_write_json, read_json_or_none  # noqa: E402
from brats_keras.layers import LSTMEnhancer  # noqa: E402
from brats_keras.losses import DiceFocalLoss  # noqa: E402
from brats_keras.metrics import DiceScore, IoUScore, Precision, Sensitivity  # noqa: E402
from brats_keras.models import create_model  # noqa: E402
from brats_keras.models.paper4 import efficientnet_weights_file, enhancer_of, resolve_encoder_weights  # noqa: E402
from brats_keras.reporting import (  # noqa: E402
    SYNTHETIC_WARNING, Column, comparison_table, plot_curve_panels, plot_image_grid,
)
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy  # noqa: E402

METRICS = ("dsc", "ji", "precision", "recall", "accuracy", "f1")
CURVES = (("loss", "training loss (Dice + focal)"), ("val_loss", "validation loss"),
          ("dsc", "training DSC"), ("val_dsc", "validation DSC"))
ENCODER_WEIGHTS = {"auto": "auto", "imagenet": "imagenet", "none": None}
EFFICIENTNET_RUNS = ("effunet", "proposed")


def parse_args(argv=None) -> argparse.Namespace:
    parser = experiment_parser(EXPERIMENT, __doc__, epochs=Default(500, "Table 1: 500 epochs"),
                               batch_size=Default(8, "Table 1: batch size 8"))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="runs to make (default: all; 'effunet' is the proposed network without its LSTM stage)")
    parser.add_argument("--image-size", type=int, help="slices resized to this size (paper profile 256; quick 128)")
    parser.add_argument("--pretrain-epochs", type=int, help="denoising pre-training epochs of the LSTM stage "
                        "(paper profile 30, quick 10; 0 skips the pre-training)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--encoder-weights", choices=list(ENCODER_WEIGHTS), default="auto",
                        help="EfficientNetB0 encoder: ImageNet weights if present locally (auto, default), "
                        "required (imagenet), or random (none); nothing is downloaded")
    parser.add_argument("--learning-rate", type=float, help="AdamW's initial learning rate (Table 1: 1e-4; quick profile 1e-3)")
    return parser.parse_args(argv)


def build_fn(config, key: str, size: int, encoder_weights, enhancer: keras.Model | None):
    """A function that builds and compiles one model of Table 3 (called inside the strategy's scope)."""

    def build() -> keras.Model:
        options = {"input_shape": (size, size, 1), **config.model.options}
        if key in EFFICIENTNET_RUNS:
            options["weights"] = encoder_weights
        if key == "proposed":
            options["enhancer_units"] = config.train.enhancer.units
        # Every model is initialised from the run's seed on its own, whatever ran before it: a model
        # trained alone (--models) starts as in the full run, and the ablation's two EfficientNet
        # models start from the same network (lstm_effunet's enhancer does not advance the seed stream).
        keras.utils.set_random_seed(config.train.seed)
        model = create_model(MODELS[key], **options)
        if key == "proposed" and enhancer is not None:  # start from the pre-trained denoiser
            layer = model.get_layer(f"{model.name}_enhancer")
            layer.set_weights(enhancer_layer(enhancer).get_weights())
        model.compile(
            optimizer=make_optimizer(config.train),  # Table 1: AdamW, lr 1e-4
            loss=DiceFocalLoss(dice_weight=config.train.dice_weight, focal_weight=config.train.focal_weight),
            metrics=["accuracy", DiceScore(class_ids=[1], name="dsc"), IoUScore(class_ids=[1], name="ji"),
                     Precision(region=[1], name="precision"), Sensitivity(region=[1], name="recall")],
            jit_compile=config.train.jit_compile,
        )
        return model

    return build


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


def schedule_callbacks(schedule) -> list[keras.callbacks.Callback]:
    """The paper's "learning rate scheduling" (ReduceLROnPlateau) and optional early stopping."""
    return plateau_callbacks(schedule.monitor, reduce_factor=schedule.reduce_factor,
                             reduce_patience=schedule.reduce_patience, min_learning_rate=schedule.min_learning_rate,
                             stop_patience=schedule.stop_patience)


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
        values = [s["dsc"] for s, lab in zip(per_image, labels) if int(lab) == label]
        by_type[name] = {"dsc": float(np.mean(values)) if values else None, "images": len(values)}
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
        enhancer = create_model("lstm_enhancer", input_shape=(size, size, 1), units=settings.units)
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
    row.update({f"pooled_{m}": entry["test"]["pooled"][m] for m in ("dsc", "ji")})
    return row


def tables(results: dict, synthetic: bool) -> str:
    """table.md: Table 3 beside the paper's, the ablation, the LSTM stage's denoising, the audit."""
    runs = results["runs"]
    sections = [SYNTHETIC_WARNING] if synthetic else []
    paper_rows = [{"model": MODEL_TITLES[k], **v} for k, v in PAPER_TABLE3.items()]
    columns = [Column("dsc", "DSC (%)", 100, 2), Column("ji", "JI (%)", 100, 2), Column("accuracy", "accuracy (%)", 100, 2),
               Column("precision", "precision (%)", 100, 2, in_paper=False),
               Column("recall", "recall (%)", 100, 2, in_paper=False), Column("f1", "F1 (%)", 100, 2, in_paper=False),
               Column("pooled_dsc", "DSC pooled (%)", 100, 2, in_paper=False),
               Column("pooled_ji", "JI pooled (%)", 100, 2, in_paper=False),
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
            f"DSC with the LSTM stage {100 * with_lstm['dsc']:.2f} %, without {100 * without['dsc']:.2f} % "
            f"(difference {100 * (with_lstm['dsc'] - without['dsc']):+.2f} points); JI {100 * with_lstm['ji']:.2f} % vs "
            f"{100 * without['ji']:.2f} %. Both models start from the same network (the run's seed; the untrained "
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
            audit.append(f"| {MODEL_TITLES[key]} | {p['dsc']:.4f} | {p['ji']:.4f} | "
                         f"{p['dsc'] / (2 - p['dsc']):.4f} | {p['f1']:.4f} |")
    sections.append("\n".join(audit))
    by_type = ["### DSC by tumour type (mean over test images)", "",
               "| model | " + " | ".join(FIGSHARE_LABELS.values()) + " |",
               "|---|" + "---|" * len(FIGSHARE_LABELS)]
    for key in MODELS:
        if key in runs:
            cells = []
            for name in FIGSHARE_LABELS.values():
                t = runs[key]["test"]["by_type"][name]
                cells.append("—" if t["dsc"] is None else f"{100 * t['dsc']:.2f} ({t['images']})")
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


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    run = resolve_run(args, EXPERIMENT)
    resume = args.resume is not None
    # --- configuration ---------------------------------------------------------------------
    config = configure(paper4_config(quick=args.quick), args, {
        "data.size": args.image_size, "train.learning_rate": args.learning_rate,
        "train.enhancer.pretrain_epochs": args.pretrain_epochs,
    })
    if args.no_augment:
        import dataclasses

        config.data.augment = dataclasses.replace(config.data.augment, enabled=False)
    keras.utils.set_random_seed(config.train.seed)
    encoder_weights = None
    if any(key in EFFICIENTNET_RUNS for key in args.models):
        encoder_weights = resolve_encoder_weights(ENCODER_WEIGHTS[args.encoder_weights])  # warns when absent

    # --- data -------------------------------------------------------------------------------
    data_dir = Path(args.data_dir) if args.data_dir else ensure_synthetic_figshare(
        patients=config.data.synthetic_patients, slices_per_patient=config.data.synthetic_slices_per_patient,
        seed=config.train.seed)
    synthetic = is_synthetic_dataset(data_dir)
    config = record_config(run, config, synthetic)
    files = discover_figshare(data_dir)
    metas = read_figshare_metas(files, progress=True)
    types = patient_tumour_types(metas)  # the split is stratified by tumour type (choice, docs/paper4.md)
    split = patient_split(run, resume, sorted(types), test_fraction=config.data.test_fraction,
                          val_fraction=config.data.val_fraction, seed=config.train.seed, strata=types,
                          data_dir=str(data_dir), unit_note="figshare patient IDs (PID), stratified by tumour type")
    part_of = {pid: part for part, pids in split.items() for pid in pids}
    parts = {part: [m.path for m in metas if part_of.get(m.pid) == part] for part in ("train", "val", "test")}
    if not parts["train"] or not parts["test"]:
        raise DataError(f"{len(types)} patients are too few for a train / test split", path=data_dir)
    size = config.data.size
    cache = FigshareCache(size=size, normalization=config.data.normalization)
    index = {part: FigshareIndex(cache.ensure(paths)) for part, paths in parts.items()}
    strategy = select_strategy(config.train.strategy)
    batch = global_batch_size(config.train.batch_size, strategy)
    augment = config.data.augment if config.data.augment.enabled else None
    train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed, augment=augment)
    val_ds = make_dataset(index["val"], batch_size=batch)
    test_images, test_masks = all_items(index["test"])
    source_masks = [read_figshare_mat(path).mask for path in index["test"].paths]  # scored at their own size
    print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; "
          f"slices: {len(index['train'])} / {len(index['val'])} / {len(index['test'])} at {size}²", flush=True)

    results = {"experiment": EXPERIMENT, "synthetic": synthetic, "data_dir": str(data_dir),
               "data_provenance": data_provenance(synthetic), "noise": config.train.enhancer.noise.to_dict(), "runs": {}}
    results["encoder_weights"] = encoder_weights or "random"
    results["encoder_note"] = encoder_note(args.models, encoder_weights, args.encoder_weights)
    if results["encoder_note"]:
        print(results["encoder_note"], flush=True)
    enhancer = None
    if "proposed" in args.models:
        train_images = all_items(index["train"])[0]
        val_images = all_items(index["val"])[0] if len(index["val"]) else None
        enhancer, results["enhancer"] = pretrain_stage(config, run, resume, size, train_images, val_images, test_images)

    histories, predictions, enhanced = {}, {}, None
    for key in args.models:
        # --- one model of Table 3: training, test scores, export ------------------------------
        print(f"\n=== {MODEL_TITLES[key]} ({MODELS[key]}) ===", flush=True)
        model_run = RunDir.create(run.path / key, EXPERIMENT)
        callbacks = schedule_callbacks(config.train.schedule)
        started = time.perf_counter()
        model, history = fit(build_fn(config, key, size, encoder_weights, enhancer), train_ds, run=model_run,
                             epochs=config.train.epochs, validation_data=val_ds if len(index["val"]) else None,
                             callbacks=callbacks, strategy=strategy, resume=resume)
        train_seconds = time.perf_counter() - started
        probabilities = predict_probabilities(model, test_images, batch)
        predictions[key] = (probabilities > 0.5).astype(np.uint8)  # at the model's size, for the figures
        test = score_test(probabilities, source_masks, index["test"].labels)
        if key == "proposed":
            enhanced = enhancer_of(model).predict(test_images, batch_size=batch, verbose=0)
        histories[MODEL_TITLES[key].split(" (")[0]] = history
        results["runs"][key] = {
            "model": MODELS[key], "params": int(model.count_params()),
            "epochs_run": len(history.get("loss", [])),
            "early_stopping": early_stopping_record(callbacks),
            "train_seconds_this_session": round(train_seconds, 1),
            "test": test,
            **export_checked(model, model_run.model_keras, model_run.saved_model, test_images[:2]),
        }
        print(f"{MODEL_TITLES[key]}: test DSC {100 * test['mean']['dsc']:.2f} %, JI {100 * test['mean']['ji']:.2f} %, "
              f"accuracy {100 * test['mean']['accuracy']:.2f} % on {test['images']} slices", flush=True)

    # --- report -----------------------------------------------------------------------------
    figures(run, results, histories, test_images, test_masks, index["test"].pids, index["test"].labels, predictions,
            enhanced, enhancer,
            config.train.enhancer.noise, config.train.seed, config.data.overlay_images, synthetic)
    finish_run(run, tables(results, synthetic), results, synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
