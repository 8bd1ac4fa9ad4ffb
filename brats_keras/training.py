"""Distribution strategy, run folders, resumable training.

* :func:`select_strategy` picks a ``tf.distribute`` strategy (``auto | one | mirrored |
  multiworker``); build and compile the model inside ``strategy.scope()`` and batch the tf.data
  pipeline with :func:`global_batch_size` — Keras splits each global batch across the replicas and
  scales the loss so the update equals the single-device update on the same batch. Under a
  multi-worker cluster every worker writes to :func:`worker_run_dir` (the run itself on the chief, a
  temporary folder elsewhere) and scores a :func:`single_process_model` (docs/distributed.md). On the
  JAX backend it returns a :class:`KerasDistributionStrategy` with the same ``scope()`` and
  ``num_replicas_in_sync``, over ``keras.distribution.DataParallel`` when several devices are visible.
* :class:`RunDir` is the run folder of DESIGN.md (``config.json``, ``split.json``, ``history.csv``,
  ``results.json``, ``table.md``, ``plots/``, ``model.keras``, ``saved_model/``, ``logs/``) plus
  ``checkpoints/`` for ``--resume``.
* :func:`fit` trains with a :class:`ResumableCheckpoint`: after every epoch the model (with its
  optimizer state), the history and the state of resumable callbacks are written atomically, so a
  killed run continues from its last finished epoch with every epoch in ``history.csv`` exactly
  once. Progress on standard output follows :func:`brats_keras.callbacks.fit_progress`: Keras'
  progress bar on a terminal, one plain line per epoch otherwise (``BRATS_KERAS_PROGRESS`` forces
  ``bar``, ``line`` or ``none``; docs/engine.md, "Logs").

TensorFlow is imported only on the TensorFlow backend (tf.distribute) and for TensorBoard logs when it
is importable; models, layers, losses and metrics never need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np

from brats_keras.callbacks import fit_progress, tensorboard_callback
from brats_keras.errors import BratsKerasError
from brats_keras.export import load_model
from brats_keras.io import atomic_path, atomic_write_json, read_history_csv, write_history_csv

STRATEGIES = ("auto", "one", "mirrored", "multiworker")


# --- distribution ------------------------------------------------------------------------------
def _tf():
    import tensorflow as tf

    return tf


def _cluster_workers() -> int:
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError as exc:
        raise BratsKerasError(f"TF_CONFIG is not valid JSON: {exc}") from None
    return len(config.get("cluster", {}).get("worker", []))


class KerasDistributionStrategy:
    """What the runner and :func:`fit` use of a ``tf.distribute.Strategy`` (``scope()``,
    ``num_replicas_in_sync``), for the JAX and PyTorch backends, over ``keras.distribution``.

    ``distribution`` is the ``keras.distribution.DataParallel`` set for the whole process
    (``keras.distribution.set_distribution``: ``fit``, ``evaluate`` and ``predict`` read it from there and
    shard every batch over ``devices``), or ``None`` for one device. ``scope()`` enters it, so a model
    built inside gets its variables laid out (replicated) by it.
    """

    def __init__(self, devices: Sequence[str], distribution=None):
        self.devices = list(devices)
        self.distribution = distribution

    @property
    def num_replicas_in_sync(self) -> int:
        return len(self.devices) if self.distribution is not None else 1

    def scope(self):
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()

    def __repr__(self) -> str:
        kind = type(self.distribution).__name__ if self.distribution is not None else "one device"
        return f"KerasDistributionStrategy({kind}, devices={self.devices})"


def _keras_distribution_strategy(name: str) -> KerasDistributionStrategy:
    """:func:`select_strategy` on a backend other than TensorFlow."""
    backend = keras.backend.backend()
    if name == "multiworker" or (name == "auto" and _cluster_workers() > 1):
        raise BratsKerasError(f"strategy 'multiworker' is tf.distribute's (TF_CONFIG) and needs KERAS_BACKEND="
                              f"tensorflow; on {backend} use one machine's devices (--strategy auto, one or mirrored)")
    if backend != "jax":
        if name == "mirrored":
            raise BratsKerasError(f"strategy 'mirrored' on the {backend} backend: keras.distribution.DataParallel "
                                  "runs on JAX only; use --strategy one")
        return KerasDistributionStrategy(["default"], None)
    devices = keras.distribution.list_devices()
    if name == "auto":
        name = "mirrored" if len(devices) > 1 else "one"
    if name == "one":
        keras.distribution.set_distribution(None)
        return KerasDistributionStrategy(devices[:1], None)
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    print(f"strategy: keras.distribution.DataParallel over {len(devices)} devices ({', '.join(devices)})", flush=True)
    return KerasDistributionStrategy(devices, distribution)


def select_strategy(name: str = "auto"):
    """A ``tf.distribute.Strategy`` (TensorFlow backend) or a :class:`KerasDistributionStrategy` (others).

    ``one``: ``OneDeviceStrategy`` on the first GPU, else the CPU. ``mirrored``: ``MirroredStrategy``
    over all local GPUs (or all logical CPUs when there is no GPU). ``multiworker``:
    ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``. ``auto``: multiworker when
    ``TF_CONFIG`` names more than one worker, mirrored with more than one GPU, else one.

    On JAX: ``one`` is the first device without a distribution; ``mirrored`` sets
    ``keras.distribution.DataParallel`` over every visible device (``jax.devices()``: the GPUs, or
    the CPU devices ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes); ``auto`` is
    mirrored with more than one device, else one; ``multiworker`` (and ``auto`` with a ``TF_CONFIG``
    cluster) is an error, as ``TF_CONFIG`` configures tf.distribute only.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy: {name!r} not in {STRATEGIES}")
    if keras.backend.backend() != "tensorflow":
        return _keras_distribution_strategy(name)
    tf = _tf()
    if name == "auto":
        # physical (not logical) devices: querying logical ones would start the runtime, after
        # which MultiWorkerMirroredStrategy can no longer configure its collective ops
        multi_gpu = len(tf.config.list_physical_devices("GPU")) > 1
        name = "multiworker" if _cluster_workers() > 1 else ("mirrored" if multi_gpu else "one")
    if name == "multiworker":
        if _cluster_workers() < 1:
            raise BratsKerasError("strategy 'multiworker' needs TF_CONFIG with a cluster of workers")
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _multi_worker_strategy():
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3's trainer passes it.

    Keras 3's TensorFlow trainer (keras-team/keras#20585) calls ``strategy.reduce`` on the whole
    ``(x, y)`` structure of the first batch, and reduces each step's scalar logs with ``axis=0``.
    ``MirroredStrategy`` tolerates both; the collective strategy raises and ``fit`` never starts.
    This subclass reduces leaf by leaf, and treats ``axis=0`` on a scalar as the cross-replica
    reduction it stands for (a scalar has no axis 0). Nothing else changes.
    """
    tf = _tf()

    class NestedReduceMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def leaf(v):
                local = self.experimental_local_results(v)[0]
                leaf_axis = None if axis is not None and local.shape.rank == 0 else axis
                return parent.reduce(reduce_op, v, leaf_axis)

            return tf.nest.map_structure(leaf, value)

    return NestedReduceMultiWorkerMirroredStrategy()


def inference_without_xla_on_cpu(model: keras.Model) -> keras.Model:
    """Drop XLA from ``model``'s predict / evaluate functions when no GPU is visible.

    A model compiled with ``jit_compile=True`` for its training memory (paper 2 at 128³) predicts
    about 5× slower under XLA on a CPU (docs/paper2.md), while inference alone needs no such memory
    saving. On a GPU, and on other backends than TensorFlow, the model is left as compiled. Returns ``model``.
    """
    if keras.backend.backend() != "tensorflow":  # JAX always compiles; jit_compile=False would run eagerly
        return model
    tf = _tf()
    if model.jit_compile and not tf.config.list_physical_devices("GPU"):
        model.jit_compile = False
        model.predict_function = None
        model.test_function = None
    return model


def global_batch_size(per_replica: int, strategy) -> int:
    """Per-replica batch × replicas in sync (the batch size the tf.data pipeline must use)."""
    if per_replica < 1:
        raise ValueError(f"per_replica batch size must be >= 1, got {per_replica}")
    return int(per_replica) * int(strategy.num_replicas_in_sync)


def cluster_workers(strategy) -> int:
    """How many worker processes train together under ``strategy``: the TF_CONFIG cluster's workers for
    a multi-worker strategy, 1 for anything in one process."""
    if getattr(strategy, "cluster_resolver", None) is None:
        return 1
    return max(1, _cluster_workers())


def writes_run(strategy) -> bool:
    """Whether this process writes the run folder: False only on a worker of a multi-worker cluster that
    is not its chief (``strategy.extended.should_checkpoint``; the chief is the ``chief`` task, else
    worker 0). One process, one device or several, always writes it."""
    return bool(getattr(getattr(strategy, "extended", None), "should_checkpoint", True))


def single_process_model(model: keras.Model, strategy) -> keras.Model:
    """``model`` to score, predict with and export in this process alone: ``model`` itself under a strategy
    of one replica, else a copy outside the strategy (saved and reloaded with its compile settings).

    Under ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy`` ``predict_on_batch`` hands every replica
    the whole batch and returns all their outputs (16 rows for 8 slices on two replicas), and ``predict``
    on a dataset returns the replicas' shards gathered from every worker; the copy gives each worker
    the outputs of a single-process run. Call it outside ``strategy.scope()``.
    """
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return model
    with tempfile.TemporaryDirectory(prefix="brats_keras_copy_") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return load_model(path)


# --- run folders -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunDir:
    """Paths of one run. ``RunDir.create`` makes the folder; the paths are fixed (DESIGN.md)."""

    path: Path

    @classmethod
    def create(cls, out: str | Path | None, experiment: str, *, root: str | Path = "runs",
               make: bool = True) -> "RunDir":
        """``out``, or ``<root>/<experiment>/<UTC timestamp>``; the folder is made unless ``make=False``
        (a worker that does not write the run, :func:`worker_run_dir`)."""
        if out is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            out = Path(root) / experiment / stamp
        run = cls(Path(out))
        if make:
            run.path.mkdir(parents=True, exist_ok=True)  # plots/, logs/, checkpoints/ appear when written
        return run

    @classmethod
    def latest(cls, experiment: str, *, root: str | Path = "runs") -> "RunDir":
        """The most recent run folder of ``experiment`` that has a checkpoint (for ``--resume``)."""
        base = Path(root) / experiment
        candidates = sorted(p for p in base.glob("*") if (p / "checkpoints" / "state.json").is_file())
        if not candidates:
            raise BratsKerasError(f"no run of {experiment} with a checkpoint under {base} to resume")
        return cls(candidates[-1])

    config = property(lambda self: self.path / "config.json")
    split = property(lambda self: self.path / "split.json")
    history = property(lambda self: self.path / "history.csv")
    results = property(lambda self: self.path / "results.json")
    table = property(lambda self: self.path / "table.md")
    plots = property(lambda self: self.path / "plots")
    model_keras = property(lambda self: self.path / "model.keras")
    saved_model = property(lambda self: self.path / "saved_model")
    logs = property(lambda self: self.path / "logs")
    checkpoints = property(lambda self: self.path / "checkpoints")
    checkpoint_model = property(lambda self: self.path / "checkpoints" / "last.keras")
    checkpoint_state = property(lambda self: self.path / "checkpoints" / "state.json")

    def has_checkpoint(self) -> bool:
        return self.checkpoint_state.is_file() and self.checkpoint_model.is_file()

    def checkpoint_epochs(self) -> int:
        """Epochs finished according to the checkpoint (0 when there is none)."""
        if not self.has_checkpoint():
            return 0
        return int(json.loads(self.checkpoint_state.read_text(encoding="utf-8"))["epochs_done"])


RESUME_COPY_IGNORED = ("saved_model", "logs", "plots")
"""What a worker's temporary folder does not copy from the run it resumes: outputs that are only written."""


@contextmanager
def worker_run_dir(run: RunDir, strategy, *, resume: bool = False) -> Iterator[RunDir]:
    """The folder this process writes ``run`` to: ``run`` itself on the process that writes the run
    (:func:`writes_run`: one process, or the chief of a multi-worker cluster), else a temporary folder,
    removed on exit, as Keras' multi-worker guide saves from non-chief workers.

    Every worker thus runs the same code on its own folder: checkpoints, exports, logs and tables that
    need every worker (the collective ops of a distributed model) are written by all, and only the
    chief's reach ``run``. With ``resume`` the temporary folder starts as a copy of the chief's run
    (checkpoints, history, splits; not :data:`RESUME_COPY_IGNORED`), so every worker resumes from the
    same epoch — which needs ``run`` on a filesystem every worker sees (:func:`fit` checks they agree).
    """
    if writes_run(strategy):
        run.path.mkdir(parents=True, exist_ok=True)
        yield run
        return
    task = getattr(getattr(strategy, "cluster_resolver", None), "task_id", None)
    own = Path(tempfile.mkdtemp(prefix=f"brats_keras_worker{task}_"))
    try:
        if resume and run.path.is_dir():
            shutil.copytree(run.path, own, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*RESUME_COPY_IGNORED))
        print(f"worker {task}: the chief writes the run folder {run.path}; this worker writes its own copies "
              f"to {own} (removed at the end)", flush=True)
        yield RunDir(own)
    finally:
        shutil.rmtree(own, ignore_errors=True)
        print(f"worker {task}: removed {own}; the run folder is {run.path}", flush=True)


def agreed_resume(strategy, run: RunDir, resume: bool) -> bool:
    """Whether :func:`fit` resumes from ``run``'s checkpoint (``resume`` and a complete checkpoint), checked
    equal on every worker of a multi-worker strategy before any model is built: an all-gather of each
    worker's checkpoint (present, epochs done, stopped). Workers that built a model and loaded a
    checkpoint would otherwise run different collective ops and fail with a TensorFlow error.

    Raises:
        BratsKerasError: the workers found different checkpoints.
    """
    resuming = bool(resume and run.has_checkpoint())
    if getattr(strategy, "cluster_resolver", None) is None:  # one process (OneDevice, Mirrored)
        return resuming
    state = json.loads(run.checkpoint_state.read_text(encoding="utf-8")) if resuming else {}
    mine = [int(resuming), int(state.get("epochs_done", 0)), int(bool(state.get("stopped", False)))]
    tf = _tf()
    # in a tf.function: strategy.run used eagerly warns of its overhead
    gather = tf.function(lambda: strategy.gather(strategy.run(lambda: tf.constant([mine], tf.int64)), axis=0),
                         autograph=False)
    found = {tuple(int(v) for v in row) for row in np.asarray(gather())}
    if len(found) > 1:
        epochs = sorted({epochs for _, epochs, _ in found})
        raise BratsKerasError(f"the workers found different checkpoints to resume from (epochs done: {epochs}): "
                              "--resume with several workers needs the run folder on a filesystem every worker sees")
    return resuming


# --- resumable training ------------------------------------------------------------------------
class ResumableCheckpoint(keras.callbacks.Callback):
    """After every epoch: ``checkpoints/last.keras`` (model + optimizer), ``history.csv`` and
    ``checkpoints/state.json`` (epochs done, resumable callbacks' state), each written atomically;
    the state file is written last and is what marks the checkpoint complete. It also records
    whether a callback stopped training at that epoch (early stopping, the dwell callback's
    ``stop_patience``), so a resumed run that had already stopped does not train on.

    A callback is resumable when it has ``state() -> dict`` and ``load_state(dict)``; if it also has
    ``best_weights`` (e.g. :class:`~brats_keras.callbacks.DwellLearningRate`) those are saved in
    ``checkpoints/<name>.best.npz``.
    """

    def __init__(self, run: RunDir, history: dict[str, list[float]], resumables: dict[str, Any]):
        super().__init__()
        self.run = run
        self.history = history
        self.resumables = resumables

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        with atomic_path(self.run.checkpoint_model, suffix=".keras") as tmp:
            self.model.save(tmp)
        write_history_csv(self.history, self.run.history)
        states = {}
        for name, cb in self.resumables.items():
            states[name] = cb.state()
            best = getattr(cb, "best_weights", None)
            if best is not None:
                with atomic_path(self.run.checkpoints / f"{name}.best.npz", suffix=".npz") as tmp:
                    np.savez(tmp, *best)
        atomic_write_json(self.run.checkpoint_state, {"epochs_done": epoch + 1, "callbacks": states,
                                                      "stopped": bool(getattr(self.model, "stop_training", False))})


def resumable_callbacks(callbacks: Sequence[keras.callbacks.Callback]) -> dict[str, Any]:
    """Callbacks with ``state()``/``load_state()``, keyed by class name; a second instance of the
    same class gets ``_2``, ``_3``... so each keeps its own entry in the checkpoint."""
    out: dict[str, Any] = {}
    for cb in callbacks:
        if hasattr(cb, "state") and hasattr(cb, "load_state"):
            base = type(cb).__name__
            key, n = base, 1
            while key in out:
                n += 1
                key = f"{base}_{n}"
            out[key] = cb
    return out


def load_checkpoint(run: RunDir, resumables: dict[str, Any]) -> tuple[keras.Model, int, dict[str, list[float]], bool]:
    """Model, epochs done, the history (truncated to those epochs) of an interrupted run, and whether
    a callback had stopped training at the last checkpointed epoch."""
    if not run.has_checkpoint():
        raise BratsKerasError(f"{run.path}: no complete checkpoint to resume from")
    state = json.loads(run.checkpoint_state.read_text(encoding="utf-8"))
    done = int(state["epochs_done"])
    model = load_model(run.checkpoint_model)
    history = read_history_csv(run.history) if run.history.is_file() else {}
    history = {k: v[:done] for k, v in history.items()}
    for name, cb in resumables.items():
        if name in state.get("callbacks", {}):
            cb.load_state(state["callbacks"][name])
        best = run.checkpoints / f"{name}.best.npz"
        if best.is_file() and hasattr(cb, "best_weights"):
            with np.load(best) as data:
                cb.best_weights = [data[f"arr_{i}"] for i in range(len(data.files))]
    return model, done, history, bool(state.get("stopped", False))


def fit(
    build: Callable[[], keras.Model],
    train_data,
    *,
    run: RunDir,
    epochs: int,
    validation_data=None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy=None,
    resume: bool = False,
    tensorboard: bool = True,
    verbose: int | str | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build (inside the strategy's scope) and train a model, or continue an interrupted run.

    ``build`` returns a compiled model. With ``resume`` and a checkpoint in ``run``, the model and
    its optimizer state are loaded instead and training continues at the next epoch; callbacks with
    ``state()``/``load_state()`` get their state back. A run whose callbacks had stopped it (early
    stopping) is finished, not continued. Returns the model and the full history (every epoch
    once, resumed or not). ``tensorboard``: TensorBoard logs in ``logs/``
    (:func:`~brats_keras.callbacks.tensorboard_callback`: skipped, with one line, without TensorFlow).

    ``verbose=None`` (the default) chooses the progress output: Keras' progress bar when standard
    output is a terminal; otherwise no bar and one flushed plain line per epoch (epoch i/N, every log
    value, the learning rate, the epoch's seconds; :class:`~brats_keras.callbacks.EpochLine`), or no
    extra line when a callback prints its own per-epoch row (paper 3's dwell table). The environment
    variable ``BRATS_KERAS_PROGRESS=bar|line|none`` forces the mode; an explicit ``verbose`` (as
    ``model.fit`` takes it) wins over both.

    Under a multi-worker strategy every worker calls ``fit`` with its own folder (:func:`worker_run_dir`)
    and resumes only from the same epoch as the others (:func:`agreed_resume`).
    """
    strategy = strategy or select_strategy("one")
    resumables = resumable_callbacks(callbacks)
    stopped = False
    resuming = agreed_resume(strategy, run, resume)
    with strategy.scope():
        if resuming:
            model, initial_epoch, history, stopped = load_checkpoint(run, resumables)
        else:
            model, initial_epoch, history = build(), 0, {}
    if stopped or initial_epoch >= epochs:  # interrupted after the last epoch: finish as fit() would have
        for cb in resumables.values():
            cb.set_model(model)
            cb.on_train_end()
        return model, history
    verbose, progress = fit_progress(callbacks, verbose)
    all_callbacks = progress + list(callbacks) + [ResumableCheckpoint(run, history, resumables)]
    if tensorboard and (board := tensorboard_callback(run.logs)) is not None:
        all_callbacks.append(board)
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,  # pipelines shuffle themselves (seeded); Keras cannot shuffle a tf.data.Dataset
    )
    return model, history
