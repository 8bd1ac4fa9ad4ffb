"""Command line for new patients: predict label maps, score them.

    python -m brats_keras predict --model runs/paper1_u_resunet/<run>/u_resunet/model.keras \\
        --data-dir BraTS2021_ValidationData --out predictions/
    python -m brats_keras evaluate --pred-dir predictions/ --label-dir BraTS2021_TrainingData \\
        --out scores.csv

``predict`` takes a ``model.keras`` file or a ``saved_model/`` folder written by an experiment; the
pre-processing comes with the model (``inference.json``) or its run's ``config.json``, never from
the command line. Exit status: 0 when every case was written (or scored), 1 when some case failed
and the others completed, 2 when nothing could start (bad arguments, no model, no cases).
"""

from __future__ import annotations

import argparse
import os
import sys

from brats_keras.errors import cli_errors
from brats_keras.precision import PRECISIONS
from brats_keras.scoring import score_folder, summary_text, write_scores_csv


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m brats_keras", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="write <case>.nii.gz label maps for a folder of BraTS cases")
    p.add_argument("--model", required=True, help="model.keras file or saved_model/ folder of a run")
    p.add_argument("--data-dir", required=True, help="BraTS 2020 / 2021 case folders (label files optional), "
                   "or one case folder")
    p.add_argument("--out", required=True, help="folder for <case>.nii.gz and predictions.json")
    p.add_argument("--batch-size", type=positive_int, help="slices (2D, default 16) or windows (3D, default 1) "
                   "per forward pass")
    p.add_argument("--overlap", type=fraction, default=0.5,
                   help="3D: overlap of neighbouring windows, a fraction of the window (default 0.5)")
    p.add_argument("--blending", choices=("gaussian", "constant"), default="gaussian",
                   help="3D: weights of overlapping windows (default gaussian)")
    p.add_argument("--predict-empty-slices", action="store_true",
                   help="2D: also run the model on axial slices without a brain voxel (default: they are "
                   "background)")
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                   help="TensorFlow: XLA for the forward pass; auto (default): on for 2D models and on GPUs, "
                   "off for 3D models on a CPU, where it is several times slower")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="dtype policy of the forward pass: auto (default) picks mixed_bfloat16 on GPUs of compute "
                   "capability >= 8 and CPUs with native bfloat16, mixed_float16 on older GPUs, else float32; a "
                   "SavedModel keeps the policy it was exported with")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output folder's predictions of another model or settings, and redo written cases")
    p = sub.add_parser("evaluate", help="Dice, HD95, sensitivity, specificity per case and region as CSV")
    p.add_argument("--pred-dir", required=True, help="folder of <case>.nii.gz predictions")
    p.add_argument("--label-dir", required=True,
                   help="BraTS training folder (case folders with <case>_seg.nii.gz) or folder of label files")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--workers", type=positive_int, default=2, help="cases scored at once (default 2)")
    return parser


def predict_command(args) -> int:
    # Keras and TensorFlow load here, only for `predict`: `evaluate` and --help need neither.
    from brats_keras.configs.base import JIT_COMPILE_CHOICES
    from brats_keras.predict import PredictSettings, predict_folder

    settings = PredictSettings(overlap=args.overlap, blending=args.blending, skip_empty=not args.predict_empty_slices,
                               batch_size=args.batch_size,
                               jit_compile=JIT_COMPILE_CHOICES[args.jit_compile], precision=args.precision)
    record = predict_folder(args.model, args.data_dir, args.out, settings=settings, overwrite=args.overwrite)
    return 1 if record["failed"] else 0


def evaluate_command(args) -> int:
    report = score_folder(args.pred_dir, args.label_dir, workers=args.workers)
    for case_id, problem in report["failed"].items():
        print(f"{case_id}: FAILED — {problem}", file=sys.stderr)
    for case_id, result in report["cases"].items():
        if result["status"] != "ok" or result["note"]:
            print(f"{case_id}: {result['status']} — {result['note']}", file=sys.stderr)
    if report["extra"]:
        print(f"predictions without a reference label (not scored): {', '.join(report['extra'])}", file=sys.stderr)
    path = write_scores_csv(args.out, report)
    print(summary_text(report))
    print(f"scores: {path}")
    invalid = any(r["status"] == "invalid" for r in report["cases"].values())
    return 1 if report["failed"] or invalid else 0


@cli_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before a command imports TensorFlow
    if args.command == "predict":
        return predict_command(args)
    return evaluate_command(args)


if __name__ == "__main__":
    sys.exit(main())
