"""Training callbacks: paper 3's "dwell" learning-rate callback, epoch-table recording, the one-line
epoch log (:class:`EpochLine`, what :func:`brats_keras.training.fit` shows when standard output is
not a terminal), resumable early stopping and LR reduction.

The dwell callback (paper 3, ``002_1845296d8be7a3a0.txt`` §5; REPLICATION.md) follows the widely
used Keras learning-rate callback the paper describes:

* While the training accuracy is below ``threshold`` the callback monitors training accuracy,
  afterwards validation loss.
* An epoch that improves the monitored value records it, keeps that epoch's weights as the best
  weights and resets both counters.
* After ``patience`` consecutive epochs without improvement the learning rate is multiplied by
  ``factor``; with ``dwell=True`` the model is also moved back to the best weights ("dwelling" at
  the best point instead of continuing from a worse one).
* After ``stop_patience`` consecutive reductions without improvement training stops.
* At the end of training the best weights are restored.

Every epoch prints one row: epoch, loss, accuracy, val loss, val accuracy, LR used, LR next,
monitor, % improvement, duration. The rows are also kept in ``rows`` for reports.
It uses only ``keras.ops``-free Keras APIs (``get_weights``/``set_weights``, the optimizer's
learning-rate variable), so it runs under ``tf.distribute`` strategies and on other backends.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Sequence, TextIO

import keras
import numpy as np

from brats_keras.progress import progress_mode
from brats_keras.runtime import tensorflow_import_error

_tensorboard_skip_said = False


def get_learning_rate(model: keras.Model) -> float:
    """The optimizer's current learning rate as a float (a schedule's value at the current step)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def set_learning_rate(model: keras.Model, value: float) -> None:
    """Assign ``value`` to the optimizer's learning-rate variable (a schedule cannot be set)."""
    lr = model.optimizer.learning_rate
    if not hasattr(lr, "assign"):
        raise ValueError(
            "the optimizer's learning_rate is a schedule, not a variable; the dwell callback sets the "
            "learning rate itself — compile with a float learning rate"
        )
    lr.assign(value)


@keras.saving.register_keras_serializable(package="brats_keras")
class DwellLearningRate(keras.callbacks.Callback):
    """Reduce the learning rate on plateaus and, with ``dwell``, return to the best weights.

    Args:
        patience: epochs without improvement before the learning rate is multiplied by ``factor``.
        stop_patience: consecutive reductions without improvement after which training stops.
        threshold: training accuracy below which training accuracy is monitored; at or above it,
            validation loss is monitored. ``0.0`` monitors validation loss from the first epoch.
        factor: learning-rate multiplier, in (0, 1).
        dwell: restore the best weights whenever the learning rate is reduced.
        accuracy_key / loss_key / val_loss_key / val_accuracy_key: the log names to read
            (e.g. ``dice_coef`` when a segmentation run tracks Dice instead of accuracy).
        verbose: print the per-epoch table.
    """

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "next_lr", "monitor",
               "improvement_pct", "restored", "duration_s")
    """Per-epoch table columns; ``restored`` says the epoch ended with the best weights put back."""

    def __init__(
        self,
        patience: int = 1,
        stop_patience: int = 3,
        threshold: float = 0.9,
        factor: float = 0.5,
        dwell: bool = True,
        accuracy_key: str = "accuracy",
        loss_key: str = "loss",
        val_loss_key: str = "val_loss",
        val_accuracy_key: str = "val_accuracy",
        verbose: bool = True,
        stream: TextIO | None = None,
    ):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if stop_patience < 1:
            raise ValueError(f"stop_patience must be >= 1, got {stop_patience}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.patience = int(patience)
        self.stop_patience = int(stop_patience)
        self.threshold = float(threshold)
        self.factor = float(factor)
        self.dwell = bool(dwell)
        self.accuracy_key = accuracy_key
        self.loss_key = loss_key
        self.val_loss_key = val_loss_key
        self.val_accuracy_key = val_accuracy_key
        self.verbose = verbose
        self.stream = stream
        self.reset()

    def reset(self) -> None:
        """Forget all tracking state (a new training run)."""
        self.count = 0
        self.stop_count = 0
        self.best_epoch = 0
        self.highest_accuracy = 0.0
        self.lowest_val_loss = math.inf
        self.best_weights: list[np.ndarray] | None = None
        self.stopped_epoch: int | None = None
        self.rows: list[dict[str, Any]] = []
        self._epoch_start = 0.0

    def get_config(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "stop_patience": self.stop_patience,
            "threshold": self.threshold,
            "factor": self.factor,
            "dwell": self.dwell,
            "accuracy_key": self.accuracy_key,
            "loss_key": self.loss_key,
            "val_loss_key": self.val_loss_key,
            "val_accuracy_key": self.val_accuracy_key,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DwellLearningRate":
        return cls(**config)

    # --- state for --resume -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-serialisable tracking state and the per-epoch rows so far, so a resumed run's table
        covers every epoch (best weights are restored from the run's checkpoint)."""
        return {
            "count": self.count,
            "stop_count": self.stop_count,
            "best_epoch": self.best_epoch,
            "highest_accuracy": self.highest_accuracy,
            "lowest_val_loss": None if math.isinf(self.lowest_val_loss) else self.lowest_val_loss,
            "stopped_epoch": self.stopped_epoch,
            "rows": [dict(row) for row in self.rows],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.stop_count = int(state["stop_count"])
        self.best_epoch = int(state["best_epoch"])
        self.highest_accuracy = float(state["highest_accuracy"])
        lowest = state["lowest_val_loss"]
        self.lowest_val_loss = math.inf if lowest is None else float(lowest)
        self.stopped_epoch = state.get("stopped_epoch")
        self.rows = [dict(row) for row in state.get("rows", [])]

    # --- Keras hooks ----------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.best_weights is None:
            self.best_weights = self.model.get_weights()
        if self.verbose:
            self._print(" ".join(f"{c:>12s}" for c in self.COLUMNS))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        missing = [k for k in (self.accuracy_key, self.val_loss_key) if k not in logs]
        if missing:
            raise ValueError(
                f"DwellLearningRate needs {missing} in the epoch logs (have {sorted(logs)}); "
                "pass validation data and the accuracy metric, or set accuracy_key / val_loss_key"
            )
        accuracy = float(logs[self.accuracy_key])
        val_loss = float(logs[self.val_loss_key])
        lr = get_learning_rate(self.model)
        next_lr = lr
        restored = False
        first = not self.rows

        if accuracy < self.threshold:
            monitor = self.accuracy_key
            improvement = 0.0 if first or self.highest_accuracy == 0 else (
                (accuracy - self.highest_accuracy) * 100.0 / self.highest_accuracy
            )
            improved = accuracy > self.highest_accuracy
            if improved:
                self.highest_accuracy = accuracy
                self.lowest_val_loss = min(self.lowest_val_loss, val_loss)
        else:
            monitor = self.val_loss_key
            improvement = 0.0 if first or math.isinf(self.lowest_val_loss) else (
                (self.lowest_val_loss - val_loss) * 100.0 / self.lowest_val_loss
            )
            improved = val_loss < self.lowest_val_loss
            if improved:
                self.lowest_val_loss = val_loss
            self.highest_accuracy = max(self.highest_accuracy, accuracy)

        if improved:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch + 1
            self.count = 0
            self.stop_count = 0
        elif self.count >= self.patience - 1:
            next_lr = lr * self.factor
            set_learning_rate(self.model, next_lr)
            self.count = 0
            self.stop_count += 1
            if self.dwell:
                self.model.set_weights(self.best_weights)
                restored = True
        else:
            self.count += 1

        row = {
            "epoch": epoch + 1,
            "loss": float(logs.get(self.loss_key, math.nan)),
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": float(logs.get(self.val_accuracy_key, math.nan)),
            "lr": lr,
            "next_lr": next_lr,
            "monitor": monitor,
            "improvement_pct": improvement,
            "restored": restored,
            "duration_s": time.perf_counter() - self._epoch_start,
        }
        self.rows.append(row)
        if self.verbose:
            self._print(self._format(row))
        logs["lr"] = lr  # so CSVLogger / TensorBoard record the learning rate used
        logs["weights_restored"] = float(restored)  # and whether the epoch ended on the best weights
        if self.stop_count >= self.stop_patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            if self.verbose:
                self._print(
                    f"training halted at epoch {epoch + 1} after {self.stop_patience} learning-rate "
                    "reductions without improvement"
                )

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                self._print(f"restored the best weights, from epoch {self.best_epoch}")

    def _format(self, row: dict[str, Any]) -> str:
        cells = []
        for key in self.COLUMNS:
            value = row[key]
            if key == "epoch" or key == "monitor":
                cells.append(f"{value:>12}")
            elif key == "restored":
                cells.append(f"{'yes' if value else 'no':>12}")
            elif key in ("lr", "next_lr"):
                cells.append(f"{value:>12.3e}")
            elif key in ("accuracy", "val_accuracy"):
                cells.append(f"{value * 100:>12.3f}")
            elif key == "duration_s":
                cells.append(f"{value:>12.2f}")
            else:
                cells.append(f"{value:>12.5f}")
        return " ".join(cells)

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    @property
    def prints_epoch_rows(self) -> bool:
        """True when this callback prints its own row per epoch (``verbose``): in a log file that row
        is the epoch's line, and :func:`fit_progress` adds no :class:`EpochLine` beside it."""
        return bool(self.verbose)


def format_log_value(value: float) -> str:
    """A log value as Keras' progress bar shows it: 4 decimals, or 4 significant digits in
    scientific notation below 1e-3 in magnitude (``0.0534``, ``6.3980e-09``)."""
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


class EpochLine(keras.callbacks.Callback):
    """One plain line per epoch, flushed: what a log file shows instead of Keras' progress bar.

    ``epoch  3/20 - loss: 0.0534 - accuracy: 0.9892 - val_loss: 0.0304 - lr: 0.001 - 6.2 s``: the
    1-based epoch over ``params["epochs"]`` (padded to its width), every numeric value of the epoch
    logs in the order Keras gives them with the ``val_*`` ones after the training ones (precision as
    :func:`format_log_value`), the learning rate (``learning_rate`` / ``lr`` from the logs, else the
    optimizer's current value, 3 significant digits; left out when neither exists) and the epoch's
    seconds, training and validation together. No carriage return or ANSI code is written. Plain
    Python and the Keras callback API, so it runs on every backend. ``stream`` defaults to
    ``sys.stdout`` at the time of printing.
    """

    LR_KEYS = ("learning_rate", "lr")

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream
        self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        print(self.format_line(epoch, logs or {}, seconds), file=self.stream or sys.stdout, flush=True)

    def format_line(self, epoch: int, logs: dict[str, Any], seconds: float) -> str:
        """The line for 0-based ``epoch`` with these ``logs``, which took ``seconds``."""
        epochs = (self.params or {}).get("epochs")
        number = epoch + 1
        head = f"epoch {number:>{len(str(epochs))}}/{epochs}" if epochs else f"epoch {number}"
        values = {k: v for k, v in logs.items() if k not in self.LR_KEYS and _is_number(v)}
        ordered = [k for k in values if not k.startswith("val_")] + [k for k in values if k.startswith("val_")]
        cells = [head] + [f"{k}: {format_log_value(float(values[k]))}" for k in ordered]
        lr = next((logs[k] for k in self.LR_KEYS if k in logs and _is_number(logs[k])), None)
        if lr is None:
            lr = self._optimizer_lr()
        if lr is not None:
            cells.append(f"lr: {float(lr):.3g}")
        cells.append(f"{seconds:.1f} s")
        return " - ".join(cells)

    def _optimizer_lr(self) -> float | None:
        try:
            return get_learning_rate(self.model)
        except (AttributeError, TypeError, ValueError):  # no model, no optimizer, or no scalar rate
            return None


def _is_number(value: Any) -> bool:
    """True for a scalar a log line can print (Python or NumPy number, 0-d array or tensor)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes))


def fit_progress(callbacks: Sequence[keras.callbacks.Callback] = (),
                 verbose: int | str | None = None) -> tuple[int | str, list[keras.callbacks.Callback]]:
    """The ``verbose`` to pass ``model.fit`` and the callbacks to put first, for progress on stdout.

    An explicit ``verbose`` wins (returned as is, nothing added). With ``verbose=None`` the mode of
    :func:`brats_keras.progress.progress_mode` for ``sys.stdout`` decides (``BRATS_KERAS_PROGRESS``
    forces one): ``bar`` → ``"auto"`` (Keras' progress bar); ``line`` → ``0`` plus an
    :class:`EpochLine`, unless one of ``callbacks`` prints its own row per epoch
    (``prints_epoch_rows``, e.g. a verbose :class:`DwellLearningRate`: its table row is then the
    epoch's one line); ``none`` → ``0`` and no line.
    """
    if verbose is not None:
        return verbose, []
    mode = progress_mode(sys.stdout)
    if mode == "bar":
        return "auto", []
    if mode == "line" and not any(getattr(cb, "prints_epoch_rows", False) for cb in callbacks):
        return 0, [EpochLine()]
    return 0, []


class EpochTable(keras.callbacks.Callback):
    """Record exactly the epochs (1-based) and values a paper's table needs.

    ``EpochTable(keys=["accuracy", "loss"], epochs=[2, 4, 6, 8, 10])`` keeps
    ``rows[epoch] = {key: value}`` from the epoch logs for those epochs only (``epochs=None``: every
    epoch). With ``data`` (the test split as a dataset or an ``(x, y)`` tuple) the model is also evaluated on it at those epochs
    and the results are stored as ``test_<metric>`` — paper 1's Table 6.1 reports test accuracy and
    loss per epoch. Values are plain floats of what the run measured.
    """

    def __init__(self, keys: list[str], epochs: list[int] | None = None, data=None, prefix: str = "test_"):
        super().__init__()
        if not keys:
            raise ValueError("keys: at least one log key is needed")
        self.keys = list(keys)
        self.epochs = None if epochs is None else sorted(set(int(e) for e in epochs))
        self.data = data
        self.prefix = prefix
        self.rows: dict[int, dict[str, float]] = {}

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if self.epochs is not None and number not in self.epochs:
            return
        logs = logs or {}
        row = {k: float(logs[k]) for k in self.keys if k in logs}
        if self.data is not None:
            x, y = self.data if isinstance(self.data, tuple) else (self.data, None)
            results = self.model.evaluate(x, y, verbose=0, return_dict=True)
            row.update({f"{self.prefix}{k}": float(v) for k, v in results.items()})
        self.rows[number] = row

    def state(self) -> dict[str, Any]:
        """The recorded rows (JSON keys are strings), for ``--resume``."""
        return {"rows": {str(k): v for k, v in self.rows.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rows = {int(k): dict(v) for k, v in state["rows"].items()}


def _json_number(value) -> float | None:
    """A monitored best value for ``state()``: ``None`` when unset or infinite."""
    if value is None:
        return None
    value = float(value)
    return None if math.isinf(value) or math.isnan(value) else value


class _ResumesWithoutReset:
    """For a Keras callback that resets its counters in ``on_train_begin``: after ``load_state`` the
    next ``on_train_begin`` keeps the loaded counters (once), so a resumed run continues them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resumed = False

    def on_train_begin(self, logs=None):
        if self._resumed:
            self._resumed = False
            return
        super().on_train_begin(logs)


class ResumableEarlyStopping(_ResumesWithoutReset, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` whose progress survives ``--resume``.

    ``state()`` / ``load_state()`` carry the wait counter, the best value and epoch and the stopped
    epoch; the best weights travel in the run's checkpoint (``checkpoints/<name>.best.npz``, written
    for every callback with ``best_weights``). After ``load_state`` the next ``on_train_begin`` keeps
    them instead of starting over, so a resumed run stops, and restores, exactly as an uninterrupted
    one. ``stopped_epoch`` is 0 while training has not been stopped (Keras' convention), else the
    0-based epoch it stopped at.
    """

    def state(self) -> dict[str, Any]:
        return {"wait": int(getattr(self, "wait", 0)), "best": _json_number(self.best),
                "best_epoch": int(getattr(self, "best_epoch", 0)), "stopped_epoch": int(getattr(self, "stopped_epoch", 0))}

    def load_state(self, state: dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_weights = None  # the checkpoint's best.npz is loaded after this, when there is one
        self._resumed = True


class ResumableReduceLROnPlateau(_ResumesWithoutReset, keras.callbacks.ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` whose counters survive ``--resume`` (the learning rate
    itself is in the checkpointed optimizer)."""

    def state(self) -> dict[str, Any]:
        return {"wait": int(self.wait), "best": _json_number(self.best), "cooldown_counter": int(self.cooldown_counter)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.best = state["best"]
        self.cooldown_counter = int(state["cooldown_counter"])
        self._resumed = True


def plateau_callbacks(monitor: str, *, mode: str = "auto", reduce_factor: float = 0.0, reduce_patience: int = 0,
                      min_learning_rate: float = 0.0, stop_patience: int = 0) -> list[keras.callbacks.Callback]:
    """The resumable ``ReduceLROnPlateau`` (when ``reduce_factor`` > 0) and ``EarlyStopping`` with the
    best weights restored (when ``stop_patience`` > 0), both watching ``monitor`` (papers 4 and 5)."""
    callbacks: list[keras.callbacks.Callback] = []
    if reduce_factor:
        callbacks.append(ResumableReduceLROnPlateau(monitor=monitor, factor=reduce_factor, patience=reduce_patience,
                                                    min_lr=min_learning_rate, mode=mode, verbose=1))
    if stop_patience:
        callbacks.append(ResumableEarlyStopping(monitor=monitor, patience=stop_patience, mode=mode,
                                                restore_best_weights=True, verbose=1))
    return callbacks


def early_stopping_record(callbacks) -> dict[str, Any] | None:
    """For results.json: the ``ResumableEarlyStopping`` among ``callbacks`` after training —
    ``monitor``, ``patience``, ``best_epoch`` and ``stopped_at`` (1-based; ``None``: it ran to the
    last epoch) — or ``None`` when there is none."""
    stopper = next((cb for cb in callbacks if isinstance(cb, ResumableEarlyStopping)), None)
    if stopper is None:
        return None
    return {"monitor": stopper.monitor, "patience": stopper.patience, "best_epoch": stopper.best_epoch + 1,
            "stopped_at": stopper.stopped_epoch + 1 if stopper.stopped_epoch else None}


def tensorboard_callback(log_dir) -> keras.callbacks.Callback | None:
    """``keras.callbacks.TensorBoard`` writing to ``log_dir``, or ``None`` where it cannot write.

    Keras' TensorBoard callback writes its event files through ``tf.summary`` on every backend, so it
    needs TensorFlow and the ``tensorboard`` package. Where either is not importable (the JAX backend
    installed without TensorFlow) there are no ``logs/`` and one line, printed once per process, says
    why; ``history.csv`` holds the same per-epoch values."""
    global _tensorboard_skip_said
    error = tensorflow_import_error()
    if error is None:
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            error = f"{type(exc).__name__}: {exc}"
    if error is None:
        return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)
    if not _tensorboard_skip_said:
        print(f"logs: TensorBoard logs skipped: keras.callbacks.TensorBoard writes through TensorFlow and "
              f"tensorboard ({error}); history.csv has the per-epoch values", flush=True)
        _tensorboard_skip_said = True
    return None
