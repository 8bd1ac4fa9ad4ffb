"""Paper 2's 3D pre-processing: BraTS NIfTI cases → 128³×3 float32 + uint8 mask ``.npy`` per case.

    python data_prep/preprocess_3d.py --data-dir BraTS2020_TrainingData --out data/brats2020_3d

Writes ``OUT/images/<case>.npy`` (FLAIR, T1ce, T2; each axial slice min-max scaled as the
reference's ``MinMaxScaler`` on ``reshape(-1, 155)``), ``OUT/masks/<case>.npy`` (classes 0..3) and
``OUT/manifest.json`` listing kept cases and skipped ones (≤ 1 % tumour in the crop) with the reason.
Re-running resumes: unchanged cases are not processed again.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("brats_keras") is None:  # run as a script from a checkout not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras.data.volumes3d import REFERENCE_CROP, SCALINGS, Preprocess3DSettings, parse_crop, preprocess_dataset_3d
from brats_keras.errors import cli_errors


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="BraTS 2020 or 2021 training folder (case folders inside)")
    p.add_argument("--out", required=True, help="output folder for images/, masks/ and manifest.json")
    default_crop = ",".join(f"{a}:{b}" for a, b in REFERENCE_CROP)
    p.add_argument("--crop", default=default_crop, help=f"x0:x1,y0:y1,z0:z1 (reference: {default_crop})")
    p.add_argument("--scaling", choices=SCALINGS, default="per_slice",
                   help="min-max scaling per axial slice (reference, default) or per volume")
    p.add_argument("--min-tumour-fraction", type=float, default=0.01,
                   help="keep a case only if more than this fraction of cropped voxels is tumour (reference: 0.01)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = Preprocess3DSettings(
            crop=parse_crop(args.crop), scaling=args.scaling, min_tumour_fraction=args.min_tumour_fraction
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = preprocess_dataset_3d(args.data_dir, args.out, settings, progress=not args.no_progress)
    print(f"kept {len(manifest['kept'])} cases, skipped {len(manifest['skipped'])}; manifest: {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
