"""Paper 3's pre-processing: N4 bias-field correction, a light denoiser and z-score, per modality.

    python data_prep/correct_bias.py --data-dir BraTS2020_TrainingData --out data/brats2020_n4

Writes the corrected volumes in the BraTS layout (``OUT/<case>/<case>_<modality>.nii.gz``, float32,
the source's affine and header; label files copied unchanged) and ``OUT/correction_manifest.json``
with the settings and every case's outcome. Re-running skips cases whose sources and settings are
unchanged. A case that fails is reported and the others complete; the exit status is then 1.
See ``brats_keras/data/correction.py`` for the steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

if importlib.util.find_spec("brats_keras") is None:  # run as a script from a checkout not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras.data.brats import find_cases
from brats_keras.data.correction import (
    DENOISERS, MANIFEST_NAME, CorrectionSettings, correct_dataset,
)
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.data.layout import MODALITIES
from brats_keras.errors import BratsKerasError, cli_errors
from brats_keras.reporting import save_correction_figure

DEFAULTS = CorrectionSettings()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="BraTS 2020 or 2021 folder (case folders inside)")
    p.add_argument("--out", required=True, help="output folder (BraTS layout) for the corrected cases")
    p.add_argument("--modalities", default=",".join(DEFAULTS.modalities),
                   help=f"comma-separated, from {','.join(MODALITIES)} (default: all four)")
    p.add_argument("--shrink-factor", type=int, default=DEFAULTS.shrink_factor,
                   help=f"N4 fits on the volume shrunk by this factor (default {DEFAULTS.shrink_factor})")
    p.add_argument("--iterations", default=",".join(map(str, DEFAULTS.iterations)),
                   help="N4 iterations per fitting level, comma-separated (default "
                   f"{','.join(map(str, DEFAULTS.iterations))})")
    p.add_argument("--denoise", choices=DENOISERS, default=DEFAULTS.denoise,
                   help=f"edge-preserving denoiser after N4 (default {DEFAULTS.denoise})")
    p.add_argument("--denoise-iterations", type=int, default=DEFAULTS.denoise_iterations,
                   help=f"denoiser steps (default {DEFAULTS.denoise_iterations})")
    p.add_argument("--figure", metavar="PNG",
                   help="also save a before / after figure (raw, estimated field, corrected) of the first case")
    p.add_argument("--figure-modality", choices=MODALITIES, default="t1", help="modality of --figure (default t1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="cases corrected in parallel (default: the CPU count)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> CorrectionSettings:
    """The settings the flags describe; a bad value is a one-line error (exit 2)."""
    try:
        return CorrectionSettings(
            modalities=tuple(m for m in args.modalities.split(",") if m), shrink_factor=args.shrink_factor,
            iterations=tuple(int(n) for n in args.iterations.split(",") if n), denoise=args.denoise,
            denoise_iterations=args.denoise_iterations)
    except ValueError as exc:
        raise BratsKerasError(f"bad setting: {exc}") from None


@cli_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    manifest = correct_dataset(args.data_dir, args.out, settings, workers=max(1, args.workers),
                               progress=not args.no_progress)
    statuses = [entry["status"] for entry in manifest["cases"].values()]
    if args.figure:
        cases, _ = find_cases(args.data_dir, modalities=settings.modalities)
        if cases:
            png = save_correction_figure(cases[0], args.figure, settings, modality=args.figure_modality,
                                         synthetic=is_synthetic_dataset(args.data_dir))
            print(f"figure: {png}")
    print(f"{statuses.count('corrected')} corrected, {statuses.count('up to date')} up to date, "
          f"{statuses.count('failed')} failed; manifest: {Path(args.out) / MANIFEST_NAME}")
    return 1 if "failed" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
