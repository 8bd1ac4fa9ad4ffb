"""Write SYNTHETIC data sets in the layout of a public release: BraTS (case folders) or figshare (.mat slices).

    python data_prep/synthesize.py --dataset brats2020 --out data/synthetic_brats2020 --cases 20 --seed 0
    python data_prep/synthesize.py --dataset figshare --out data/synthetic_figshare --cases 24 --slices-per-patient 6

The real data cannot be downloaded here; these sets let every pipeline run end to end. BraTS cases:
MNI152 anatomy, a random three-region tumour, four MRI contrasts (docs/synthetic_data.md). figshare
(paper 4): for ``--dataset figshare`` ``--cases`` counts patients, each with ``--slices-per-patient``
neighbouring T1ce slices through a meningioma, glioma or pituitary tumour (in turn), written as
MATLAB v7.3 files ``1.mat``, ``2.mat``, … of ``--size`` × ``--size`` pixels (docs/data.md). ``--shape``
and ``--first-id`` are BraTS-only. They are not patient data, and results on them are never a
replication of a paper's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("brats_keras") is None:  # run as a script from a checkout not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras.data.layout import BRATS_SHAPE, LAYOUTS
from brats_keras.data.synthetic import MIN_DIM, write_dataset
from brats_keras.errors import cli_errors

FIGSHARE = "figshare"
FIGSHARE_SLICES, FIGSHARE_SIZE = 6, 512


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=[*sorted(LAYOUTS), FIGSHARE], help="layout of the release")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder (case folders or .mat files are written inside)")
    p.add_argument("--cases", required=True, type=int, help="number of cases (≥ 1); figshare: number of patients")
    p.add_argument("--seed", type=int, default=0, help="case n is drawn from default_rng([seed, n]) (default 0)")
    p.add_argument("--shape", nargs=3, type=int, default=None, metavar=("X", "Y", "Z"),
                   help=f"BraTS only: grid size, each ≥ {MIN_DIM} (default: BraTS {' '.join(map(str, BRATS_SHAPE))})")
    p.add_argument("--first-id", type=int, default=None,
                   help="BraTS only: number of the first case (default: 1 for brats2020, 0 for brats2021)")
    p.add_argument("--slices-per-patient", type=int, default=None,
                   help=f"figshare only: neighbouring slices per patient, ≥ 1 (default {FIGSHARE_SLICES})")
    p.add_argument("--size", type=int, default=None,
                   help=f"figshare only: image side in pixels, ≥ 16 (default {FIGSHARE_SIZE}, as the release)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error(f"--cases must be ≥ 1, got {args.cases}")
    if args.dataset == FIGSHARE:
        for flag, value in (("--shape", args.shape), ("--first-id", args.first_id)):
            if value is not None:
                p.error(f"{flag} applies to the BraTS data sets only, not figshare")
        args.slices_per_patient = FIGSHARE_SLICES if args.slices_per_patient is None else args.slices_per_patient
        args.size = FIGSHARE_SIZE if args.size is None else args.size
        if args.slices_per_patient < 1:
            p.error(f"--slices-per-patient must be ≥ 1, got {args.slices_per_patient}")
        if args.size < 16:
            p.error(f"--size must be ≥ 16, got {args.size}")
    else:
        for flag, value in (("--slices-per-patient", args.slices_per_patient), ("--size", args.size)):
            if value is not None:
                p.error(f"{flag} applies to --dataset figshare only")
        args.shape = list(BRATS_SHAPE) if args.shape is None else args.shape
        if min(args.shape) < MIN_DIM:
            p.error(f"--shape dimensions must be ≥ {MIN_DIM}, got {' '.join(map(str, args.shape))}")
    return args


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dataset == FIGSHARE:
        from brats_keras.data.figshare import write_figshare_dataset

        files = write_figshare_dataset(args.out, patients=args.cases, slices_per_patient=args.slices_per_patient,
                                       seed=args.seed, size=args.size, progress=not args.no_progress)
        print(f"wrote {len(files)} SYNTHETIC figshare slices of {args.cases} patients (not patient data) "
              f"to {args.out.resolve()}")
        return 0
    folders = write_dataset(args.out, dataset=args.dataset, cases=args.cases, seed=args.seed,
                            shape=tuple(args.shape), first_id=args.first_id, progress=not args.no_progress)
    print(f"wrote {len(folders)} SYNTHETIC {args.dataset} cases (not patient data) to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
