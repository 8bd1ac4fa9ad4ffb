"""Benchmarks that print figures (never timed unit tests).

    python -m brats_keras.bench pipeline --data-dir DIR [--json PATH]
    python -m brats_keras.bench train3d [--models ...] [--batch-sizes 1,2] [--size 128] [--json PATH]
    python -m brats_keras.bench train [--models unet2d,u_resunet] [--batch-sizes 16] [--size 128]
        [--precision auto,float32,mixed_bfloat16,mixed_float16] [--jit-compile auto|on|off] [--json PATH]
    python -m brats_keras.bench inference [--kinds 2d,3d] [--cases 3] [--overlap 0.5] [--json PATH]

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

``train`` measures the 2D and 3D paper models (:data:`TRAIN_MODELS`: papers 1, 2 and 3) as their
experiment builds them (the config's model settings, input channels, optimiser and loss; no metrics)
for every (model, batch size, precision), each in its own process (fresh Keras state, that
configuration's own peak memory): the median seconds per ``train_on_batch`` over ``--steps`` steps
after ``--warmup`` untimed ones, on fixed random float32 inputs; slices/s or volumes/s; peak memory
(host ``ru_maxrss`` in MiB; on a GPU the device's peak from JAX ``memory_stats`` or TensorFlow
``get_memory_info``); the forward FLOPs per sample counted analytically by :mod:`brats_keras.flops`
(2 × the multiply-accumulates of the convolutions, transposed convolutions and dense layers), the
FLOPs of a training step taken as 3 × forward × batch, the GFLOP/s this achieves, and its fraction of
a compiled 2048 × 2048 matmul in the policy's compute dtype (float32, bfloat16 or float16), measured
in the same process before and after the steps (the better of the two). ``--precision auto`` is
resolved by :func:`brats_keras.precision.resolve_precision` in the child, which records the policy
and the reason. Runs under ``KERAS_BACKEND=jax`` without TensorFlow installed (TensorFlow is imported
only in TensorFlow-backend branches).

``inference`` runs ``python -m brats_keras predict``'s code (:func:`brats_keras.predict.predict_folder`)
on full-size 240×240×155 synthetic cases, for paper 1's U-ResUNet (2D, 128² slices, filters 32) and
paper 2's modified 3D U-Net (128³ windows, overlap ``--overlap``), each in its own process with
seeded, untrained weights (time and memory do not depend on the weights). Per model: seconds per
case (the first, which includes decoding the first case and compiling, and the median of the
others, when the next case is decoded while the model runs), the model's share of it, and peak
host memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brats_keras.configs.base import (
    JIT_COMPILE_CHOICES, ModelConfig, TrainConfig, make_loss, make_model, make_optimizer,
)
from brats_keras.configs.paper1 import paper1_config
from brats_keras.configs.paper2 import paper2_config, paper2_loss, paper2_metrics
from brats_keras.configs.paper3 import paper3_config
from brats_keras.data.brats import CaseFiles, discover_cases
from brats_keras.data.slices2d import SliceCache, SliceIndex, SliceSettings
from brats_keras.data.volumes3d import REFERENCE_CROP, Preprocess3DSettings, VolumeIndex, preprocess_dataset_3d
from brats_keras.data.synthetic import ensure_synthetic_dataset
from brats_keras.errors import BratsKerasError, cli_errors
from brats_keras.export import export_model
from brats_keras.flops import CONVENTION, count_flops
from brats_keras.inference import InferenceSpec
from brats_keras.io import atomic_write_json
from brats_keras.models import create_model
from brats_keras.precision import PRECISIONS, Precision, cpu_cores, cpu_model, precision_scope, resolve_precision
from brats_keras.predict import PredictSettings, predict_folder


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
    # Imports TensorFlow itself: train3d / inference children may run on JAX and report their own peak memory.
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
            rows.append(_run_one(cmd, {"model": model_name, "batch_size": batch, "size": size}))
    return rows


TRAIN_MODELS = {
    "unet2d": paper1_config, "resunet2d": paper1_config, "u_resunet": paper1_config,  # paper 1
    "unet3d_simple": paper2_config, "unet3d_modified": paper2_config,  # paper 2
    "unet3d_spatial_attention": paper2_config,
    "unet2d_multimodal": paper3_config,  # paper 3
}
"""``bench train``'s models and the experiment config each takes its settings, input channels and loss from."""
MATMUL_SIZE = 2048
"""Edge of the square matmul whose throughput is ``bench train``'s ceiling."""


@dataclass(frozen=True)
class TrainSetup:
    """What ``bench train`` builds for one model: the experiment's model settings, optimiser and loss."""

    model: ModelConfig
    train: TrainConfig
    input_shape: tuple[int, ...]
    paper: str

    @property
    def sample(self) -> str:
        return "slice" if len(self.input_shape) == 3 else "volume"


def train_setup(name: str, size: int, filters: int | None = None) -> TrainSetup:
    """``name``'s paper configuration at ``size`` (``BratsKerasError`` for an unknown model or a size its
    depth cannot pool); ``filters`` replaces the paper's base filters (the tests' tiny models)."""
    if name not in TRAIN_MODELS:
        raise BratsKerasError(f"--models: {name!r} is not a model bench train knows; choose from "
                              f"{', '.join(TRAIN_MODELS)}")
    config = TRAIN_MODELS[name]()
    model = config.models.get(name)
    if model is None:  # resunet2d: the cascade's second stage on its own, with paper 1's classes and filters
        base = config.models["unet2d"].options
        model = ModelConfig(name, {"num_classes": base.num_classes, "filters": base.filters})
    if filters:
        model = ModelConfig(name, {**model.options.kwargs(), "filters": filters})
    depth = model.options.depth
    if size < 2**depth or size % 2**depth:
        raise BratsKerasError(f"--size: {size} is not a multiple of {2**depth} ({name} pools {depth} times)")
    data = config.data
    if hasattr(data, "slices"):
        shape = (size, size, data.slices.channels)
    else:
        shape = (size, size, size, len(data.preprocess.modalities))
    return TrainSetup(model, config.train, shape, config.paper)


def _device_name() -> str:
    """``gpu: NVIDIA H100 80GB HBM3`` or ``cpu: AMD EPYC ... (2 cores)`` for the backend's first device."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform}: {device.device_kind}"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)}"
    return f"cpu: {cpu_model()} ({cpu_cores()} cores)"


def matmul_gflops(dtype: str, *, jit_compile: bool = True, n: int = MATMUL_SIZE, repeats: int = 5,
                  min_batch_s: float = 0.1) -> tuple[float, str]:
    """GFLOP/s (``2 n³`` per product) of a compiled ``n × n`` matmul in ``dtype`` on the backend's device:
    JAX ``jax.jit``, TensorFlow ``tf.function`` (XLA when ``jit_compile``, as the train step), else
    eager ``keras.ops.matmul``. The median over ``repeats`` batches of products, each batch long enough
    (``min_batch_s``) that dispatch and the final synchronisation do not count. Returns the GFLOP/s and
    how the product ran (``"jax.jit"``, ``"tf.function"``, ``"tf.function(jit_compile=True)"``, ...)."""
    import keras

    rng = np.random.default_rng(1)
    a0, b0 = (rng.standard_normal((n, n)).astype("float32") for _ in range(2))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        a, b = jnp.asarray(a0, dtype=dtype), jnp.asarray(b0, dtype=dtype)
        product, engine = jax.jit(jnp.matmul), "jax.jit"

        def run(k: int) -> None:
            for _ in range(k):
                c = product(a, b)
            c.block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        a, b = tf.cast(a0, dtype), tf.cast(b0, dtype)
        product = tf.function(tf.linalg.matmul, jit_compile=bool(jit_compile))
        engine = "tf.function(jit_compile=True)" if jit_compile else "tf.function"

        def run(k: int) -> None:
            for _ in range(k):
                c = product(a, b)
            c[0, 0].numpy()  # waits for the device
    else:
        ops = keras.ops
        a, b = ops.cast(a0, dtype), ops.cast(b0, dtype)
        engine = f"keras.ops.matmul ({backend}, eager)"

        def run(k: int) -> None:
            for _ in range(k):
                c = ops.matmul(a, b)
            ops.convert_to_numpy(c[0, 0])
    run(2)  # compiles
    t0 = time.perf_counter()
    run(1)
    per_batch = max(1, math.ceil(min_batch_s / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(per_batch)
        times.append((time.perf_counter() - t0) / per_batch)
    return 2 * n**3 / float(np.median(times)) / 1e9, engine


def bench_train_one(model_name: str, batch_size: int, size: int, precision: str = "auto", steps: int = 3,
                    warmup: int = 2, jit_compile="auto", filters: int | None = None) -> dict:
    """One (model, batch size, precision) in this process: ``train_on_batch`` step time on fixed random
    float32 inputs, peak memory, the forward FLOPs (:mod:`brats_keras.flops`) and the achieved share of
    a same-dtype matmul's throughput, measured before and after the steps (the better of the two is the
    ceiling; the 1-minute load average before and after is recorded, since other work on the machine
    slows both)."""
    import keras

    setup = train_setup(model_name, size, filters)
    resolved = resolve_precision(precision)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rng = np.random.default_rng(0)
    num_classes = setup.model.options.num_classes
    x = rng.uniform(size=(batch_size, *setup.input_shape)).astype("float32")
    y = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, size=(batch_size, *setup.input_shape[:-1]))]
    keras.utils.set_random_seed(0)
    with precision_scope(resolved.policy):
        model = make_model(setup.model, input_shape=setup.input_shape)
        flops = count_flops(model)
        model.compile(optimizer=make_optimizer(setup.train), loss=make_loss(setup.train.loss), jit_compile=jit_compile)
        compute_dtype = model.dtype_policy.compute_dtype
        # the ceiling before and after the steps, the better of the two: a shared machine's load changes
        before = matmul_gflops(compute_dtype, jit_compile=bool(model.jit_compile))
        times = []
        for _ in range(warmup + steps):  # the first step traces / compiles
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
    peak_host, peak_device = round(peak_rss_mb(), 1), _device_peak_mb()  # before the matmul's buffers
    ceiling, engine = max(before, matmul_gflops(compute_dtype, jit_compile=bool(model.jit_compile)))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    step = float(np.median(times[warmup:]))
    train_flops = flops.train_step(batch_size)
    achieved = train_flops / step / 1e9
    return {"model": model_name, "paper": setup.paper, "batch_size": batch_size, "size": size,
            "input_shape": list(setup.input_shape), "sample": setup.sample, "params": int(model.count_params()),
            "backend": keras.backend.backend(), "device": _device_name(),
            "load_avg_1min": load, "load_avg_1min_after": load_after,
            **resolved.record(), "compute_dtype": compute_dtype,
            "jit_compile": jit_compile, "jit_compile_used": bool(model.jit_compile),
            "loss": setup.train.loss.name, "optimizer": setup.train.optimizer, "warmup_steps": warmup, "steps": steps,
            "first_step_s": round(times[0], 3), "step_s": round(step, 4),
            "step_s_min": round(min(times[warmup:]), 4), "step_s_max": round(max(times[warmup:]), 4),
            "samples_per_s": round(batch_size / step, 2),
            "forward_flop_per_sample": flops.forward, "train_flop_per_step": train_flops,
            "forward_gflop_per_sample": round(flops.forward / 1e9, 3),
            "train_gflop_per_step": round(train_flops / 1e9, 3), "uncounted_layers": flops.uncounted,
            "achieved_gflops": round(achieved, 1),
            "matmul_gflops": round(ceiling, 1), "matmul_dtype": compute_dtype, "matmul_size": MATMUL_SIZE,
            "matmul_engine": engine,
            "fraction_of_matmul": round(achieved / ceiling, 3),
            "peak_host_mb": peak_host, "peak_device_mb": peak_device}


def bench_train(models, batch_sizes, precisions, size: int, *, steps: int = 3, warmup: int = 2,
                jit_compile: str = "auto", filters: int | None = None) -> list[dict]:
    """Every (model, batch size, precision) in a fresh subprocess; one result dict each (or an ``error``)."""
    rows = []
    for model_name in models:
        for batch in batch_sizes:
            for precision in precisions:
                cmd = [sys.executable, "-m", "brats_keras.bench", "train-one", "--model", model_name,
                       "--batch-size", str(batch), "--size", str(size), "--precision", precision,
                       "--steps", str(steps), "--warmup", str(warmup), "--jit-compile", jit_compile]
                cmd += ["--filters", str(filters)] if filters else []
                identity = {"model": model_name, "batch_size": batch, "size": size, "precision_requested": precision}
                rows.append(_run_one(cmd, identity))
    return rows


def _print_train_table(rows: list[dict]) -> None:
    """The rows as a Markdown table, then each distinct precision choice and the FLOP convention."""
    head = ["model", "batch", "precision", "XLA", "s / step", "samples / s", "GFLOP / step", "GFLOP/s",
            "matmul GFLOP/s", "of matmul", "peak MiB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['batch_size']} | {r.get('precision_requested')} | | error: {r['error']} |")
            continue
        peak = r["peak_device_mb"] if r["peak_device_mb"] is not None else r["peak_host_mb"]
        cells = [r["model"], r["batch_size"], r["precision"], "yes" if r["jit_compile_used"] else "no",
                 f"{r['step_s']:.3f}", f"{r['samples_per_s']:.1f} {r['sample']}s",
                 f"{r['train_gflop_per_step']:.1f}", f"{r['achieved_gflops']:.0f}",
                 f"{r['matmul_gflops']:.0f} ({r['matmul_dtype']})", f"{100 * r['fraction_of_matmul']:.0f} %",
                 f"{peak:.0f} {'device' if r['peak_device_mb'] is not None else 'host'}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    ok = [r for r in rows if "error" not in r]
    for line in dict.fromkeys(Precision(r["precision"], r["precision_reason"], r["precision_requested"]).line()
                              for r in ok):
        print(line)
    for r in {r["model"]: r for r in ok}.values():
        print(f"{r['model']}: {r['forward_gflop_per_sample']} GFLOP forward per {r['sample']} "
              f"{tuple(r['input_shape'])}, loss {r['loss']} (paper config), device {r['device']}")
    print(CONVENTION)


def _positive_ints(text: str, flag: str) -> list[int]:
    values = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) < 1:
            raise BratsKerasError(f"{flag}: {part!r} is not a positive integer (a comma-separated list)")
        values.append(int(part))
    return values


def _train_args(args) -> tuple[list[str], list[int], list[str]]:
    """``bench train``'s flags checked before any model is built (``BratsKerasError`` on the first bad one)."""
    models = [m.strip() for m in args.models.split(",")]
    batch_sizes = _positive_ints(args.batch_sizes, "--batch-sizes")
    precisions = [p.strip() for p in args.precision.split(",")]
    for p in precisions:
        if p not in PRECISIONS:
            raise BratsKerasError(f"--precision: {p!r} is not one of {', '.join(PRECISIONS)}")
    if args.steps < 1:
        raise BratsKerasError(f"--steps: {args.steps} must be at least 1")
    if args.warmup < 0:
        raise BratsKerasError(f"--warmup: {args.warmup} must be at least 0")
    if args.filters is not None and args.filters < 1:
        raise BratsKerasError(f"--filters: {args.filters} must be at least 1")
    for name in models:
        train_setup(name, args.size, args.filters)  # unknown model, or a size it cannot pool
    return models, batch_sizes, precisions


INFERENCE_MODELS = {
    "2d": ("u_resunet", {"filters": 32}),  # paper 1's configuration (configs/paper1.py)
    "3d": ("unet3d_modified", {}),  # paper 2's modified U-Net (configs/paper2.py)
}


def bench_inference_one(kind: str, data_dir: str | Path, *, overlap: float = 0.5, image_size: int | None = None,
                        filters: int | None = None) -> dict:
    """One model kind in this process: ``predict_folder`` over every case of ``data_dir``."""
    import keras

    name, options = INFERENCE_MODELS[kind]
    options = {**options, **({"filters": filters} if filters else {})}
    keras.utils.set_random_seed(0)
    if kind == "2d":
        slices = SliceSettings(size=image_size) if image_size else SliceSettings()
        spec = InferenceSpec.for_slices(slices, experiment="bench", model=name)
        model = create_model(name, input_shape=(slices.size, slices.size, slices.channels), **options)
    else:
        volume = Preprocess3DSettings()
        if image_size:
            volume = Preprocess3DSettings(crop=((0, image_size),) * 3)
        spec = InferenceSpec.for_volume(volume, experiment="bench", model=name)
        edge = volume.crop[0][1] - volume.crop[0][0]
        model = create_model(name, input_shape=(edge, edge, edge, len(volume.modalities)), **options)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / name / "model.keras"
        export_model(model, model_path, None, spec)
        params = int(model.count_params())
        del model
        started = time.perf_counter()
        record = predict_folder(model_path, data_dir, Path(tmp) / "out", settings=PredictSettings(overlap=overlap),
                                progress=False)
        wall = time.perf_counter() - started
    cases = [c for c in record["cases"].values() if c["status"] == "written"]
    if not cases:
        raise RuntimeError(f"no case predicted: {record['cases']}")
    rest = cases[1:] or cases
    return {"kind": kind, "model": name, "params": params, "backend": keras.backend.backend(),
            "cases": len(cases), "overlap": overlap if kind == "3d" else None,
            "items_per_case": cases[0].get("slices", cases[0].get("windows")),
            "first_case_s": cases[0]["seconds"],
            "s_per_case": round(float(np.median([c["seconds"] for c in rest])), 2),
            "predict_s_per_case": round(float(np.median([c["predict_s"] for c in rest])), 2),
            "load_s_per_case": round(float(np.median([c["load_s"] for c in rest])), 2),
            "write_s_per_case": round(float(np.median([c["write_s"] for c in rest])), 2),
            "total_s": round(wall, 1), "peak_host_mb": round(peak_rss_mb(), 1), "peak_device_mb": _device_peak_mb()}


def bench_inference(kinds, data_dir: str | Path, *, overlap: float = 0.5, image_size: int | None = None,
                    filters: int | None = None) -> list[dict]:
    """Every model kind in a fresh subprocess (its own peak memory); one result dict each (or an ``error``)."""
    rows = []
    for kind in kinds:
        cmd = [sys.executable, "-m", "brats_keras.bench", "inference-one", "--kind", kind, "--data-dir", str(data_dir),
               "--overlap", str(overlap)]
        cmd += ["--image-size", str(image_size)] if image_size else []
        cmd += ["--filters", str(filters)] if filters else []
        rows.append(_run_one(cmd, {"kind": kind}))
    return rows


def _run_one(cmd: list[str], identity: dict) -> dict:
    """Run a hidden ``*-one`` subcommand; its last JSON line, or ``identity`` with an ``error``."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        row = json.loads(lines[-1])
    else:  # e.g. out of memory: recorded, the other configurations still run
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        row = {**identity, "error": f"exit {proc.returncode}: {tail[:300]}"}
    print(json.dumps(row), flush=True)
    return row


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
    p = sub.add_parser("train", help="2D and 3D paper models: s / step, GFLOP/s against a matmul, peak memory")
    p.add_argument("--models", default="unet2d,u_resunet",
                   help=f"comma-separated, from: {', '.join(TRAIN_MODELS)} (default unet2d,u_resunet)")
    p.add_argument("--batch-sizes", default="16", help="comma-separated batch sizes (default 16)")
    p.add_argument("--size", type=int, default=128,
                   help="slice edge (2D) or crop edge (3D) in pixels / voxels (default 128, the papers')")
    p.add_argument("--precision", default="auto",
                   help=f"comma-separated, from: {', '.join(PRECISIONS)}; one row each (default auto)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps, their median reported (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2; the first compiles)")
    p.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES), default="auto",
                   help="XLA for the train step: auto (Keras' rule: not on CPU), on, off")
    p.add_argument("--filters", type=int, help=argparse.SUPPRESS)  # smaller models for the tests
    p.add_argument("--json", help="also write the figures to this JSON file")
    p = sub.add_parser("train-one", help=argparse.SUPPRESS)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES), default="auto")
    p.add_argument("--filters", type=int)
    p = sub.add_parser("inference", help="seconds per full-size case and peak memory of predict (2D and 3D)")
    p.add_argument("--kinds", default="2d,3d", help="comma-separated: 2d (paper 1 U-ResUNet), 3d (paper 2 U-Net)")
    p.add_argument("--data-dir", help="BraTS-layout folder to predict (default: --cases synthetic full-size cases)")
    p.add_argument("--cases", type=int, default=3, help="synthetic cases to generate without --data-dir (default 3)")
    p.add_argument("--shape", default="240,240,155", help="grid of the synthetic cases (default 240,240,155)")
    p.add_argument("--overlap", type=float, default=0.5, help="3D window overlap (default 0.5, predict's default)")
    p.add_argument("--image-size", type=int, help=argparse.SUPPRESS)  # smaller models for the tests
    p.add_argument("--filters", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p = sub.add_parser("inference-one", help=argparse.SUPPRESS)
    p.add_argument("--kind", choices=tuple(INFERENCE_MODELS), required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--image-size", type=int)
    p.add_argument("--filters", type=int)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "train3d-one":
        jit = JIT_COMPILE_CHOICES[args.jit_compile]
        row = bench_train3d_one(args.model, args.batch_size, args.size, args.steps, jit)
        print(json.dumps(row), flush=True)
        return 0
    if args.command == "train-one":
        row = bench_train_one(args.model, args.batch_size, args.size, args.precision, args.steps, args.warmup,
                              JIT_COMPILE_CHOICES[args.jit_compile], args.filters)
        print(json.dumps(row), flush=True)
        return 0
    if args.command == "train":
        models, batch_sizes, precisions = _train_args(args)
        rows = bench_train(models, batch_sizes, precisions, args.size, steps=args.steps, warmup=args.warmup,
                           jit_compile=args.jit_compile, filters=args.filters)
        _print_train_table(rows)
        if args.json:
            atomic_write_json(args.json, {"train": rows, "flop_convention": CONVENTION})
        return 1 if any("error" in row for row in rows) else 0
    if args.command == "inference-one":
        row = bench_inference_one(args.kind, args.data_dir, overlap=args.overlap, image_size=args.image_size,
                                  filters=args.filters)
        print(json.dumps(row), flush=True)
        return 0
    if args.command == "inference":
        data_dir = args.data_dir or ensure_synthetic_dataset(
            cases=args.cases, seed=7, shape=tuple(int(n) for n in args.shape.split(",")))
        rows = bench_inference(args.kinds.split(","), data_dir, overlap=args.overlap, image_size=args.image_size,
                               filters=args.filters)
        if args.json:
            atomic_write_json(args.json, {"inference": rows, "data_dir": str(data_dir)})
        return 1 if any("error" in row for row in rows) else 0
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
