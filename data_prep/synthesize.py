"""Write SYNTHETIC data sets in the layout of a public release: BraTS (case folders) or figshare (.mat slices).

    python data_prep/synthesize.py --dataset brats2020 --out data/synthetic_brats2020 --cases 20 --seed 0
    python data_prep/synthesize.py --dataset figshare --out data/synthetic_figshare --cases 24 --slices-per-patient 6
    python data_prep/synthesize.py --dataset brain-tumor-mri --out data/synthetic_brain_tumor_mri --cases 60
    python data_prep/synthesize.py --dataset lgg --out data/synthetic_lgg --cases 12

The real data cannot be downloaded here; these sets let every pipeline run end to end. BraTS cases:
MNI152 anatomy, a random three-region tumour, four MRI contrasts (docs/synthetic_data.md). figshare
(paper 4): for ``--dataset figshare`` ``--cases`` counts patients, each with ``--slices-per-patient``
neighbouring T1ce slices through a meningioma, glioma or pituitary tumour (in turn), written as
MATLAB v7.3 files ``1.mat``, ``2.mat``, … of ``--size`` × ``--size`` pixels (docs/data.md). Paper 5:
``--dataset brain-tumor-mri`` writes ``Training/<class>/*.jpg`` and ``Testing/<class>/*.jpg`` (``--cases``
and ``--test-cases`` images per class), ``--dataset lgg`` writes ``kaggle_3m/<patient>/<patient>_<k>.tif``
and ``_mask.tif`` (``--cases`` patients). ``--shape`` and ``--first-id`` are BraTS-only. They are not patient data, and results on them are never a
replication of a paper's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("brats_keras") is None:  # run as a script from a checkout not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras.data.brain_mri import write_brain_mri_dataset
from brats_keras.data.figshare import write_figshare_dataset
from brats_keras.data.layout import BRATS_SHAPE, LAYOUTS
from brats_keras.data.lgg import write_lgg_dataset
from brats_keras.data.synthetic import MIN_DIM, write_dataset
from brats_keras.errors import cli_errors

FIGSHARE, BRAIN_MRI, LGG = "figshare", "brain-tumor-mri", "lgg"
FIGSHARE_SLICES, FIGSHARE_SIZE = 6, 512
LGG_SLICES, LGG_SIZE = 24, 256
OWN_FLAGS = {
    "shape": ("--shape", set(LAYOUTS)), "first_id": ("--first-id", set(LAYOUTS)),
    "slices_per_patient": ("--slices-per-patient", {FIGSHARE, LGG}), "size": ("--size", {FIGSHARE, BRAIN_MRI, LGG}),
    "test_cases": ("--test-cases", {BRAIN_MRI}),
}
"""Flags that only some data sets take (attribute → flag, data sets)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=[*sorted(LAYOUTS), FIGSHARE, BRAIN_MRI, LGG],
                   help="layout of the release")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder (case folders, .mat, .jpg or .tif files are written inside)")
    p.add_argument("--cases", required=True, type=int,
                   help="number of cases (≥ 1); figshare, lgg: patients; brain-tumor-mri: Training/ images per class")
    p.add_argument("--seed", type=int, default=0, help="case n is drawn from default_rng([seed, n]) (default 0)")
    p.add_argument("--shape", nargs=3, type=int, default=None, metavar=("X", "Y", "Z"),
                   help=f"BraTS only: grid size, each ≥ {MIN_DIM} (default: BraTS {' '.join(map(str, BRATS_SHAPE))})")
    p.add_argument("--first-id", type=int, default=None,
                   help="BraTS only: number of the first case (default: 1 for brats2020, 0 for brats2021)")
    p.add_argument("--slices-per-patient", type=int, default=None,
                   help=f"figshare, lgg: slices per patient, ≥ 1 (default {FIGSHARE_SLICES} / {LGG_SLICES})")
    p.add_argument("--size", type=int, default=None,
                   help=f"figshare, lgg: image side in pixels, ≥ 16 (default {FIGSHARE_SIZE} / {LGG_SIZE}, as the "
                   "releases); brain-tumor-mri: the largest side (default: the release's mix, up to 630)")
    p.add_argument("--test-cases", type=int, default=None,
                   help="brain-tumor-mri only: Testing/ images per class (default: a quarter of --cases)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error(f"--cases must be ≥ 1, got {args.cases}")
    for attr, (flag, datasets) in OWN_FLAGS.items():
        if getattr(args, attr) is not None and args.dataset not in datasets:
            p.error(f"{flag} applies to --dataset {', '.join(sorted(datasets))} only, not {args.dataset}")
    if args.dataset in LAYOUTS:
        args.shape = list(BRATS_SHAPE) if args.shape is None else args.shape
        if min(args.shape) < MIN_DIM:
            p.error(f"--shape dimensions must be ≥ {MIN_DIM}, got {' '.join(map(str, args.shape))}")
    if args.dataset in (FIGSHARE, LGG):
        default_slices, default_size = (FIGSHARE_SLICES, FIGSHARE_SIZE) if args.dataset == FIGSHARE else (LGG_SLICES, LGG_SIZE)
        args.slices_per_patient = default_slices if args.slices_per_patient is None else args.slices_per_patient
        args.size = default_size if args.size is None else args.size
        if args.slices_per_patient < 1:
            p.error(f"--slices-per-patient must be ≥ 1, got {args.slices_per_patient}")
    if args.size is not None and args.size < 16:
        p.error(f"--size must be ≥ 16, got {args.size}")
    if args.dataset == BRAIN_MRI:
        args.test_cases = max(1, args.cases // 4) if args.test_cases is None else args.test_cases
        if args.test_cases < 0:
            p.error(f"--test-cases must be ≥ 0, got {args.test_cases}")
    return args


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    if args.dataset == FIGSHARE:
        files = write_figshare_dataset(args.out, patients=args.cases, slices_per_patient=args.slices_per_patient,
                                       seed=args.seed, size=args.size, progress=progress)
        what = f"{len(files)} SYNTHETIC figshare slices of {args.cases} patients"
    elif args.dataset == BRAIN_MRI:
        files = write_brain_mri_dataset(args.out, per_class=args.cases, test_per_class=args.test_cases, seed=args.seed,
                                        max_size=args.size, progress=progress)
        what = f"{len(files)} SYNTHETIC brain-tumour MRI images ({args.cases} + {args.test_cases} per class)"
    elif args.dataset == LGG:
        files = write_lgg_dataset(args.out, patients=args.cases, slices=args.slices_per_patient, seed=args.seed,
                                  size=args.size, progress=progress)
        what = f"{len(files)} SYNTHETIC LGG slices of {args.cases} patients"
    else:
        folders = write_dataset(args.out, dataset=args.dataset, cases=args.cases, seed=args.seed,
                                shape=tuple(args.shape), first_id=args.first_id, progress=progress)
        what = f"{len(folders)} SYNTHETIC {args.dataset} cases"
    print(f"wrote {what} (not patient data) to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
