"""Paper 1 — U-ResUNet cascade vs plain U-Net on 2D BraTS 2020 slices (the suite's main job).

    python experiments/paper1_u_resunet.py                       # quick profile on synthetic data
    python experiments/paper1_u_resunet.py --data-dir BraTS2020_TrainingData   # the paper's profile

Trains the proposed U-Net → ResUNet cascade and the U-Net baseline on FLAIR + T1ce axial slices
(22..121, 240 → 128), Adam 1e-3, categorical cross-entropy, batch 32, split 80/20 by patient with
15 % of the training patients for validation. Writes to the run folder: config.json, split.json,
table.md (Tables 6.1 / 6.2 measured beside the paper, per-region Dice and HD95 on whole test
volumes), results.json, plots/ (training curves, prediction overlays) and per model
<model>/{history.csv, model.keras, saved_model/, logs/, checkpoints/}. See docs/paper1.md.
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

from brats_keras.callbacks import EpochTable  # noqa: E402
from brats_keras.configs import make_optimizer  # noqa: E402
from brats_keras.configs.paper1 import (  # noqa: E402
    EXPERIMENT, MODELS, TABLE_6_1, TABLE_6_2, UNET_BASELINE_TEXT, paper1_config,
)
from brats_keras.data.brats import discover_cases  # noqa: E402
from brats_keras.data.pipeline import make_dataset  # noqa: E402
from brats_keras.data.slices2d import SliceCache, SliceIndex  # noqa: E402
from brats_keras.data.synthetic import ensure_synthetic_dataset, is_synthetic_dataset  # noqa: E402
from brats_keras.errors import cli_errors  # noqa: E402
from brats_keras.experiment import (  # noqa: E402
    Default, add_slice_arguments, apply_filters, configure, data_provenance, evaluate_slice_model,
    experiment_parser, finish_run, patient_split, record_config, resolve_run, slice_overrides,
)
from brats_keras.export import export_checked  # noqa: E402
from brats_keras.inference import InferenceSpec  # noqa: E402
from brats_keras.metrics import MeanIoU, RegionDice  # noqa: E402
from brats_keras.models import create_model  # noqa: E402
from brats_keras.reporting import (  # noqa: E402
    SYNTHETIC_WARNING, Column, comparison_table, epoch_table, history_to_epoch_dict, plot_training_curves,
)
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy  # noqa: E402

MODEL_TITLES = {"u_resunet": "U-ResUNet (proposed)", "unet2d": "U-Net (baseline)"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = experiment_parser(
        EXPERIMENT, __doc__,
        epochs=Default(20, "Tables 6.1 / 6.2 go to epoch 20"),
        batch_size=Default(32, "paper §5.5"),
    )
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both",
                        help="train the proposed cascade, the U-Net baseline, or both (default)")
    add_slice_arguments(parser)
    parser.add_argument("--cascade-input", choices=("features", "probabilities"), default="features",
                        help="what the U-Net hands the ResUNet: its last decoder features (default, our "
                        "choice) or its softmax output")
    return parser.parse_args(argv)


def build_fn(name: str, config, cascade_input: str):
    """A function that builds and compiles one model (called inside the strategy's scope)."""

    def build() -> keras.Model:
        slices = config.data.slices
        options = {**config.model.options, "input_shape": (slices.size, slices.size, slices.channels)}
        if name == "u_resunet":
            options["cascade_input"] = cascade_input
        else:
            options.pop("norm_momentum", None)  # the plain U-Net has no batch normalisation
        model = create_model(name, **options)
        model.compile(
            optimizer=make_optimizer(config.train),  # Adam, lr 0.001 (paper §5.6)
            loss="categorical_crossentropy",  # paper §5.6
            metrics=["accuracy", RegionDice("ET"), RegionDice("TC"), RegionDice("WT"), MeanIoU(num_classes=4)],
        )
        return model

    return build


def tables(results: dict, synthetic: bool) -> str:
    """table.md: Tables 6.1 and 6.2 beside the paper, and the whole-volume region metrics."""
    models = results["models"]
    proposed, baseline = models.get("u_resunet"), models.get("unet2d")
    sections = []
    if synthetic:
        sections.append(SYNTHETIC_WARNING)

    def measured(entry, source, prefix=""):
        rows = {}
        for epoch, values in (entry or {}).get(source, {}).items():
            rows[int(epoch)] = {f"{prefix}{k}": v for k, v in values.items()}
        return rows

    def merge(*dicts):
        out: dict[int, dict] = {}
        for d in dicts:
            for epoch, values in d.items():
                out.setdefault(epoch, {}).update(values)
        return out

    t61 = merge(measured(proposed, "test_rows"), measured(baseline, "test_rows", "unet_"))
    sections.append(epoch_table(
        t61, TABLE_6_1,
        [Column("test_accuracy", "U-ResUNet test acc (%)", 100, 2, paper_key="accuracy"),
         Column("test_loss", "U-ResUNet test loss (%)", 100, 2, paper_key="loss"),
         Column("unet_test_accuracy", "U-Net test acc (%)", 100, 2, in_paper=False),
         Column("unet_test_loss", "U-Net test loss (%)", 100, 2, in_paper=False)],
        title="Table 6.1 — test accuracy and loss per epoch",
        note=f"Pixel accuracy is dominated by background; see the per-region Dice below. "
        f"U-Net baseline in the paper: {UNET_BASELINE_TEXT}.",
    ))
    t62 = merge(measured(proposed, "train_rows"), measured(baseline, "train_rows", "unet_"))
    sections.append(epoch_table(
        t62, TABLE_6_2,
        [Column("accuracy", "U-ResUNet train acc (%)", 100, 2), Column("loss", "U-ResUNet train loss (%)", 100, 2),
         Column("unet_accuracy", "U-Net train acc (%)", 100, 2, in_paper=False),
         Column("unet_loss", "U-Net train loss (%)", 100, 2, in_paper=False)],
        title="Table 6.2 — training accuracy and loss per epoch",
    ))
    rows = []
    for name, entry in models.items():
        summary = entry["whole_volume"]["summary"]
        row = {"model": MODEL_TITLES[name], "cases": summary.get("WT", {}).get("dice", {}).get("count", 0)}
        for region in ("ET", "TC", "WT"):
            row[f"dice_{region}"] = summary[region]["dice"]["mean"]
            row[f"hd95_{region}"] = summary[region]["hd95"]["mean"]
        rows.append(row)
    region_columns = [Column("cases", "test patients", 1, 0, in_paper=False)]
    region_columns += [Column(f"dice_{r}", f"Dice {r}", 1, 3, in_paper=False) for r in ("ET", "TC", "WT")]
    region_columns += [Column(f"hd95_{r}", f"HD95 {r} (mm)", 1, 2, in_paper=False) for r in ("ET", "TC", "WT")]
    sections.append(comparison_table(
        rows, [], region_columns, title="Whole-volume test metrics (mean over test patients)",
        note="The paper reports no Dice or HD95; these are measured here so accuracy cannot mislead.",
    ))
    return "\n\n".join(sections)


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    run = resolve_run(args, EXPERIMENT)
    resume = args.resume is not None
    # --- configuration ---------------------------------------------------------------------
    config = apply_filters(configure(paper1_config(quick=args.quick), args, slice_overrides(args)), args)
    keras.utils.set_random_seed(config.train.seed)

    # --- data -------------------------------------------------------------------------------
    data_dir = args.data_dir or ensure_synthetic_dataset(cases=config.data.synthetic_cases, seed=config.train.seed)
    synthetic = is_synthetic_dataset(data_dir)
    config = record_config(run, config, synthetic)
    cases = {c.case_id: c for c in discover_cases(data_dir, modalities=config.data.slices.modalities)}
    split = patient_split(run, resume, cases, test_fraction=config.data.test_fraction,
                          val_fraction=config.data.val_fraction, seed=config.train.seed, data_dir=str(data_dir))
    cache = SliceCache(config.data.slices)
    index = {part: SliceIndex(cache.ensure([cases[c] for c in split[part]])) for part in ("train", "val", "test")}
    strategy = select_strategy(config.train.strategy)
    batch = global_batch_size(config.train.batch_size, strategy)
    train_ds = make_dataset(index["train"], batch_size=batch, shuffle=True, seed=config.train.seed)
    val_ds = make_dataset(index["val"], batch_size=batch)
    test_ds = make_dataset(index["test"], batch_size=batch)
    print(f"patients: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test; "
          f"slices: {len(index['train'])} / {len(index['val'])} / {len(index['test'])}", flush=True)

    # --- train, evaluate, export each model -----------------------------------------------------
    names = MODELS if args.model == "both" else (args.model,)
    results = {"experiment": EXPERIMENT, "synthetic": synthetic, "data_dir": str(data_dir),
               "data_provenance": data_provenance(synthetic),
               "models": {}}
    test_files = [cases[c] for c in split["test"]]
    if config.data.max_eval_cases:
        test_files = test_files[: config.data.max_eval_cases]
    for name in names:
        print(f"\n=== {MODEL_TITLES[name]} ===", flush=True)
        model_run = RunDir.create(run.path / name, EXPERIMENT)
        test_table = EpochTable(keys=["loss"], epochs=sorted(TABLE_6_1), data=test_ds)
        started = time.perf_counter()
        model, history = fit(build_fn(name, config, args.cascade_input), train_ds, run=model_run,
                             epochs=config.train.epochs, validation_data=val_ds, callbacks=[test_table],
                             strategy=strategy, resume=resume)
        train_seconds = time.perf_counter() - started
        final_test = model.evaluate(test_ds, verbose=0, return_dict=True)
        evaluation = evaluate_slice_model(model.predict_on_batch, test_files, config.data.slices,
                                          eval_slices=config.data.eval_slices, overlay_png=run.plots / f"{name}_overlay.png",
                                          title=MODEL_TITLES[name], synthetic=synthetic)
        plot_training_curves(history, run.plots / f"{name}_curves.png", metrics=("accuracy", "loss", "dice_wt"),
                             title=f"{MODEL_TITLES[name]} — training curves", synthetic=synthetic)
        sample = index["test"].gather(np.arange(min(2, len(index["test"]))))[0]
        results["models"][name] = {
            "epochs_run": len(history.get("loss", [])),
            "train_seconds_this_session": round(train_seconds, 1),
            "train_slices_per_s": round(len(index["train"]) * max(len(history.get("loss", [])), 1) / train_seconds, 2)
            if not resume else None,
            "params": int(model.count_params()),
            "train_rows": {e: {k: v for k, v in row.items() if k in ("accuracy", "loss")}
                           for e, row in history_to_epoch_dict(history).items()},
            "test_rows": {e: {k: v for k, v in row.items() if k.startswith("test_")} for e, row in test_table.rows.items()},
            "final_test": {k: float(v) for k, v in final_test.items()},
            "whole_volume": evaluation,
            **export_checked(model, model_run.model_keras, model_run.saved_model, sample,
                             InferenceSpec.for_slices(config.data.slices, experiment=EXPERIMENT, model=name,
                                                      synthetic=synthetic)),
        }
        wt = evaluation["summary"].get("WT", {}).get("dice", {}).get("mean", float("nan"))
        print(f"{MODEL_TITLES[name]}: whole-volume WT Dice {wt:.3f} on {len(test_files)} test patients", flush=True)

    # --- report -----------------------------------------------------------------------------
    finish_run(run, tables(results, synthetic), results, synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
