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

import argparse
import hashlib
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

from brats_keras.bench import peak_rss_mb  # noqa: E402
from brats_keras.configs import make_optimizer  # noqa: E402
from brats_keras.configs.base import JIT_COMPILE_CHOICES  # noqa: E402
from brats_keras.configs.paper2 import (  # noqa: E402
    EXPERIMENT, MODELS, TABLE_III, TABLE_IV, paper2_config, paper2_loss, paper2_metrics,
)
from brats_keras.data.brats import discover_cases, load_label  # noqa: E402
from brats_keras.data.pipeline import make_dataset  # noqa: E402
from brats_keras.io import default_cache_dir  # noqa: E402
from brats_keras.data.synthetic import ensure_synthetic_dataset, is_synthetic_dataset  # noqa: E402
from brats_keras.data.volumes3d import (  # noqa: E402
    SCALINGS, Preprocess3DSettings, VolumeIndex, parse_crop, preprocess_dataset_3d,
)
from brats_keras.errors import DataError, cli_errors  # noqa: E402
from brats_keras.evaluation import aggregate, evaluate_case  # noqa: E402
from brats_keras.experiment import (  # noqa: E402
    Default, configure, data_provenance, experiment_parser, finish_run, jit_compile_value, patient_split,
    record_config, resolve_run,
)
from brats_keras.export import export_checked  # noqa: E402
from brats_keras.inference import InferenceSpec, uncrop_labels  # noqa: E402
from brats_keras.metrics import IoUScore  # noqa: E402
from brats_keras.models import create_model  # noqa: E402
from brats_keras.reporting import (  # noqa: E402
    SYNTHETIC_WARNING, Column, comparison_table, plot_training_curves, plot_volume_overlay,
)
from brats_keras.training import (  # noqa: E402
    RunDir, fit, global_batch_size, inference_without_xla_on_cpu, select_strategy,
)

MODEL_TITLES = {
    "unet3d_simple": "Simple U-Net",
    "unet3d_modified": "Modified U-Net",
    "unet3d_spatial_attention": "Spatial-attention U-Net",
}
REGIONS = ("TC", "WT", "ET")  # Table IV's column order
COHORTS = ("train-2020", "val-2020", "test-2021")


def parse_args(argv=None) -> argparse.Namespace:
    parser = experiment_parser(
        EXPERIMENT, __doc__,
        epochs=Default(100, "paper §VIII: 100 epochs"),
        batch_size=Default(2, "paper §VIII / Table II: batch size 2"),
    )
    parser.add_argument("--test-dir", help="external test cohort in BraTS 2021 layout (the paper's Test-2021); "
                        "without it a synthetic BraTS 2021 set with another seed is used (quick profile) "
                        "or no external test is run (with --data-dir)")
    parser.add_argument("--model", choices=(*MODELS, "all"), default="all",
                        help="train one of the three networks, or all of them (default)")
    parser.add_argument("--crop", help="x0:x1,y0:y1,z0:z1 crop (paper: 56:184,56:184,13:141)")
    parser.add_argument("--scaling", choices=SCALINGS, help="min-max scaling per axial slice (reference) or per volume")
    parser.add_argument("--filters", type=int, help="base filters (paper configuration: 16, doubling to 256)")
    parser.add_argument("--attention-activation", choices=("sigmoid", "softmax"),
                        help="spatial attention gate: sigmoid (default, CBAM) or the paper's literal softmax, "
                        "which makes the attention an identity (docs/paper2.md)")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (paper: 1e-4, Table II)")
    parser.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES),
                        help="XLA for training: on (paper profile: a 128³ batch of 2 needs 6.8 GB instead of "
                        "19.6 GB of host memory on CPU), auto (Keras: XLA on GPU only; quick profile), off")
    parser.add_argument("--max-eval-cases", type=int,
                        help="score at most this many patients of each cohort on whole volumes (default: all)")
    parser.add_argument("--cache-dir", help="folder of the pre-processed 3D arrays "
                        "(default: $BRATS_KERAS_CACHE or ~/.cache/brats_keras, under volumes3d/)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def preprocessed(data_dir: Path, settings: Preprocess3DSettings, cache_root: Path, cohort: str,
                 files: dict) -> tuple[Path, dict]:
    """Pre-process ``data_dir`` into a cache folder keyed by the folder and the settings (resumable);
    the cases found are added to ``files`` (case id → CaseFiles), so the folder is walked once."""
    key = json.dumps({"data_dir": str(Path(data_dir).resolve()), "settings": settings.to_json()}, sort_keys=True)
    out = cache_root / "volumes3d" / f"{cohort}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    cases = discover_cases(data_dir, modalities=settings.modalities)
    files.update({c.case_id: c for c in cases})
    manifest = preprocess_dataset_3d(data_dir, out, settings, cases=cases)
    print(f"{cohort}: kept {len(manifest['kept'])} of {len(manifest['kept']) + len(manifest['skipped'])} cases "
          f"({out})", flush=True)
    if not manifest["kept"]:
        raise DataError("no case passed the pre-processing filter (see manifest.json)", path=out)
    return out, manifest


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_fn(name: str, config):
    """A function that builds and compiles one model (called inside the strategy's scope)."""

    def build() -> keras.Model:
        options = dict(config.model.options)
        if name != "unet3d_spatial_attention":
            options.pop("attention_activation", None)
        model = create_model(name, input_shape=config.data.input_shape, **options)
        model.compile(optimizer=make_optimizer(config.train),  # Adam, lr 1e-4 (Table II)
                      loss=paper2_loss(),  # Dice (0.25 × 4) + 1 × categorical focal (§VI)
                      metrics=paper2_metrics(config.model.options["num_classes"]),  # accuracy, IoU(0.5)
                      jit_compile=config.train.jit_compile)
        return model

    return build


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def score_cohort(model, index: VolumeIndex, files: dict, crop, *, max_cases: int = 0, overlay=None) -> dict:
    """Predict every crop of ``index``: accuracy and IoU(0.5) over the crops (Table III), and Dice,
    HD95, sensitivity, specificity per region with the prediction placed back into the case's
    original grid (background outside the crop; Table IV and beyond).

    ``overlay``: ``(path, title, synthetic)`` — a three-plane overlay of the case with most tumour.
    """
    iou = IoUScore(threshold=0.5, num_classes=index.num_classes)
    accuracy = keras.metrics.CategoricalAccuracy()
    ids = index.case_ids[: max_cases or None]
    per_case, best = {}, (-1, None)
    for k, case_id in enumerate(ids):
        x, y = index.gather(np.array([k]))
        probabilities = np.asarray(model.predict_on_batch(x))
        truth = keras.utils.to_categorical(y, index.num_classes)
        iou.update_state(truth, probabilities)
        accuracy.update_state(truth, probabilities)
        classes = np.argmax(probabilities[0], axis=-1).astype(np.uint8)
        label, spacing, _ = load_label(files[case_id])
        per_case[case_id] = evaluate_case(uncrop_labels(classes, crop, label.shape), label, spacing, case=case_id)
        tumour = int(np.count_nonzero(y[0]))
        if overlay is not None and tumour > best[0]:
            best = (tumour, (x[0], y[0], classes, case_id))
    if overlay is not None and best[1] is not None:
        path, title, synthetic = overlay
        image, truth_classes, pred_classes, case_id = best[1]
        plot_volume_overlay(image, truth_classes, pred_classes, path, num_classes=index.num_classes,
                            title=f"{title} — {case_id} (FLAIR, crop)", synthetic=synthetic)
    return {"cases": len(ids), "accuracy": float(accuracy.result()), "iou": float(iou.result()),
            "per_case": per_case, "summary": aggregate(per_case) if per_case else {}}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def tables(results: dict, synthetic: bool) -> str:
    """table.md: Tables III and IV beside the paper, and the whole-volume region metrics."""
    models = results["models"]
    sections = [SYNTHETIC_WARNING] if synthetic else []
    rows_iii = []
    for name, entry in models.items():
        last = entry["last_epoch"]
        rows_iii.append({"model": MODEL_TITLES[name], "accuracy": last.get("accuracy"),
                         "val_accuracy": last.get("val_accuracy"), "iou": last.get("iou_score"),
                         "val_iou": last.get("val_iou_score"),
                         "test_iou": entry["cohorts"].get("test-2021", {}).get("iou")})
    sections.append(comparison_table(
        rows_iii, [{"model": MODEL_TITLES[k], **v} for k, v in TABLE_III.items()],
        [Column("accuracy", "acc train"), Column("val_accuracy", "acc val"), Column("iou", "IoU train"),
         Column("val_iou", "IoU val"), Column("test_iou", "IoU test-2021")],
        title="Table III — accuracy and IoU (threshold 0.5)",
        note="Train / val: the last epoch's Keras logs (train values with dropout active, as Keras reports "
        "them). Test: one pass over the external cohort's crops. IoU is the mean over the 4 classes of "
        "the epoch's summed counts.",
    ))

    def cohort_rows(row_of) -> list[dict]:
        rows = []
        for name, entry in models.items():
            for cohort in COHORTS:
                summary = entry["cohorts"].get(cohort, {}).get("summary")
                if summary:
                    rows.append({"model": MODEL_TITLES[name], "set": cohort, **row_of(summary)})
        return rows

    rows_iv = cohort_rows(lambda s: {"cases": s["WT"]["dice"]["count"], **{r: s[r]["dice"]["mean"] for r in REGIONS}})
    paper_iv = [{"model": MODEL_TITLES[name], "set": cohort, **values} for (name, cohort), values in TABLE_IV.items()]
    sections.append(comparison_table(
        rows_iv, paper_iv,
        [Column("cases", "patients", 1, 0, in_paper=False)] + [Column(r, f"Dice {r}") for r in REGIONS],
        key=("model", "set"), title="Table IV — Dice per region (mean over patients, whole volumes)",
        note="Predictions on the crop are placed back into the original grid (background outside) and "
        "scored against the full label with the BraTS regions ET = {4}, TC = {1, 4}, WT = {1, 2, 4}. "
        "The paper's headers read 'Tumor (TC) / Core (WT) / Whole Tumor (ET)'; its values are listed "
        "under the abbreviation it prints. val-2020 has no paper value.",
    ))
    columns = [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in REGIONS]
    columns += [Column(f"sens_{r}", f"sens {r}", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"spec_{r}", f"spec {r}", 1, 4, in_paper=False) for r in REGIONS]
    sections.append(comparison_table(
        cohort_rows(lambda s: {f"{m}_{r}": s[r][metric]["mean"] for r in REGIONS
                               for m, metric in (("hd95", "hd95"), ("sens", "sensitivity"), ("spec", "specificity"))}),
        [], columns, key=("model", "set"),
        title="Whole-volume HD95, sensitivity and specificity (mean over patients)",
        note="The paper names these metrics but reports none. HD95 of a region empty in exactly one of "
        "prediction and reference is 373.13 mm (REPLICATION.md).",
    ))
    return "\n\n".join(sections)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    run = resolve_run(args, EXPERIMENT)
    resume = args.resume is not None
    # --- configuration ---------------------------------------------------------------------
    config = configure(paper2_config(quick=args.quick), args, {
        "train.learning_rate": args.learning_rate,
        "train.jit_compile": jit_compile_value(args.jit_compile),
        "data.preprocess.crop": parse_crop(args.crop) if args.crop else None,
        "data.preprocess.scaling": args.scaling, "data.max_eval_cases": args.max_eval_cases,
    })
    for option, value in (("filters", args.filters), ("attention_activation", args.attention_activation)):
        if value is not None:
            config.model.options[option] = value
    keras.utils.set_random_seed(config.train.seed)

    # --- data -------------------------------------------------------------------------------
    data_dir = Path(args.data_dir) if args.data_dir else ensure_synthetic_dataset(
        dataset="brats2020", cases=config.data.synthetic_cases, seed=config.train.seed,
        shape=config.data.synthetic_shape)
    test_dir = Path(args.test_dir) if args.test_dir else None
    if test_dir is None and args.data_dir is None:  # the synthetic external cohort: other seed, 2021 layout
        test_dir = ensure_synthetic_dataset(dataset="brats2021", cases=config.data.synthetic_test_cases,
                                            seed=config.train.seed + 1, shape=config.data.synthetic_shape)
    synthetic = is_synthetic_dataset(data_dir) or (test_dir is not None and is_synthetic_dataset(test_dir))
    config = record_config(run, config, synthetic)
    cache_root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    files: dict = {}  # case id → CaseFiles of both cohorts (whole-volume scoring reads their labels)
    train_cache, train_manifest = preprocessed(data_dir, config.data.preprocess, cache_root, "train-2020", files)
    split = patient_split(run, resume, [e["case_id"] for e in train_manifest["kept"]], test_fraction=0.0,
                          val_fraction=config.data.val_fraction, seed=config.train.seed, data_dir=str(data_dir),
                          skipped={e["case_id"]: e["reason"] for e in train_manifest["skipped"]})
    index = {part: VolumeIndex(train_cache, split[part]) for part in ("train", "val")}
    test_index, test_cache = None, None
    if test_dir is not None:
        test_cache, _ = preprocessed(test_dir, config.data.test_preprocess(), cache_root, "test-2021", files)
        test_index = VolumeIndex(test_cache)
    strategy = select_strategy(config.train.strategy)
    batch = global_batch_size(config.train.batch_size, strategy)
    train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed)
    val_ds = make_dataset(index["val"], batch_size=batch)
    print(f"patients: {len(index['train'])} train / {len(index['val'])} val (BraTS 2020 layout), "
          f"{len(test_index) if test_index else 0} external test; crop {config.data.input_shape}", flush=True)

    # --- train, evaluate, export each model -----------------------------------------------------
    names = MODELS if args.model == "all" else (args.model,)
    results = {"experiment": EXPERIMENT, "synthetic": synthetic, "data_dir": str(data_dir),
               "test_dir": str(test_dir) if test_dir else None,
               "data_provenance": data_provenance(synthetic),
               "preprocessed": {"train-2020": str(train_cache), "test-2021": str(test_cache) if test_cache else None,
                                "skipped": len(train_manifest["skipped"])},
               "models": {}}
    crop = config.data.preprocess.crop
    cohorts = {"train-2020": index["train"], "val-2020": index["val"]}
    if test_index is not None:
        cohorts["test-2021"] = test_index
    overlay_cohort = list(cohorts)[-1]  # the external cohort, or the validation patients without one
    for name in names:
        print(f"\n=== {MODEL_TITLES[name]} ===", flush=True)
        model_run = RunDir.create(run.path / name, EXPERIMENT)
        started = time.perf_counter()
        model, history = fit(build_fn(name, config), train_ds, run=model_run, epochs=config.train.epochs,
                             validation_data=val_ds, strategy=strategy, resume=resume)
        train_seconds = time.perf_counter() - started
        inference_without_xla_on_cpu(model)
        scores = {}
        for cohort, cohort_index in cohorts.items():
            overlay = (run.plots / f"{name}_overlay.png", MODEL_TITLES[name], synthetic) \
                if cohort == overlay_cohort else None
            scores[cohort] = score_cohort(model, cohort_index, files, crop, max_cases=config.data.max_eval_cases,
                                          overlay=overlay)
        plot_training_curves(history, run.plots / f"{name}_curves.png", metrics=("loss", "accuracy", "iou_score"),
                             title=f"{MODEL_TITLES[name]} — training curves", synthetic=synthetic)
        sample = index["val"].gather(np.arange(1))[0]
        epochs_run = len(history.get("loss", []))
        results["models"][name] = {
            "epochs_run": epochs_run,
            "train_seconds_this_session": round(train_seconds, 1),
            "params": int(model.count_params()),
            "last_epoch": {k: float(v[-1]) for k, v in history.items() if v},
            "cohorts": scores,
            "peak_host_memory_mb": round(peak_rss_mb(), 1),
            **export_checked(model, model_run.model_keras, model_run.saved_model, sample,
                             InferenceSpec.for_volume(config.data.preprocess, experiment=EXPERIMENT, model=name,
                                                      synthetic=synthetic)),
        }
        summary = " / ".join(f"{c} WT Dice {s['summary']['WT']['dice']['mean']:.3f}" for c, s in scores.items())
        print(f"{MODEL_TITLES[name]}: {summary}", flush=True)
        keras.backend.clear_session()

    # --- report -----------------------------------------------------------------------------
    finish_run(run, tables(results, synthetic), results, synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
