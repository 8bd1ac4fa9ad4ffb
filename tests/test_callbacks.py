"""The dwell learning-rate callback driven by scripted epoch logs, and the epoch-table recorder."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest

from brats_keras.callbacks import (
    DwellLearningRate, EpochTable, ResumableEarlyStopping, ResumableReduceLROnPlateau, get_learning_rate,
)

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
