"""The command-line contract every ``experiments/paperN_*.py`` shares.

Flags: ``--data-dir``, ``--out``, ``--epochs``, ``--batch-size``, ``--seed``, ``--strategy``,
``--resume``, ``--quick``. Each experiment passes its paper defaults with the place in the paper
they come from, and ``--help`` prints both::

    parser = experiment_parser(
        "paper1_u_resunet", __doc__,
        epochs=Default(20, "Tables 6.1/6.2 go to epoch 20"),
        batch_size=Default(32, "paper 1 §6: batch size 32"),
    )
    args = parser.parse_args()
    run = resolve_run(args, "paper1_u_resunet")

Without ``--data-dir`` the quick synthetic profile runs (``args.quick`` is set to True).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from brats_keras.cli import positive_int
from brats_keras.configs.base import JIT_COMPILE_CHOICES, apply_overrides, save_config
from brats_keras.data.brats import CaseFiles, load_case
from brats_keras.data.layout import to_class_indices
from brats_keras.data.slices2d import SliceSettings
from brats_keras.data.splits import load_split, save_split, split_cases
from brats_keras.errors import BratsKerasError
from brats_keras.io import atomic_write_json
from brats_keras.evaluation import aggregate, evaluate_case
from brats_keras.inference import predict_volume_2d, slice_range
from brats_keras.reporting import SYNTHETIC_WARNING, plot_prediction_overlay, write_markdown
from brats_keras.training import STRATEGIES, RunDir


@dataclass(frozen=True)
class Default:
    """A default value and where it comes from (shown in ``--help``)."""

    value: Any
    source: str


def experiment_parser(
    prog: str,
    description: str | None,
    *,
    epochs: Default,
    batch_size: Default,
    seed: Default = Default(42, "our choice; the papers do not state a seed"),
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder of the real data set (see the experiment's docs page); "
                   "without it a synthetic set is generated once and the quick profile runs")
    p.add_argument("--out", help=f"run folder (default: runs/{prog}/<UTC timestamp>)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs (paper: {epochs.value} — {epochs.source}; quick profile: smaller)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"per-replica batch size (paper: {batch_size.value} — {batch_size.source})")
    p.add_argument("--seed", type=int, default=seed.value, help=f"seed for splits, shuffling and weights "
                   f"(default {seed.value} — {seed.source})")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="tf.distribute strategy: one device, mirrored (local GPUs), multiworker (TF_CONFIG); "
                   "auto picks from the hardware (default)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint: the given run folder, "
                   "--out, or the latest run of this experiment")
    p.add_argument("--quick", action="store_true",
                   help="small synthetic profile (few cases, slices and epochs); default without --data-dir")
    p.set_defaults(_paper_epochs=epochs.value, _paper_batch_size=batch_size.value)
    return p


def add_slice_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the 2D slice experiments (papers 1 and 3); :func:`slice_overrides` applies them.
    Unset, each keeps the profile's value (paper: slices 22..121 at 128², quick: 20 slices at 64²)."""
    parser.add_argument("--slice-start", type=int, help="first axial slice (paper: 22)")
    parser.add_argument("--slice-count", type=int, help="axial slices per case (paper: 100; quick profile: 20)")
    parser.add_argument("--image-size", type=int, help="slice size after resizing (paper: 128; quick profile: 64)")
    parser.add_argument("--filters", type=int, help="base filters of the networks (default 32)")
    parser.add_argument("--max-eval-cases", type=int,
                        help="evaluate at most this many test patients on whole volumes (default: all; quick: 2)")


def slice_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config overrides of :func:`add_slice_arguments`' flags (``--filters`` goes to the
    model options, see :func:`apply_filters`)."""
    return {"data.slices.start": args.slice_start, "data.slices.count": args.slice_count,
            "data.slices.size": args.image_size, "data.max_eval_cases": args.max_eval_cases}


def apply_filters(config: Any, args: argparse.Namespace) -> Any:
    """``--filters`` into ``config.model.options`` (in place); returns ``config``."""
    if args.filters is not None:
        config.model.options["filters"] = args.filters
    return config


def resolve_run(args: argparse.Namespace, experiment: str, *, root: str = "runs") -> RunDir:
    """The run folder for these arguments: the one to resume, ``--out``, or a new timestamped one.

    Also settles ``args.quick`` (True without ``--data-dir``).
    """
    if args.data_dir is None:
        args.quick = True
    if args.resume is not None:
        if args.resume != "latest":
            return RunDir.create(args.resume, experiment)
        if args.out is not None:
            return RunDir.create(args.out, experiment)
        return RunDir.latest(experiment, root=root)
    return RunDir.create(args.out, experiment, root=root)


def configure(config: Any, args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """``config`` with the shared flags (``--epochs``, ``--batch-size``, ``--seed``, ``--strategy``)
    and the experiment's own dotted ``overrides`` applied; unset flags (``None``) keep the profile's.

    Raises:
        BratsKerasError: a flag's value that the config refuses (e.g. an image size the networks
            cannot take), so the CLI prints one ``error:`` line instead of a traceback.
    """
    try:
        return apply_overrides(config, {
            "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.seed": args.seed,
            "train.strategy": args.strategy, **overrides,
        })
    except ValueError as exc:
        raise BratsKerasError(f"invalid setting: {exc}") from None


def jit_compile_value(flag: str | None):
    """``--jit-compile auto|on|off`` → the ``TrainConfig.jit_compile`` value (``None``: keep the profile's)."""
    return None if flag is None else JIT_COMPILE_CHOICES[flag]


def record_config(run: RunDir, config: Any, synthetic: bool) -> Any:
    """Mark ``config`` synthetic or not, save it as the run's ``config.json`` and, for synthetic
    data, print the banner every output of such a run carries. Returns the updated config."""
    config = apply_overrides(config, {"synthetic": synthetic})
    save_config(run.config, config)
    if synthetic:
        print(f"\n*** {SYNTHETIC_WARNING} ***\n", flush=True)
    return config


def data_provenance(synthetic: bool) -> str:
    """The ``data_provenance`` entry of ``results.json``."""
    return "synthetic (brats_keras.data.synthetic)" if synthetic else "real data (--data-dir)"


def patient_split(run: RunDir, resume: bool, case_ids, *, test_fraction: float, val_fraction: float, seed: int,
                  strata=None, **meta) -> dict[str, list[str]]:
    """The run's patient split: the saved ``split.json`` when resuming, else a new seeded split
    (stratified by ``strata``, see :func:`~brats_keras.data.splits.split_cases`) written there with
    ``meta`` (data folder, skipped cases, ...)."""
    if resume and run.split.is_file():
        return load_split(run.split)
    split = split_cases(list(case_ids), test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                        strata=strata)
    save_split(run.split, split, seed=seed, unit="patient", **meta)
    return split


def finish_run(run: RunDir, table_markdown: str, results: dict, synthetic: bool) -> None:
    """Write ``table.md`` and ``results.json`` (atomically) and say where they are."""
    write_markdown(run.table, table_markdown)
    atomic_write_json(run.results, results)
    print(f"\nrun folder: {run.path}\n  table: {run.table}\n  results: {run.results}", flush=True)
    if synthetic:
        print(f"*** {SYNTHETIC_WARNING} ***", flush=True)


def evaluate_slice_model(predict, files: list[CaseFiles], slices: SliceSettings, *, eval_slices: str,
                         overlay_png, title: str, synthetic: bool) -> dict:
    """Dice / HD95 / sensitivity / specificity per BraTS region of a 2D slice model on whole test
    volumes (papers 1 and 3), and one overlay PNG of the first case's slice with the most tumour.

    ``predict`` maps a batch of prepared slices to class probabilities (``model.predict_on_batch``);
    ``files`` are the test cases, read with ``slices.modalities``; ``eval_slices`` is ``window`` or
    ``all`` (:func:`brats_keras.inference.slice_range`). Returns ``{"per_case", "summary"}``.
    """
    per_case = {}
    overlay_done = False
    for case_files in files:
        case = load_case(case_files, slices.modalities)
        pred = predict_volume_2d(predict, case, slices, slices=eval_slices)
        per_case[case.case_id] = evaluate_case(pred, case.label, case.spacing, case=case.case_id)
        window = list(slice_range(slices, case.label.shape[2], eval_slices))
        tumour_area = (case.label[:, :, window] > 0).sum(axis=(0, 1))
        if not overlay_done and tumour_area.any():
            k = window[int(np.argmax(tumour_area))]
            truth, pred_k = to_class_indices(case.label[:, :, k]), to_class_indices(pred[:, :, k])
            plot_prediction_overlay(np.rot90(case.image[:, :, k, 0]), np.rot90(truth), np.rot90(pred_k),
                                    overlay_png, num_classes=4, synthetic=synthetic,
                                    title=f"{title} — {case.case_id}, axial slice {k}")
            overlay_done = True
    return {"per_case": per_case, "summary": aggregate(per_case) if per_case else {}}
