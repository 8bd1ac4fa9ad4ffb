"""Benchmarks that print figures (never timed unit tests).

    python -m brats_keras.bench pipeline --data-dir DIR [--json PATH]
    python -m brats_keras.bench train3d [--models ...] [--batch-sizes 1,2] [--size 128] [--json PATH]

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

``train3d`` measures paper 2's networks as the experiment compiles them (Adam, Dice + focal loss,
accuracy, IoU) on random 128³ × 3 volumes: seconds per training step (median after a warm-up step),
seconds per forward pass, and peak memory per (model, batch size). Each configuration runs in its
own process, so peak host memory (``ru_maxrss``) is that configuration's alone; on a GPU the device's
peak is read from the backend (JAX ``memory_stats``, TensorFlow ``get_memory_info``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brats_keras.configs.base import JIT_COMPILE_CHOICES
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


def _device_peak_mb() -> float | None:
    """Peak accelerator memory of this process in MB, or ``None`` on CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        stats = device.memory_stats() or {}
        return round(stats.get("peak_bytes_in_use", 0) / 2**20, 1)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    return None


def bench_train3d_one(model_name: str, batch_size: int, size: int, steps: int = 2, jit_compile="auto") -> dict:
    """One (model, batch size) configuration in this process: step times and peak memory."""
    import keras

    from brats_keras.configs.base import TrainConfig, make_optimizer
    from brats_keras.configs.paper2 import paper2_loss, paper2_metrics
    from brats_keras.models import create_model

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, size, size, size, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=(batch_size, size, size, size))]
    model = create_model(model_name, input_shape=(size, size, size, 3))
    model.compile(optimizer=make_optimizer(TrainConfig(epochs=1, batch_size=batch_size, learning_rate=1e-4)),
                  loss=paper2_loss(), metrics=paper2_metrics(), jit_compile=jit_compile)
    times = []
    for _ in range(steps + 1):  # the first step traces / compiles
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.predict_on_batch(x)
    model.predict_on_batch(x)
    forward = (time.perf_counter() - t0) / 2
    return {"model": model_name, "batch_size": batch_size, "size": size, "backend": keras.backend.backend(),
            "jit_compile": jit_compile,
            "first_step_s": round(times[0], 2), "step_s": round(float(np.median(times[1:])), 2),
            "forward_s": round(forward, 2), "peak_host_mb": round(peak_rss_mb(), 1),
            "peak_device_mb": _device_peak_mb()}


def bench_train3d(models, batch_sizes, size: int, steps: int = 2, jit_compile: str = "auto") -> list[dict]:
    """Every (model, batch size) in a fresh subprocess; one result dict each (or an ``error``)."""
    rows = []
    for model_name in models:
        for batch in batch_sizes:
            cmd = [sys.executable, "-m", "brats_keras.bench", "train3d-one", "--model", model_name,
                   "--batch-size", str(batch), "--size", str(size), "--steps", str(steps),
                   "--jit-compile", jit_compile]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode == 0 and lines:
                rows.append(json.loads(lines[-1]))
            else:  # e.g. out of memory: recorded, the other configurations still run
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"model": model_name, "batch_size": batch, "size": size,
                             "error": f"exit {proc.returncode}: {tail[:300]}"})
            print(json.dumps(rows[-1]), flush=True)
    return rows


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
    p = sub.add_parser("train3d", help="paper 2's 3D U-Nets: step time and peak memory per batch size")
    p.add_argument("--models", default="unet3d_simple,unet3d_modified,unet3d_spatial_attention",
                   help="comma-separated registered model names (default: paper 2's three)")
    p.add_argument("--batch-sizes", default="1,2", help="comma-separated batch sizes (default 1,2)")
    p.add_argument("--size", type=int, default=128, help="crop edge in voxels (default 128, the paper's)")
    p.add_argument("--steps", type=int, default=2, help="timed training steps after the warm-up one (default 2)")
    p.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES), default="auto",
                   help="XLA for the train step: auto (Keras' rule: not on CPU), on, off")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p = sub.add_parser("train3d-one", help=argparse.SUPPRESS)
    p.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES), default="auto")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "train3d-one":
        jit = JIT_COMPILE_CHOICES[args.jit_compile]
        row = bench_train3d_one(args.model, args.batch_size, args.size, args.steps, jit)
        print(json.dumps(row), flush=True)
        return 0
    if args.command == "train3d":
        rows = bench_train3d(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.size,
                             args.steps, args.jit_compile)
        if args.json:
            atomic_write_json(args.json, {"train3d": rows})
        return 1 if any("error" in row for row in rows) else 0
    results = bench_pipeline(args.data_dir, epochs=args.epochs, reference_cases=args.reference_cases)
    _print_table(results)
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
