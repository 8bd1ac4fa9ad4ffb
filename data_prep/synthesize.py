"""Write SYNTHETIC BraTS-like cases in the folder layout of a public BraTS training release.

    python data_prep/synthesize.py --dataset brats2020 --out data/synthetic_brats2020 --cases 20 --seed 0

The real BraTS data cannot be downloaded here; these cases (MNI152 anatomy, a random three-region
tumour, four MRI contrasts) let every pipeline run end to end. They are not patient data, and
results on them are never a replication of a paper's numbers. See docs/synthetic_data.md.
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(LAYOUTS), help="naming scheme of the release")
    p.add_argument("--out", required=True, type=Path, help="output folder (case folders are written inside)")
    p.add_argument("--cases", required=True, type=int, help="number of cases (≥ 1)")
    p.add_argument("--seed", type=int, default=0, help="case n is drawn from default_rng([seed, n]) (default 0)")
    p.add_argument("--shape", nargs=3, type=int, default=list(BRATS_SHAPE), metavar=("X", "Y", "Z"),
                   help=f"grid size, each ≥ {MIN_DIM} (default: BraTS {' '.join(map(str, BRATS_SHAPE))})")
    p.add_argument("--first-id", type=int, default=None,
                   help="number of the first case (default: 1 for brats2020, 0 for brats2021)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error(f"--cases must be ≥ 1, got {args.cases}")
    if min(args.shape) < MIN_DIM:
        p.error(f"--shape dimensions must be ≥ {MIN_DIM}, got {' '.join(map(str, args.shape))}")
    return args


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    folders = write_dataset(args.out, dataset=args.dataset, cases=args.cases, seed=args.seed,
                            shape=tuple(args.shape), first_id=args.first_id, progress=not args.no_progress)
    print(f"wrote {len(folders)} SYNTHETIC {args.dataset} cases (not patient data) to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
