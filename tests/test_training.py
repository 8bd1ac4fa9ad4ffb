"""Strategy selection, distribution equivalence, run folders, --resume after a kill, exports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from brats_keras.export import check_exports, export_model
from brats_keras.training import RunDir, global_batch_size, inference_without_xla_on_cpu, select_strategy

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist_worker.py"


def run_worker(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, timeout=timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_strategy_names_and_global_batch():
    one = select_strategy("one")
    assert one.num_replicas_in_sync == 1 and global_batch_size(16, one) == 16
    with pytest.raises(ValueError, match="strategy"):
        select_strategy("tpu")
    with pytest.raises(ValueError, match="per_replica"):
        global_batch_size(0, one)


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
    from brats_keras.errors import BratsKerasError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(BratsKerasError, match="TF_CONFIG"):
        select_strategy("multiworker")


def test_mirrored_on_two_cpus_equals_one_device():
    result = last_json(run_worker("mirrored"))
    assert result["replicas"] == 2 and result["global_batch"] == 32
    assert result["loss_mirrored"] == pytest.approx(result["loss_one"], abs=1e-6)
    assert result["max_weight_diff"] < 1e-6 < result["max_weight_change"]  # the step did change the weights
    # predict_on_batch of the mirrored model returns every replica's outputs (mirrored_predict_rows: 14 for 7
    # inputs, TF 2.21 / Keras 3.12); the copy the runner scores (single_process_model) one row per input
    assert result["copy_predict_rows"] == 7 and result["copy_max_diff"] < 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_multiworker_run_finishes():
    ports = [_free_port(), _free_port()]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), "multiworker"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config)}))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["strategy"] == "NestedReduceMultiWorkerMirroredStrategy"
        assert r["replicas"] == 2 and r["global_batch"] == 16 and len(r["losses"]) == 2
    assert results[0]["losses"] == results[1]["losses"]  # both workers saw the same all-reduced steps


def test_resume_after_kill_has_every_epoch_once(tmp_path):
    out = tmp_path / "run"
    killed = run_worker("resume", str(out), "4", env={"KILL_AFTER": "2"})
    assert killed.returncode == -9  # SIGKILL, as a crash or a pre-empted job
    run = RunDir(out)
    assert run.checkpoint_epochs() == 2
    state = json.loads(run.checkpoint_state.read_text())
    assert "DwellLearningRate" in state["callbacks"]
    assert (run.checkpoints / "DwellLearningRate.best.npz").is_file()
    resumed = last_json(run_worker("resume", str(out), "4"))
    assert resumed["epochs"] == 4
    lines = run.history.read_text().strip().splitlines()
    assert lines[0].split(",")[0] == "epoch"
    assert [int(line.split(",")[0]) for line in lines[1:]] == [0, 1, 2, 3]
    assert run.checkpoint_epochs() == 4
    # resuming a finished run trains nothing more
    again = last_json(run_worker("resume", str(out), "4"))
    assert again["epochs"] == 4 and len(run.history.read_text().strip().splitlines()) == 5


def test_resumable_callbacks_get_distinct_keys():
    from brats_keras.callbacks import DwellLearningRate, EpochTable
    from brats_keras.training import resumable_callbacks

    a, b = EpochTable(keys=["loss"]), EpochTable(keys=["loss"], epochs=[5])
    dwell = DwellLearningRate(verbose=False)
    keyed = resumable_callbacks([a, keras.callbacks.History(), dwell, b])
    assert keyed == {"EpochTable": a, "DwellLearningRate": dwell, "EpochTable_2": b}


def test_run_dir_layout_and_latest(tmp_path):
    run = RunDir.create(None, "paperX", root=tmp_path)
    assert run.path.parent == tmp_path / "paperX" and run.path.is_dir()
    assert {p.parent for p in (run.plots, run.logs, run.checkpoints)} == {run.path}
    assert {p.name for p in (run.config, run.split, run.history, run.results, run.table, run.model_keras,
                              run.saved_model)} == {"config.json", "split.json", "history.csv", "results.json",
                                                    "table.md", "model.keras", "saved_model"}
    from brats_keras.errors import BratsKerasError

    with pytest.raises(BratsKerasError, match="no run of paperX"):
        RunDir.latest("paperX", root=tmp_path)
    run.checkpoints.mkdir()
    run.checkpoint_model.write_bytes(b"x")
    run.checkpoint_state.write_text(json.dumps({"epochs_done": 3, "callbacks": {}}))
    assert RunDir.latest("paperX", root=tmp_path) == run and run.checkpoint_epochs() == 3


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_compiled_model_reloads_in_a_fresh_process_after_importing_models(tmp_path):
    from brats_keras.metrics import RegionDice
    from brats_keras.losses import DiceLoss

    model = _tiny_model()
    model.compile(optimizer="adam", loss=DiceLoss(), metrics=[RegionDice([1, 2])])
    model.save(tmp_path / "m.keras")
    code = ("import keras, brats_keras.models\n"
            f"m = keras.models.load_model({str(tmp_path / 'm.keras')!r})\n"
            "print(type(m.loss).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "DiceLoss"


def test_export_reloads_and_saved_model_serves_without_the_package(tmp_path):
    model = _tiny_model()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    paths = export_model(model, tmp_path / "model.keras", tmp_path / "saved_model")
    diffs = check_exports(model, x, paths["keras"], paths["saved_model"])
    assert diffs["keras"] < 1e-6 and diffs["saved_model"] < 1e-5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(tmp_path / 'saved_model')!r})\n"
        f"y = m.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r}))).numpy()\n"
        f"d = float(np.abs(y - np.load({str(tmp_path / 'expected.npy')!r})).max())\n"
        "assert not any(k.startswith('brats_keras') for k in sys.modules), 'package was imported'\n"
        "print(d)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5
    # re-exporting replaces the folder atomically and leaves no temporary folders behind
    export_model(model, tmp_path / "model.keras", tmp_path / "saved_model")
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]
    assert oct((tmp_path / "model.keras").stat().st_mode & 0o777) != oct(0o600)


def test_xla_trained_model_predicts_without_xla_on_cpu():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    model.train_on_batch(x, y)
    under_xla = model.predict_on_batch(x)
    assert model.jit_compile is True
    inference_without_xla_on_cpu(model)  # this machine has no GPU
    assert model.jit_compile is False
    np.testing.assert_allclose(model.predict_on_batch(x), under_xla, atol=1e-5)
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def test_a_run_stopped_early_is_finished_on_resume_not_continued(tmp_path):
    import tensorflow as tf

    from brats_keras.callbacks import ResumableEarlyStopping
    from brats_keras.training import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def build():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # lr 0: val_loss never improves
        return model

    def train(resume):
        stopper = ResumableEarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        return fit(build, data, run=run, epochs=10, validation_data=data, callbacks=[stopper], resume=resume,
                   tensorboard=False, verbose=0)

    run = RunDir.create(tmp_path / "run", "paperX")
    _, history = train(resume=False)
    assert len(history["loss"]) == 3  # epoch 1 is the best; epochs 2 and 3 do not improve: stop
    assert json.loads(run.checkpoint_state.read_text())["stopped"] is True
    _, resumed = train(resume=True)
    assert len(resumed["loss"]) == 3  # finished, not continued to epoch 10
    assert run.checkpoint_epochs() == 3


def _fit_tiny_with_stdout_to_file(tmp_path, name: str, **kwargs) -> tuple[str, dict]:
    """``training.fit`` of a 2-epoch dense model with ``sys.stdout`` sent to a file (as under nohup
    or ``> run.log``); the file's text and the history."""
    import contextlib

    import tensorflow as tf

    from brats_keras.training import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        return model

    log = tmp_path / f"{name}.log"
    with open(log, "w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        _, history = fit(build, data, run=RunDir.create(tmp_path / name, "paperX"), epochs=2, validation_data=data,
                         tensorboard=False, **kwargs)
    return log.read_text(encoding="utf-8"), history


def test_fit_to_a_log_file_writes_one_plain_line_per_epoch(tmp_path, monkeypatch):
    import re

    from brats_keras.progress import PROGRESS_ENV

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    text, history = _fit_tiny_with_stdout_to_file(tmp_path, "auto")
    lines = text.splitlines()
    assert len(lines) == 2 and not any(c in text for c in "\r\x1b\b"), text
    for epoch, line in enumerate(lines):
        expected = (f"epoch {epoch + 1}/2 - loss: {history['loss'][epoch]:.4f} - mae: {history['mae'][epoch]:.4f}"
                    f" - val_loss: {history['val_loss'][epoch]:.4f} - val_mae: {history['val_mae'][epoch]:.4f}"
                    " - lr: 0.01 - ")
        assert line.startswith(expected) and re.fullmatch(r"\d+\.\d s", line[len(expected):]), line
    # an explicit verbose wins (no epoch line), and BRATS_KERAS_PROGRESS=none silences the epochs
    assert _fit_tiny_with_stdout_to_file(tmp_path, "explicit", verbose=0)[0] == ""
    monkeypatch.setenv(PROGRESS_ENV, "none")
    quiet, quiet_history = _fit_tiny_with_stdout_to_file(tmp_path, "none")
    assert quiet == "" and quiet_history == history  # same seed, same numbers, whatever is printed


def test_fit_to_a_log_file_with_the_dwell_table_prints_its_rows_only(tmp_path, monkeypatch):
    """Paper 3: the dwell callback's table row is the epoch's one line (no EpochLine beside it)."""
    from brats_keras.callbacks import DwellLearningRate
    from brats_keras.progress import PROGRESS_ENV

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    dwell = DwellLearningRate(threshold=0.0, accuracy_key="mae", val_accuracy_key="val_mae")
    text, _ = _fit_tiny_with_stdout_to_file(tmp_path, "dwell", callbacks=[dwell])
    lines = text.splitlines()
    assert lines[0].split() == list(DwellLearningRate.COLUMNS) and not any(c in text for c in "\r\x1b\b")
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"] and not any(x.startswith("epoch") for x in lines)
    assert lines[-1].startswith("restored the best weights") and len(lines) == 4
