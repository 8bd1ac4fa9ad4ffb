"""The dwell learning-rate callback driven by scripted epoch logs, the epoch-table recorder, the
one-line epoch log and the progress mode (bar / line / none)."""

from __future__ import annotations

import io
import json
import re

import keras
import numpy as np
import pytest

from brats_keras.callbacks import (
    DwellLearningRate, EpochLine, EpochTable, ResumableEarlyStopping, ResumableReduceLROnPlateau, fit_progress,
    get_learning_rate,
)
from brats_keras.progress import PROGRESS_ENV, LineProgress, progress_bar, progress_mode

pytestmark = pytest.mark.backend_agnostic


def tiny_model(lr: float = 0.1) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def stamp(model: keras.Model, value: float) -> None:
    """Pretend an epoch of training moved every weight to ``value``."""
    model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])


def weight_value(model: keras.Model) -> float:
    values = np.concatenate([w.ravel() for w in model.get_weights()])
    assert np.all(values == values[0])
    return float(values[0])


def drive(callback: DwellLearningRate, model: keras.Model, logs: list[dict]) -> list[dict]:
    """Run the callback over scripted epochs; before each epoch's end the weights are stamped with
    the epoch number, so restored weights tell which epoch they came from."""
    callback.set_model(model)
    callback.on_train_begin()
    trace = []
    for epoch, log in enumerate(logs):
        callback.on_epoch_begin(epoch)
        stamp(model, epoch + 1)
        callback.on_epoch_end(epoch, dict(log))
        trace.append({"lr": get_learning_rate(model), "weights": weight_value(model), "stop": model.stop_training})
        if model.stop_training:
            break
    callback.on_train_end()
    return trace


def val_phase(losses: list[float]) -> list[dict]:
    return [{"loss": 1.0, "accuracy": 0.95, "val_loss": v, "val_accuracy": 0.9} for v in losses]


def test_reduces_lr_after_patience_and_dwells_on_best_weights():
    model = tiny_model(0.1)
    cb = DwellLearningRate(patience=2, stop_patience=3, threshold=0.9, factor=0.5, dwell=True, verbose=False)
    trace = drive(cb, model, val_phase([1.0, 0.8, 0.9, 0.85, 0.7, 0.75]))
    assert [t["lr"] for t in trace] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    # epoch 4 is the 2nd epoch without improvement → LR halves and weights return to epoch 2's
    assert [t["weights"] for t in trace] == [1, 2, 3, 2, 5, 6]
    assert cb.best_epoch == 5 and cb.lowest_val_loss == pytest.approx(0.7)
    assert weight_value(model) == 5  # best weights restored at the end
    assert [r["monitor"] for r in cb.rows] == ["val_loss"] * 6
    assert cb.rows[3]["next_lr"] == pytest.approx(0.05) and cb.rows[3]["lr"] == pytest.approx(0.1)
    assert cb.rows[1]["improvement_pct"] == pytest.approx(20.0)
    assert [r["restored"] for r in cb.rows] == [False, False, False, True, False, False]


def test_without_dwell_weights_are_kept_until_the_end():
    model = tiny_model(0.1)
    cb = DwellLearningRate(patience=1, stop_patience=5, threshold=0.9, factor=0.1, dwell=False, verbose=False)
    trace = drive(cb, model, val_phase([1.0, 1.2, 0.9]))
    assert [t["weights"] for t in trace] == [1, 2, 3]
    assert [t["lr"] for t in trace] == pytest.approx([0.1, 0.01, 0.01])
    assert weight_value(model) == 3
    assert not any(r["restored"] for r in cb.rows)  # the LR drops, the weights stay


def test_stops_after_stop_patience_reductions_without_improvement():
    model = tiny_model(1.0)
    cb = DwellLearningRate(patience=1, stop_patience=3, threshold=0.0, factor=0.5, verbose=False)
    trace = drive(cb, model, val_phase([1.0, 1.1, 1.2, 1.3, 1.4, 1.5]))
    assert len(trace) == 4 and trace[-1]["stop"] and cb.stopped_epoch == 4
    assert [t["lr"] for t in trace] == pytest.approx([1.0, 0.5, 0.25, 0.125])
    assert weight_value(model) == 1


def test_improvement_resets_the_stop_counter():
    model = tiny_model(1.0)
    cb = DwellLearningRate(patience=1, stop_patience=2, threshold=0.0, factor=0.5, verbose=False)
    trace = drive(cb, model, val_phase([1.0, 1.1, 0.9, 1.0, 1.0, 1.0]))
    assert cb.stopped_epoch == 5 and len(trace) == 5  # reductions at 2, then 4 and 5 (after the epoch-3 improvement)


def test_accuracy_phase_then_validation_loss_phase():
    model = tiny_model(0.1)
    cb = DwellLearningRate(patience=1, stop_patience=10, threshold=0.9, factor=0.5, verbose=False)
    logs = [
        {"loss": 2.0, "accuracy": 0.5, "val_loss": 3.0, "val_accuracy": 0.4},
        {"loss": 1.8, "accuracy": 0.6, "val_loss": 2.0, "val_accuracy": 0.5},
        {"loss": 1.7, "accuracy": 0.55, "val_loss": 1.0, "val_accuracy": 0.5},  # acc drops → reduce, dwell
        {"loss": 0.5, "accuracy": 0.95, "val_loss": 1.5, "val_accuracy": 0.8},  # val phase: 1.5 < 2.0 → improves
        {"loss": 0.4, "accuracy": 0.96, "val_loss": 1.6, "val_accuracy": 0.8},  # worse → reduce, dwell to epoch 4
    ]
    trace = drive(cb, model, logs)
    assert [r["monitor"] for r in cb.rows] == ["accuracy"] * 3 + ["val_loss"] * 2
    assert [t["lr"] for t in trace] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert [t["weights"] for t in trace] == [1, 2, 2, 4, 4]
    assert cb.rows[1]["improvement_pct"] == pytest.approx(20.0)


def test_prints_a_row_per_epoch_and_serialises():
    out = io.StringIO()
    cb = DwellLearningRate(patience=1, stop_patience=2, threshold=0.0, stream=out)
    drive(cb, tiny_model(), val_phase([1.0, 0.5]))
    lines = out.getvalue().splitlines()
    assert lines[0].split() == list(DwellLearningRate.COLUMNS)
    assert lines[1].split()[0] == "1" and lines[2].split()[0] == "2" and "val_loss" in lines[2]
    config = json.loads(json.dumps(cb.get_config()))
    clone = DwellLearningRate.from_config(config)
    assert clone.get_config() == cb.get_config()


def test_state_round_trip_for_resume():
    cb = DwellLearningRate(patience=2, threshold=0.0, verbose=False)
    drive(cb, tiny_model(), val_phase([1.0, 1.1]))
    other = DwellLearningRate(patience=2, threshold=0.0, verbose=False)
    other.load_state(json.loads(json.dumps(cb.state())))
    assert other.state() == cb.state() and other.count == 1 and other.lowest_val_loss == 1.0
    assert [row["epoch"] for row in other.rows] == [1, 2]  # the table survives --resume


def test_bad_arguments_and_missing_logs():
    for kwargs, word in (({"factor": 1.5}, "factor"), ({"patience": 0}, "patience"),
                         ({"stop_patience": 0}, "stop_patience"), ({"threshold": 2}, "threshold")):
        with pytest.raises(ValueError, match=word):
            DwellLearningRate(**kwargs)
    cb = DwellLearningRate(verbose=False)
    cb.set_model(tiny_model())
    cb.on_train_begin()
    with pytest.raises(ValueError, match="val_loss"):
        cb.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})


def test_works_inside_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy", metrics=["accuracy"])
    cb = DwellLearningRate(patience=1, stop_patience=2, threshold=0.99, verbose=False)
    history = model.fit(x, y, validation_split=0.25, epochs=6, batch_size=16, verbose=0, callbacks=[cb])
    assert len(cb.rows) == len(history.history["loss"]) >= 2
    assert history.history["lr"][0] == pytest.approx(0.5)
    assert history.history["weights_restored"] == [float(r["restored"]) for r in cb.rows]
    for restored, best in zip(model.get_weights(), cb.best_weights):  # best weights restored at the end
        np.testing.assert_array_equal(restored, best)


def test_epoch_table_records_only_requested_epochs_and_test_results():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    model = tiny_model(0.01)
    table = EpochTable(keys=["loss"], epochs=[2, 5, 9], data=(x[:8], y[:8]))
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[table])
    assert sorted(table.rows) == [2, 5]
    assert table.rows[2]["loss"] == pytest.approx(history.history["loss"][1])
    expected = model.evaluate(x[:8], y[:8], verbose=0, return_dict=True)["loss"]
    assert table.rows[5]["test_loss"] == pytest.approx(expected, rel=1e-5)
    restored = EpochTable(keys=["loss"], epochs=[2, 5, 9])
    restored.load_state(json.loads(json.dumps(table.state())))
    assert restored.rows == table.rows
    with pytest.raises(ValueError, match="keys"):
        EpochTable(keys=[])


def _drive_stopper(cb, model, losses, start_epoch=0):
    """Feed ``val_loss`` values to an early-stopping / plateau callback, stamping the weights with the
    epoch number so restored weights show where they came from."""
    cb.set_model(model)
    cb.on_train_begin()
    for i, loss in enumerate(losses, start=start_epoch):
        stamp(model, float(i + 1))
        cb.on_epoch_end(i, {"val_loss": loss})
        if model.stop_training:
            break


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_resumable_early_stopping_resumes_exactly_like_an_uninterrupted_run(cut):
    losses = [1.0, 0.5, 0.7, 0.8, 0.9, 0.95]
    whole = ResumableEarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = tiny_model()
    _drive_stopper(whole, model, losses)
    whole.on_train_end()
    assert whole.stopped_epoch == 3 and whole.best_epoch == 1 and weight_value(model) == 2.0

    first = ResumableEarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = tiny_model()
    _drive_stopper(first, model, losses[:cut])
    state = json.loads(json.dumps(first.state()))  # what checkpoints/state.json holds
    best = [w.copy() for w in first.best_weights]  # what checkpoints/<name>.best.npz holds
    second = ResumableEarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    second.load_state(state)
    second.best_weights = best
    model = tiny_model()
    _drive_stopper(second, model, losses[cut:], start_epoch=cut)
    second.on_train_end()
    assert (second.stopped_epoch, second.best_epoch, weight_value(model)) == (3, 1, 2.0)


def test_resumable_plateau_keeps_its_counters():
    model = tiny_model(lr=0.1)
    cb = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    _drive_stopper(cb, model, [1.0, 1.1])
    assert cb.wait == 1
    state = json.loads(json.dumps(cb.state()))
    resumed = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    resumed.load_state(state)
    _drive_stopper(resumed, model, [1.2], start_epoch=2)  # the second epoch without improvement
    assert get_learning_rate(model) == pytest.approx(0.05)
    fresh = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    model = tiny_model(lr=0.1)
    _drive_stopper(fresh, model, [1.2])  # a fresh callback would not have reduced yet
    assert get_learning_rate(model) == pytest.approx(0.1)
    assert ResumableEarlyStopping().state()["best"] is None  # unset best is stored as null


def test_plateau_callbacks_and_the_early_stopping_record():
    from brats_keras.callbacks import early_stopping_record, plateau_callbacks

    assert plateau_callbacks("val_loss") == [] and early_stopping_record([]) is None
    reduce, stop = plateau_callbacks("val_accuracy", mode="max", reduce_factor=0.3, reduce_patience=2,
                                     min_learning_rate=1e-6, stop_patience=5)
    assert isinstance(reduce, ResumableReduceLROnPlateau) and isinstance(stop, ResumableEarlyStopping)
    assert (reduce.factor, reduce.patience, reduce.min_lr, reduce.mode) == (0.3, 2, 1e-6, "max")
    assert (stop.patience, stop.mode, stop.restore_best_weights) == (5, "max", True)
    (only_stop,) = plateau_callbacks("val_loss", stop_patience=2)
    model = tiny_model()
    only_stop.set_model(model)
    only_stop.on_train_begin()
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7]):
        only_stop.on_epoch_end(epoch, {"val_loss": loss})
    assert early_stopping_record([reduce, only_stop]) == {"monitor": "val_loss", "patience": 2, "best_epoch": 2,
                                                          "stopped_at": 4}


# --- the one-line epoch log and the progress mode ----------------------------------------------
EPOCH_LOGS = {"accuracy": 0.98921, "dice_et": 6.398e-09, "loss": 0.05342, "mean_iou": np.float32(0.2473),
              "val_accuracy": 0.99391, "val_loss": 0.03041}


def no_control_characters(text: str) -> bool:
    return "\r" not in text and "\x1b" not in text and "\b" not in text


def test_epoch_line_exact_format_and_learning_rate_sources():
    model = tiny_model(lr=0.001)
    line = EpochLine()
    line.set_model(model)
    line.set_params({"epochs": 12, "steps": 3, "verbose": 0})
    # training values in Keras' order, then val_*; 4 decimals, scientific below 1e-3; optimizer LR
    assert line.format_line(2, EPOCH_LOGS, 6.24) == (
        "epoch  3/12 - accuracy: 0.9892 - dice_et: 6.3980e-09 - loss: 0.0534 - mean_iou: 0.2473"
        " - val_accuracy: 0.9939 - val_loss: 0.0304 - lr: 0.001 - 6.2 s")
    # an LR in the logs (LearningRateScheduler, the dwell callback) wins and is not printed twice
    assert line.format_line(11, {"loss": 1.5, "learning_rate": 5e-05, "lr": 0.3}, 61.04) == (
        "epoch 12/12 - loss: 1.5000 - lr: 5e-05 - 61.0 s")
    # no model: no LR cell; no params: no "/N"; non-numeric log values are left out
    bare = EpochLine()
    assert bare.format_line(0, {"loss": 0.25, "note": "x"}, 0.04) == "epoch 1 - loss: 0.2500 - 0.0 s"


def test_epoch_line_prints_one_flushed_plain_line_per_epoch(capsys):
    model = tiny_model(lr=0.001)
    line = EpochLine()
    line.set_model(model)
    line.set_params({"epochs": 2})
    for epoch in range(2):
        line.on_epoch_begin(epoch)
        line.on_epoch_end(epoch, dict(EPOCH_LOGS))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and out.endswith("\n") and no_control_characters(out)
    for number, text in enumerate(lines, 1):
        assert re.fullmatch(rf"epoch {number}/2 - accuracy: 0\.9892 - .* - val_loss: 0\.0304 - lr: 0\.001 - "
                            r"\d+\.\d s", text), text


def test_fit_progress_chooses_by_terminal_env_and_explicit_verbose(monkeypatch, capsys):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    verbose, extra = fit_progress([])  # stdout is captured here: not a terminal
    assert verbose == 0 and [type(cb) for cb in extra] == [EpochLine]
    assert fit_progress([], verbose=1) == (1, [])  # explicit verbose wins
    assert fit_progress([], verbose="auto") == ("auto", [])
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert fit_progress([]) == ("auto", [])  # a terminal: Keras' bar as before
    for forced, expected in (("bar", ("auto", [])), (" NONE ", (0, []))):
        monkeypatch.setenv(PROGRESS_ENV, forced)
        assert fit_progress([]) == expected
    monkeypatch.setenv(PROGRESS_ENV, "line")
    assert [type(cb) for cb in fit_progress([])[1]] == [EpochLine]
    # the dwell table prints its own row per epoch: that row is the epoch's line, no second one
    assert fit_progress([DwellLearningRate(verbose=True)]) == (0, [])
    assert [type(cb) for cb in fit_progress([DwellLearningRate(verbose=False)])[1]] == [EpochLine]
    monkeypatch.setenv(PROGRESS_ENV, "bars")
    with pytest.raises(ValueError, match="bar, line, none"):
        progress_mode()


def test_progress_mode_follows_the_stream(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_mode(Terminal()) == "bar"
    assert progress_mode(io.StringIO()) == "line"
    assert progress_mode(object()) == "line"  # no isatty at all


def test_line_progress_prints_plain_lines(monkeypatch):
    buf = io.StringIO()
    bar = LineProgress(["a", "b", "c"], desc="reading", unit="file", file=buf, interval=0.0)
    assert list(bar) == ["a", "b", "c"]
    lines = buf.getvalue().splitlines()
    assert no_control_characters(buf.getvalue()) and len(lines) == 4  # one per update (interval 0) + the end
    assert re.fullmatch(r"reading: 1/3 files \(33%\), \d+\.\d s", lines[0]), lines[0]
    assert re.fullmatch(r"reading: 3/3 files, \d+\.\d s", lines[-1]), lines[-1]
    quiet = io.StringIO()
    with LineProgress(total=1, desc="case 1", unit="slice", leave=False, file=quiet) as bar:
        bar.update(1)  # the default interval (30 s) has not passed: nothing until the end
    assert quiet.getvalue() == ""  # leave=False: no final line either
    monkeypatch.setenv(PROGRESS_ENV, "line")
    assert isinstance(progress_bar(range(2), desc="x", file=io.StringIO()), LineProgress)
    monkeypatch.setenv(PROGRESS_ENV, "none")
    silent = io.StringIO()
    assert sum(progress_bar(range(4), desc="x", file=silent)) == 6 and silent.getvalue() == ""
    monkeypatch.setenv(PROGRESS_ENV, "bar")
    assert not isinstance(progress_bar(range(2), desc="x", file=io.StringIO()), LineProgress)
