"""Benchmarks that print figures (never timed unit tests).

    python -m brats_keras.bench pipeline --data-dir DIR [--json PATH]

``pipeline`` measures, on the same BraTS-layout folder:

* ours, first epoch: slices/s of the 2D pipeline including decoding every case into the cache
  (a fresh cache folder, so this is the cold cost);
* ours, cached epochs: slices/s of the 2D tf.data pipeline over the cache (batch 32, shuffled),
  the median over ``--epochs`` epochs (min and max are recorded too);
* reference: slices/s of a faithful re-implementation of the widely copied BraTS-2020 2D
  ``keras.utils.Sequence`` (per batch: load the case's FLAIR, T1ce and seg with ``get_fdata``,
  ``cv2.resize`` 100 slices to 128², one-hot the label with ``tf.one_hot`` and resize it with
  ``tf.image.resize``, divide by the batch maximum);
* 3D: volumes/s of the paper 2 loader over pre-processed ``.npy`` cases (batch 2), and the
  pre-processing time per case;
* peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brats_keras.data.brats import CaseFiles, discover_cases
from brats_keras.data.slices2d import SliceCache, SliceIndex, SliceSettings
from brats_keras.data.volumes3d import REFERENCE_CROP, Preprocess3DSettings, VolumeIndex, preprocess_dataset_3d
from brats_keras.errors import cli_errors
from brats_keras.io_utils import atomic_write_json


def _resize_2d():
    """``cv2.resize`` as the reference uses when OpenCV is installed; TensorFlow's bilinear otherwise."""
    try:
        import cv2

        return "cv2.resize", lambda img, size: cv2.resize(img, (size, size))
    except ImportError:
        import tensorflow as tf

        return "tf.image.resize", lambda img, size: tf.image.resize(img[..., None], (size, size)).numpy()[..., 0]


class ReferenceSliceSequence:
    """The common reference 2D generator: one case (``count`` slices) per batch, decoded every time.

    Kept to the original's structure (float64 ``get_fdata``, per-slice resize, one-hot then
    bilinear resize of the mask, ``X / np.max(X)``) so its cost is what users of that code pay.
    """

    def __init__(self, cases: list[CaseFiles], settings: SliceSettings):
        import tensorflow as tf

        self._tf = tf
        self.cases = cases
        self.settings = settings
        self.resize_name, self._resize = _resize_2d()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        import nibabel as nib

        tf, s = self._tf, self.settings
        case = self.cases[i]
        flair = nib.load(str(case.images["flair"])).get_fdata()
        ce = nib.load(str(case.images["t1ce"])).get_fdata()
        seg = nib.load(str(case.label)).get_fdata()
        x = np.zeros((s.count, s.size, s.size, 2))
        y = np.zeros((s.count, *seg.shape[:2]))
        for j in range(s.count):
            x[j, :, :, 0] = self._resize(flair[:, :, j + s.start], s.size)
            x[j, :, :, 1] = self._resize(ce[:, :, j + s.start], s.size)
            y[j] = seg[:, :, j + s.start]
        y[y == 4] = 3
        mask = tf.one_hot(y, 4)
        target = tf.image.resize(mask, (s.size, s.size))
        return x / np.max(x), target


def _settings_for(case: CaseFiles) -> SliceSettings:
    """Paper 1's slice window when the volumes have the BraTS depth, else the whole depth."""
    import nibabel as nib

    depth = nib.load(str(case.images["flair"])).shape[2]
    if depth >= 122:
        return SliceSettings()
    return SliceSettings(start=0, count=depth, size=min(128, depth))


def _crop_for(case: CaseFiles) -> tuple[tuple[int, int], ...]:
    import nibabel as nib

    shape = nib.load(str(case.images["flair"])).shape
    if all(hi <= n for (_, hi), n in zip(REFERENCE_CROP, shape)):
        return REFERENCE_CROP
    side = min(128, *shape)
    return tuple(((n - side) // 2, (n - side) // 2 + side) for n in shape)


def _drain(dataset) -> int:
    n = 0
    for x, _ in dataset:
        n += int(x.shape[0])
    return n


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_pipeline(data_dir: str | Path, *, epochs: int = 5, reference_cases: int = 8, batch_size: int = 32) -> dict:
    from brats_keras.data.pipeline import make_dataset

    cases = discover_cases(data_dir)
    settings = _settings_for(cases[0])
    results: dict = {"data_dir": str(Path(data_dir).resolve()), "cases": len(cases), "batch_size": batch_size,
                     "slice_settings": {"start": settings.start, "count": settings.count, "size": settings.size}}
    with tempfile.TemporaryDirectory(prefix="brats_keras_bench_") as tmp:
        t0 = time.perf_counter()
        entries = SliceCache(settings, tmp).ensure(cases, progress=False)
        index = SliceIndex(entries)
        dataset = make_dataset(index, batch_size=batch_size, shuffle=True, seed=0)
        n = _drain(dataset)
        os.sync()  # the cache's writes reach the disk now, in the first epoch's time, not during the next ones
        first = time.perf_counter() - t0
        rates = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            rates.append(_drain(dataset) / (time.perf_counter() - t0))
        results.update(
            slices=n,
            ours_first_epoch_s=round(first, 3),
            ours_first_epoch_slices_per_s=round(n / first, 1),
            ours_cached_epochs=epochs,
            ours_slices_per_s=round(float(np.median(rates)), 1),
            ours_slices_per_s_min=round(min(rates), 1),
            ours_slices_per_s_max=round(max(rates), 1),
        )

        reference = ReferenceSliceSequence(cases[:reference_cases], settings)
        t0 = time.perf_counter()
        ref_slices = sum(int(reference[i][0].shape[0]) for i in range(len(reference)))
        ref_time = time.perf_counter() - t0
        results.update(
            reference_cases=len(reference),
            reference_resize=reference.resize_name,
            reference_slices_per_s=round(ref_slices / ref_time, 1),
            speedup_cached_vs_reference=round(results["ours_slices_per_s"] / (ref_slices / ref_time), 1),
        )

        settings3d = Preprocess3DSettings(crop=_crop_for(cases[0]), min_tumour_fraction=0.0)
        t0 = time.perf_counter()
        preprocess_dataset_3d(data_dir, Path(tmp) / "3d", settings3d, progress=False)
        prep = time.perf_counter() - t0
        volumes = VolumeIndex(Path(tmp) / "3d")
        vol_ds = make_dataset(volumes, batch_size=2, shuffle=True, seed=0)
        _drain(vol_ds)  # first pass pages the arrays in, as the first training epoch would
        t0 = time.perf_counter()
        vols = sum(_drain(vol_ds) for _ in range(epochs))
        vol_time = time.perf_counter() - t0
        results.update(
            volume_shape=list(volumes.x_shape),
            preprocess_3d_s_per_case=round(prep / len(cases), 3),
            ours_volumes_per_s=round(vols / vol_time, 2),
        )
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return results


def _print_table(results: dict) -> None:
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


@cli_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brats_keras.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="2D/3D input pipeline throughput vs the reference generator")
    p.add_argument("--data-dir", required=True, help="BraTS-layout folder (e.g. from data_prep/synthesize.py)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--epochs", type=int, default=5, help="cached epochs to time (default 5)")
    p.add_argument("--reference-cases", type=int, default=8, help="cases the reference generator decodes (default 8)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = bench_pipeline(args.data_dir, epochs=args.epochs, reference_cases=args.reference_cases)
    _print_table(results)
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
