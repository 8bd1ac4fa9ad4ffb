"""Paper 3 — multimodal 2D U-Net, N4 bias-field correction + denoising, the "dwell" LR callback.

    python experiments/paper3_unet_dwell.py                        # quick profile on synthetic data
    python experiments/paper3_unet_dwell.py --data-dir BraTS2020_TrainingData   # the paper's profile
    python experiments/paper3_unet_dwell.py --data-dir ... --no-preprocess       # the raw run only

Trains the paper's U-Net (4 encoders, bridge, 4 decoders) on axial slices of the four modalities
(T1, T1ce, T2, FLAIR) at 128², with Dice loss, Adam, the Dice coefficient and accuracy as metrics and
the dwell callback (validation loss watched; a worse epoch moves back to the best weights and
lowers the learning rate). By default it makes two runs on the same patient split: on the
pre-processed volumes (N4 bias-field correction, curvature-flow denoising, z-score in the brain —
computed once by brats_keras.data.correction into --corrected-dir and reused) and on the raw
volumes, and compares them; the paper motivates the pre-processing but reports no table.

Writes to the run folder: config.json, split.json, table.md (the ablation's per-region Dice / HD95
on whole test volumes, the dwell callback's per-epoch table of each run), results.json, plots/
(Fig. 5.1's four curves for both runs, each run's learning-rate schedule with the restores marked,
prediction overlays) and per run <variant>/{history.csv, model.keras, saved_model/, inference.json,
logs/, checkpoints/}. See docs/paper3.md.
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

from brats_keras.callbacks import DwellLearningRate  # noqa: E402
from brats_keras.cli import positive_int  # noqa: E402
from brats_keras.configs import make_optimizer  # noqa: E402
from brats_keras.configs.paper3 import EXPERIMENT, MODEL, VARIANT_TITLES, VARIANTS, paper3_config  # noqa: E402
from brats_keras.data.brats import discover_cases  # noqa: E402
from brats_keras.data.correction import MANIFEST_NAME, CorrectionSettings, correct_dataset  # noqa: E402
from brats_keras.data.pipeline import make_dataset  # noqa: E402
from brats_keras.data.slices2d import SliceCache, SliceIndex  # noqa: E402
from brats_keras.io import default_cache_dir  # noqa: E402
from brats_keras.data.synthetic import ensure_synthetic_dataset, is_synthetic_dataset  # noqa: E402
from brats_keras.errors import DataError, cli_errors  # noqa: E402
from brats_keras.experiment import (  # noqa: E402
    Default, add_slice_arguments, apply_filters, configure, data_provenance, evaluate_slice_model,
    experiment_parser, finish_run, patient_split, record_config, resolve_run, slice_overrides,
)
from brats_keras.export import export_checked  # noqa: E402
from brats_keras.inference import InferenceSpec  # noqa: E402
from brats_keras.losses import DiceLoss  # noqa: E402
from brats_keras.metrics import DiceScore, RegionDice  # noqa: E402
from brats_keras.models import create_model  # noqa: E402
from brats_keras.reporting import (  # noqa: E402
    SYNTHETIC_WARNING, Column, comparison_table, plot_curve_panels, plot_lr_schedule,
)
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy  # noqa: E402

FIG_5_1 = (("loss", "training loss"), ("val_loss", "validation loss"),
           ("accuracy", "training accuracy"), ("val_dice_coef", "validation Dice coefficient"))
"""Paper 3's Fig. 5.1: training / validation loss on the left, training accuracy / validation Dice on the right."""
REGIONS = ("ET", "TC", "WT")


def parse_args(argv=None) -> argparse.Namespace:
    parser = experiment_parser(
        EXPERIMENT, __doc__,
        epochs=Default(50, "the paper states none: our choice, the dwell callback stops earlier"),
        batch_size=Default(32, "the paper states none: our choice, as paper 1"),
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--no-preprocess", action="store_true",
                      help="train only on the raw volumes (the ablation's other half); default: both runs")
    runs.add_argument("--preprocess-only", action="store_true",
                      help="train only on the pre-processed volumes (the paper's method)")
    parser.add_argument("--corrected-dir",
                        help="folder for the bias-corrected volumes (BraTS layout, reused when up to date; "
                        "default: a folder in the cache named after --data-dir and the settings). A folder "
                        "written by data_prep/correct_bias.py with the same settings is reused as is")
    parser.add_argument("--correction-workers", type=positive_int, default=os.cpu_count() or 1,
                        help="cases corrected in parallel (default: the CPU count)")
    parser.add_argument("--shrink-factor", type=positive_int,
                        help="N4 fits the field on the volume shrunk by this factor (paper profile 4, quick 8)")
    add_slice_arguments(parser)
    parser.add_argument("--learning-rate", type=float, help="Adam's initial learning rate (default 1e-4, our choice)")
    return parser.parse_args(argv)


def build_fn(config, slices):
    """A function that builds and compiles the U-Net (called inside the strategy's scope)."""

    def build() -> keras.Model:
        options = {**config.model.options, "input_shape": (slices.size, slices.size, slices.channels)}
        model = create_model(config.model.name, **options)
        model.compile(
            optimizer=make_optimizer(config.train),
            # paper §V: "Dice loss, being 1 minus the Dice coefficient", over the tumour classes
            loss=DiceLoss(class_ids=list(config.train.dice_classes)),
            metrics=["accuracy",  # paper Fig. 5.1: training accuracy
                     # Fig. 5.1's Dice coefficient, accumulated over the epoch (1 − Dice loss)
                     DiceScore(class_ids=list(config.train.dice_classes), soft=True, name="dice_coef"),
                     RegionDice("ET"), RegionDice("TC"), RegionDice("WT")],  # BraTS regions, so accuracy cannot mislead
            jit_compile=config.train.jit_compile,
        )
        return model

    return build


def default_corrected_dir(data_dir: Path, settings: CorrectionSettings) -> Path:
    """``<cache>/corrected/<data folder>_<hash of its path and the settings>``."""
    key = hashlib.sha1(json.dumps({"data_dir": str(data_dir.resolve()), "settings": settings.to_json()},
                                  sort_keys=True).encode()).hexdigest()[:12]
    return default_cache_dir() / "corrected" / f"{data_dir.name}_{key}"


def preprocess(data_dir: Path, corrected_dir: Path, settings: CorrectionSettings, workers: int) -> tuple[dict, dict]:
    """Correct (or reuse) every case; returns the corrected cases by id and the failed ones' errors."""
    print(f"pre-processing (N4 + {settings.denoise} + z-score) into {corrected_dir}", flush=True)
    started = time.perf_counter()
    manifest = correct_dataset(data_dir, corrected_dir, settings, workers=workers)
    failed = {c: e["error"] for c, e in manifest["cases"].items() if e["status"] == "failed"}
    statuses = [e["status"] for e in manifest["cases"].values()]
    print(f"pre-processing: {statuses.count('corrected')} corrected, {statuses.count('up to date')} up to date, "
          f"{len(failed)} failed in {time.perf_counter() - started:.0f} s", flush=True)
    ok = [c for c, e in manifest["cases"].items() if e["status"] != "failed"]
    if not ok:
        raise DataError("no case could be pre-processed; see the errors above", path=corrected_dir / MANIFEST_NAME)
    corrected = {c.case_id: c for c in discover_cases(corrected_dir, modalities=settings.modalities) if c.case_id in ok}
    return corrected, failed


def summary_row(name: str, entry: dict) -> dict:
    summary = entry["whole_volume"]["summary"]
    row = {"run": name, "cases": summary.get("WT", {}).get("dice", {}).get("count", 0),
           "epochs": entry["epochs_run"], "best_epoch": entry["best_epoch"], "restores": len(entry["restored_epochs"]),
           "test_dice_coef": entry["final_test"].get("dice_coef"), "test_accuracy": entry["final_test"].get("accuracy")}
    for region in REGIONS:
        row[f"dice_{region}"] = summary[region]["dice"]["mean"]
        row[f"dice_sd_{region}"] = summary[region]["dice"]["std"]
        row[f"hd95_{region}"] = summary[region]["hd95"]["mean"]
    return row


def tables(results: dict, synthetic: bool) -> str:
    """table.md: the ablation and each run's dwell table; the paper reports no numbers to set beside them."""
    runs = results["runs"]
    sections = [SYNTHETIC_WARNING] if synthetic else []
    sections.append("The paper reports no table (only the curves of Fig. 5.1, see `plots/fig5_1_curves.png`), "
                    "so every number here is measured by this run and there is no *paper* column.")
    columns = [Column("cases", "test patients", 1, 0, in_paper=False)]
    columns += [Column(f"dice_{r}", f"Dice {r}", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"dice_sd_{r}", f"Dice {r} SD", 1, 3, in_paper=False) for r in REGIONS]
    columns += [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in REGIONS]
    columns += [Column("test_dice_coef", "test Dice coef. (slices)", 1, 4, in_paper=False),
                Column("test_accuracy", "test accuracy (slices, %)", 100, 2, in_paper=False),
                Column("epochs", "epochs run", 1, 0, in_paper=False),
                Column("best_epoch", "best epoch", 1, 0, in_paper=False),
                Column("restores", "weight restores", 1, 0, in_paper=False)]
    sections.append(comparison_table(
        [summary_row(VARIANT_TITLES[name], entry) for name, entry in runs.items()], [], columns, key="run",
        title="Ablation — whole-volume test metrics with and without pre-processing (same test patients)",
        note="Dice / HD95: mean (and SD of Dice) over the test patients' whole volumes, BraTS regions. "
        "Slice metrics: the test slices of the training window.",
    ))
    for name, entry in runs.items():
        rows = [{**row, "restored": "yes" if row["restored"] else "no",
                 "val_dice_coef": entry["val_dice_coef"][i] if i < len(entry["val_dice_coef"]) else None}
                for i, row in enumerate(entry["dwell_rows"])]
        sections.append(comparison_table(
            rows, [],
            [Column("loss", "loss", 1, 4, in_paper=False), Column("accuracy", "accuracy (%)", 100, 3, in_paper=False),
             Column("val_loss", "val loss", 1, 4, in_paper=False),
             Column("val_accuracy", "val accuracy (%)", 100, 3, in_paper=False),
             Column("val_dice_coef", "val Dice coef.", 1, 4, in_paper=False),
             Column("lr", "LR", 1, 6, in_paper=False), Column("next_lr", "next LR", 1, 6, in_paper=False),
             Column("improvement_pct", "improvement (%)", 1, 2, in_paper=False),
             Column("duration_s", "duration (s)", 1, 1, in_paper=False)],
            key=("epoch", "monitor", "restored"),
            title=f"Dwell callback, per epoch — {VARIANT_TITLES[name]}",
            note="*restored*: the epoch ended worse than the best so far, so the best weights so far were put "
            f"back and the LR multiplied by the factor. Best epoch {entry['best_epoch']}: its weights are the "
            "evaluated and exported model's."
            + (f" Training stopped at epoch {entry['stopped_epoch']} (stop_patience reached)."
               if entry["stopped_epoch"] else ""),
        ))
    return "\n\n".join(sections)


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    run = resolve_run(args, EXPERIMENT)
    resume = args.resume is not None
    # --- configuration ---------------------------------------------------------------------
    config = apply_filters(configure(paper3_config(quick=args.quick), args, {
        **slice_overrides(args),
        "data.correction.shrink_factor": args.shrink_factor, "train.learning_rate": args.learning_rate,
    }), args)
    keras.utils.set_random_seed(config.train.seed)
    variants = ("raw",) if args.no_preprocess else ("preprocessed",) if args.preprocess_only else VARIANTS

    # --- data -------------------------------------------------------------------------------
    data_dir = Path(args.data_dir) if args.data_dir else ensure_synthetic_dataset(
        cases=config.data.synthetic_cases, seed=config.train.seed)
    synthetic = is_synthetic_dataset(data_dir)
    config = record_config(run, config, synthetic)
    settings = config.data.correction
    sources = {"raw": {c.case_id: c for c in discover_cases(data_dir, modalities=settings.modalities)}}
    failed: dict[str, str] = {}
    corrected_dir = None
    if "preprocessed" in variants:
        corrected_dir = Path(args.corrected_dir) if args.corrected_dir else default_corrected_dir(data_dir, settings)
        sources["preprocessed"], failed = preprocess(data_dir, corrected_dir, settings, args.correction_workers)
    usable = [c for c in sources["raw"] if c not in failed]  # both runs see the same patients
    split = patient_split(run, resume, usable, test_fraction=config.data.test_fraction,
                          val_fraction=config.data.val_fraction, seed=config.train.seed, data_dir=str(data_dir),
                          corrected_dir=None if corrected_dir is None else str(corrected_dir),
                          skipped={c: f"pre-processing failed: {e}" for c, e in failed.items()})
    strategy = select_strategy(config.train.strategy)
    batch = global_batch_size(config.train.batch_size, strategy)

    results = {"experiment": EXPERIMENT, "synthetic": synthetic, "data_dir": str(data_dir),
               "data_provenance": data_provenance(synthetic),
               "corrected_dir": None if corrected_dir is None else str(corrected_dir),
               "skipped_cases": failed, "runs": {}}
    histories = {}
    for variant in variants:
        # --- one run: its slices, training with the dwell callback, evaluation, export ----------
        print(f"\n=== U-Net {VARIANT_TITLES[variant]} ===", flush=True)
        slices = config.data.slices_for(variant)
        cases = sources[variant]
        cache = SliceCache(slices)
        index = {part: SliceIndex(cache.ensure([cases[c] for c in split[part]])) for part in ("train", "val", "test")}
        train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed)
        val_ds = make_dataset(index["val"], batch_size=batch)
        test_ds = make_dataset(index["test"], batch_size=batch)
        print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; "
              f"slices: {len(index['train'])} / {len(index['val'])} / {len(index['test'])}", flush=True)
        model_run = RunDir.create(run.path / variant, EXPERIMENT)
        dwell = DwellLearningRate(**config.train.dwell.callback_kwargs())
        started = time.perf_counter()
        model, history = fit(build_fn(config, slices), train_ds, run=model_run, epochs=config.train.epochs,
                             validation_data=val_ds, callbacks=[dwell], strategy=strategy, resume=resume)
        train_seconds = time.perf_counter() - started
        final_test = model.evaluate(test_ds, verbose=0, return_dict=True)  # the best weights (restored at the end)
        test_files = [cases[c] for c in split["test"]][: config.data.max_eval_cases or None]
        evaluation = evaluate_slice_model(model.predict_on_batch, test_files, slices,
                                          eval_slices=config.data.eval_slices,
                                          overlay_png=run.plots / f"{variant}_overlay.png",
                                          title=f"U-Net {VARIANT_TITLES[variant]}", synthetic=synthetic)
        plot_lr_schedule(history, run.plots / f"{variant}_lr_schedule.png", synthetic=synthetic,
                         title=f"Dwell learning-rate schedule — {VARIANT_TITLES[variant]}")
        histories[VARIANT_TITLES[variant]] = history
        spec = InferenceSpec.for_slices(slices, experiment=EXPERIMENT, model=MODEL, synthetic=synthetic,
                                        correction=settings if variant == "preprocessed" else None)
        sample = index["test"].gather(np.arange(min(2, len(index["test"]))))[0]
        results["runs"][variant] = {
            "epochs_run": len(history.get("loss", [])),
            "best_epoch": dwell.best_epoch,
            "stopped_epoch": dwell.stopped_epoch,
            "restored_epochs": [row["epoch"] for row in dwell.rows if row["restored"]],
            "train_seconds_this_session": round(train_seconds, 1),
            "params": int(model.count_params()),
            "dwell_rows": dwell.rows,
            "val_dice_coef": [float(v) for v in history.get("val_dice_coef", [])],
            "final_test": {k: float(v) for k, v in final_test.items()},
            "whole_volume": evaluation,
            **export_checked(model, model_run.model_keras, model_run.saved_model, sample, spec),
        }
        wt = evaluation["summary"].get("WT", {}).get("dice", {}).get("mean", float("nan"))
        print(f"U-Net {VARIANT_TITLES[variant]}: whole-volume WT Dice {wt:.3f} on {len(test_files)} test patients; "
              f"best epoch {dwell.best_epoch}, {len(results['runs'][variant]['restored_epochs'])} weight restores",
              flush=True)

    # --- report -----------------------------------------------------------------------------
    plot_curve_panels(histories, run.plots / "fig5_1_curves.png", FIG_5_1, synthetic=synthetic,
                      title="Paper 3, Fig. 5.1 — U-Net with and without pre-processing")
    finish_run(run, tables(results, synthetic), results, synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
