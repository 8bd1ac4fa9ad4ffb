"""What the hardware decides for a run: the dtype policy (mixed precision), XLA, the replicas.

``--precision auto|float32|mixed_bfloat16|mixed_float16`` (every experiment, ``bench``, ``predict``)
goes through :func:`resolve_precision`, which turns ``auto`` into a policy for the hardware this
process sees:

* a GPU of compute capability ≥ 8 (Ampere, Hopper, ...) or a TPU → ``mixed_bfloat16``;
* an older GPU → ``mixed_float16`` (Keras wraps the optimiser in a ``LossScaleOptimizer`` when
  such a model is compiled, so small gradients are not flushed to zero);
* a CPU with native bfloat16 arithmetic (x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16``) under the
  TensorFlow backend, where a bfloat16 convolution also *measures* at least 1.2× faster than float32
  (:func:`cpu_bf16_speedup`, measured once per machine and kept in the cache folder) →
  ``mixed_bfloat16``: the flag alone does not decide (the paper-1 U-Net trained 1.6–1.8× faster in bfloat16 on one 2-core AVX-512 machine and 1.7–3.4× slower on
  another with the same flag, docs/performance.md);
* otherwise ``float32`` — also on such a CPU under JAX, whose XLA CPU kernels do not run bfloat16
  natively (``unet2d`` at 128², 16 filters, batch 16 on this machine: 1.39 s per step in float32,
  1.49 s under ``mixed_bfloat16``).

The resolved policy is printed once by the caller, stored in the run's config and in each model's
``inference.json``. Under a mixed policy the variables stay float32 and layers compute in the low
precision, except where the project keeps float32 on purpose: the heads (the last softmax / sigmoid
layer of every model is built with ``dtype="float32"``), the losses and the in-graph metrics (they
cast their inputs to float32), so models take and return float32 and an exported SavedModel's
signature is float32.

The policy is Keras' global one: :func:`precision_scope` sets it for the models built inside it and
restores the previous one after.

XLA (:func:`resolve_jit_compile`) is the project's decision, not Keras': Keras resolves
``jit_compile="auto"`` to off under any ``tf.distribute`` strategy, and every experiment trains inside
one, so ``auto`` here means on wherever an accelerator is present, off on a CPU (where XLA slows the
convolutions down and only a large 3D model's peak memory gains; docs/paper2.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from brats_keras.io import atomic_write_json, default_cache_dir, read_json_or_none

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
"""What ``--precision`` accepts; every value but ``auto`` is a Keras dtype-policy name."""
POLICIES = PRECISIONS[1:]
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""``/proc/cpuinfo`` flags of native bfloat16 arithmetic (x86 AVX-512 BF16, x86 AMX, Arm FEAT_BF16)."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision: the Keras policy name and the reason it was chosen."""

    policy: str
    reason: str
    requested: str = "auto"

    def line(self) -> str:
        """``precision: mixed_bfloat16 (auto: CPU with native bfloat16, avx512_bf16)``."""
        how = "auto" if self.requested == "auto" else "asked for"
        return f"precision: {self.policy} ({how}: {self.reason})"

    def record(self) -> dict:
        """What ``results.json`` and ``inference.json`` keep."""
        return {"precision": self.policy, "precision_requested": self.requested, "precision_reason": self.reason}


def check_precision(value: str, who: str = "precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else ``ValueError`` naming ``who``."""
    if value not in PRECISIONS:
        raise ValueError(f"{who}: {value!r} not in {', '.join(PRECISIONS)}")
    return value


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The native-bfloat16 flags of this CPU (empty when there are none or ``cpuinfo`` is unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return [flag for flag in CPU_BF16_FLAGS if flag in present]
    return []


def accelerators() -> list[tuple[str, tuple[int, int] | None]]:
    """``[(kind, compute capability)]`` of the accelerators the current Keras backend sees: ``("gpu",
    (9, 0))`` for an H100, ``("tpu", None)``. Imports only the backend's own framework (JAX never
    imports TensorFlow here)."""
    import keras

    backend = keras.backend.backend()
    found: list[tuple[str, tuple[int, int] | None]] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            capability = details.get("compute_capability")
            found.append(("gpu", tuple(capability) if capability else None))
        found += [("tpu", None) for _ in tf.config.list_physical_devices("TPU")]
    elif backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                capability = getattr(device, "compute_capability", None)
                major, _, minor = str(capability or "").partition(".")
                found.append(("gpu", (int(major), int(minor or 0)) if major.isdigit() else None))
            elif device.platform == "tpu":
                found.append(("tpu", None))
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            found += [("gpu", tuple(torch.cuda.get_device_capability(i))) for i in range(torch.cuda.device_count())]
    return found


CPU_BF16_MIN_SPEEDUP = 1.2
"""``auto`` picks bfloat16 on a CPU only when it measured at least this much faster than float32."""


CPU_BF16_ENV = "BRATS_KERAS_CPU_BF16_SPEEDUP"
"""Environment variable that replaces the measurement (a number, e.g. ``1.0`` to keep ``auto`` at float32)."""
CPU_BF16_FILE = "cpu_bf16_speedup.json"
"""Where, in the cache folder, the measurement is kept per CPU (model name, cores, TensorFlow version)."""


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``'s ``model name``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_key() -> str:
    import tensorflow as tf

    return f"{cpu_model()} | {cpu_cores()} cores | tensorflow {tf.__version__}"


def _measure_cpu_bf16_speedup() -> float:
    """float32 time / bfloat16 time of a 3×3 convolution (8 × 64² × 32 → 32 channels), best of 5."""
    import tensorflow as tf

    x, kernel = tf.random.normal((8, 64, 64, 32), seed=0), tf.random.normal((3, 3, 32, 32), seed=1)

    def best(dtype) -> float:
        xs, ks = tf.cast(x, dtype), tf.cast(kernel, dtype)
        conv = tf.function(lambda: tf.nn.conv2d(xs, ks, 1, "SAME"))
        conv().numpy()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(3):
                out = conv()
            out.numpy()
            times.append(time.perf_counter() - started)
        return min(times)

    return best(tf.float32) / best(tf.bfloat16)


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """float32 time / bfloat16 time of a convolution on this CPU under TensorFlow. Measured once per machine
    (about two seconds) and kept in ``<cache>/cpu_bf16_speedup.json`` under the CPU's model name, core count
    and TensorFlow version, so that every later run (and every worker on the machine) resolves ``auto`` the
    same way: a decision re-measured per run could flip with the machine's load and change the tables.
    ``$BRATS_KERAS_CPU_BF16_SPEEDUP`` replaces the measurement. The flag alone does not say bfloat16 is
    faster: measured 1.6–1.8× faster on a 2-core AMD EPYC with ``avx512_bf16``, 1.7–3.4× *slower* on a
    2-core Intel Xeon (KVM) that reports the same flag (``bench train``, docs/performance.md)."""
    forced = os.environ.get(CPU_BF16_ENV)
    if forced:
        try:
            return float(forced)
        except ValueError:
            raise ValueError(f"${CPU_BF16_ENV}={forced!r} is not a number") from None
    path, key = default_cache_dir() / CPU_BF16_FILE, _cpu_key()
    known = read_json_or_none(path)
    known = known if isinstance(known, dict) else {}
    if isinstance(known.get(key), (int, float)):
        return float(known[key])
    speedup = round(_measure_cpu_bf16_speedup(), 3)
    try:
        atomic_write_json(path, {**known, key: speedup})
    except OSError:
        pass  # a read-only cache: measured again next time
    return speedup


def resolve_precision(requested: str = "auto", *, devices=None, cpu_flags=None, cpu_speedup=None,
                      workers: int = 1) -> Precision:
    """The policy for ``requested`` (module docstring); ``devices`` (:func:`accelerators`), ``cpu_flags``
    (:func:`cpu_bf16_flags`) and, on a CPU with those flags, ``cpu_speedup`` (:func:`cpu_bf16_speedup`)
    are looked up when not given. With ``workers`` > 1 (a multi-worker run) ``auto`` on CPUs is float32
    without measuring: each machine's measurement could differ, and the workers must train alike."""
    import keras

    check_precision(requested)
    if requested == "float32" or requested == "mixed_bfloat16":
        return Precision(requested, "--precision", requested)
    devices = accelerators() if devices is None else devices
    if requested == "mixed_float16":
        if not devices and keras.backend.backend() == "tensorflow":
            raise ValueError("mixed_float16 needs a GPU — TensorFlow's CPU kernels have no float16 "
                             "versions of some layers (MaxPool3D); use mixed_bfloat16 or float32 on a CPU")
        return Precision(requested, "--precision", requested)
    if devices:
        kinds = {kind for kind, _ in devices}
        capabilities = [c for kind, c in devices if kind == "gpu"]
        if kinds == {"tpu"}:
            return Precision("mixed_bfloat16", "TPU")
        if all(c is not None and c >= (8, 0) for c in capabilities):
            text = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
            return Precision("mixed_bfloat16", f"GPU of compute capability {text} (>= 8.0: bfloat16)")
        return Precision("mixed_float16", "GPU of compute capability < 8.0 (float16 with loss scaling)")
    flags = cpu_bf16_flags() if cpu_flags is None else list(cpu_flags)
    backend = keras.backend.backend()
    if flags and workers > 1:
        return Precision("float32", f"{workers} workers on CPUs: float32, not a per-machine measurement that "
                         "could differ between them (--precision mixed_bfloat16 asks for bfloat16 on all)")
    if flags and backend == "tensorflow":
        speedup = cpu_bf16_speedup() if cpu_speedup is None else float(cpu_speedup)
        if speedup >= CPU_BF16_MIN_SPEEDUP:
            return Precision("mixed_bfloat16", f"CPU with native bfloat16 ({', '.join(flags)}), "
                             f"a convolution {speedup:.1f}x faster than in float32")
        return Precision("float32", f"CPU with native bfloat16 ({', '.join(flags)}), but a convolution in bfloat16 "
                         f"ran at {speedup:.2f}x float32's speed (< {CPU_BF16_MIN_SPEEDUP}x)")
    if flags:
        return Precision("float32", f"CPU with native bfloat16 ({', '.join(flags)}), but the {backend} backend's "
                         "CPU kernels do not use it")
    return Precision("float32", f"CPU without native bfloat16 ({platform.machine() or 'unknown'})")


def set_precision(policy: str) -> str:
    """Make ``policy`` Keras' global dtype policy; returns the previous policy's name."""
    import keras

    if policy not in POLICIES:
        raise ValueError(f"precision: {policy!r} not in {', '.join(POLICIES)} (resolve 'auto' first)")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    return previous


@contextlib.contextmanager
def precision_scope(policy: str):
    """Models built inside use ``policy``; the previous global policy is restored on exit."""
    import keras

    previous = set_precision(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def model_precision(model: keras.Model) -> str:
    """The dtype policy most of ``model``'s layers compute in (its first non-float32 one if any)."""
    names = [layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)
             if getattr(layer, "dtype_policy", None) is not None]
    mixed = [n for n in names if n != "float32"]
    return mixed[0] if mixed else "float32"


XLA_ACROSS_REPLICAS = ("Keras 3's TensorFlow trainer compiles the whole cross-replica step as one XLA cluster, "
                       "which cannot reach the other replicas' variables (keras-team/keras#19005)")
"""Why XLA is off for a TensorFlow step split over several replicas (measured: MirroredStrategy on two
logical CPUs fails with "Trying to access resource .../replica_1 ... from device CPU:0"; tests/test_mirrored.py)."""


def xla_unavailable(replicas: int = 1) -> str | None:
    """Why the train step cannot be XLA-compiled with ``replicas`` replicas in sync, or ``None``."""
    import keras

    if int(replicas) > 1 and keras.backend.backend() == "tensorflow":
        return XLA_ACROSS_REPLICAS
    return None


def resolve_jit_compile(value: bool | str = "auto", *, devices=None, replicas: int = 1) -> bool:
    """``True`` / ``False`` as given; ``"auto"``: ``True`` when the backend sees a GPU or TPU
    (:func:`accelerators`) — inside a one-device strategy too, where Keras' ``"auto"`` says off —,
    ``False`` on a CPU. Off, whatever was asked, where :func:`xla_unavailable` says why (a TensorFlow step
    over several replicas; JAX compiles its data-parallel step with XLA always)."""
    if value not in (True, False, "auto"):
        raise ValueError(f"jit_compile must be True, False or 'auto', got {value!r}")
    if xla_unavailable(replicas):
        return False
    if value != "auto":
        return bool(value)
    return bool(accelerators() if devices is None else devices)


def replicas_in_sync() -> int:
    """Replicas the current training step is split over: the ``tf.distribute`` strategy in scope
    (TensorFlow), the batch dimension of ``keras.distribution``'s mesh (JAX), else 1."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow" and "tensorflow" in sys.modules:
        return int(sys.modules["tensorflow"].distribute.get_strategy().num_replicas_in_sync)
    distribution = keras.distribution.distribution() if backend == "jax" else None
    if distribution is not None:
        mesh = distribution.device_mesh
        return int(mesh.shape[0]) if mesh.shape else 1
    return 1


def rebuild_in_precision(model: keras.Model, policy: str) -> keras.Model:
    """``model`` rebuilt from its config with every layer in ``policy``, except its output layers, which
    stay float32 as every head is built; the same (float32) weights. A bfloat16-trained model reloaded
    for float32 inference, or a float32 one run in bfloat16. Returns ``model`` itself when it already
    computes in ``policy``."""
    import keras

    if policy not in POLICIES:
        raise ValueError(f"precision: {policy!r} not in {', '.join(POLICIES)} (resolve 'auto' first)")
    if model_precision(model) == policy:
        return model
    outputs = {layer.name for layer in model._flatten_layers(include_self=False, recursive=False)
               if any(node_output is out for out in model.outputs for node_output in _outputs_of(layer))}

    def convert(node, keep: bool = False):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return node if keep else {**node, "config": {**node["config"], "name": policy}}
            keep_here = keep or (isinstance(node.get("config"), dict) and node["config"].get("name") in outputs
                                 and "layers" not in node["config"])
            return {key: convert(value, keep_here) for key, value in node.items()}
        if isinstance(node, list):
            return [convert(value, keep) for value in node]
        return node

    rebuilt = keras.saving.deserialize_keras_object(convert(keras.saving.serialize_keras_object(model)))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _outputs_of(layer) -> list:
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return []
    return list(output) if isinstance(output, (list, tuple)) else [output]
