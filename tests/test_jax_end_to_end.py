"""The experiments on the JAX backend, with TensorFlow importable and with it blocked (as if not installed).

The end-to-end runs start the experiment script in a subprocess with ``KERAS_BACKEND=jax``; "blocked" sets
``sys.modules["tensorflow"] = sys.modules["tensorboard"] = None`` before anything is imported, so every
``import tensorflow`` (ours, Keras', TensorBoard's) raises ``ImportError`` as in an environment without it.
The run must still write its whole run folder from the PyDataset pipeline, with ``model.keras`` (reloaded
here, on TensorFlow) and, instead of ``saved_model/`` and ``logs/``, one line each saying why they are
skipped. The fast tests below check the pieces in this process (TensorFlow backend).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from brats_keras.data.inputs import input_dataset
from brats_keras.data.pydataset import IndexPyDataset
from brats_keras.errors import BratsKerasError
from brats_keras.export import export_model, load_model
from brats_keras.inference import INFERENCE_FILE
from tests.helpers import REPO

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorboard'] = None; "
"""Prefix of a ``python -c`` program: TensorFlow and tensorboard not importable, as if not installed."""

PAPER1 = ["--model", "unet2d", "--epochs", "1", "--batch-size", "8", "--slice-start", "5", "--slice-count", "30",
          "--image-size", "32", "--filters", "4", "--max-eval-cases", "1"]
PAPER2 = ["--model", "unet3d_simple", "--epochs", "1", "--batch-size", "2", "--crop", "8:40,8:40,4:36",
          "--filters", "2", "--jit-compile", "auto", "--max-eval-cases", "1"]  # on JAX "off" would run eagerly


def jax_env(cache, **extra) -> dict:
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "BRATS_KERAS_CACHE": str(cache), **extra}


def run_on_jax(program: str, *, block_tf: bool, cache, timeout=600, **env) -> subprocess.CompletedProcess:
    """``python -c program`` on JAX, TensorFlow blocked or not; the program's first line prints the backend."""
    code = (BLOCK_TF if block_tf else "") + "import keras; print('backend:', keras.backend.backend()); " + program
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=jax_env(cache, **env), timeout=timeout)


def run_script_on_jax(script: str, args: list[str], *, block_tf: bool, cache) -> subprocess.CompletedProcess:
    program = (f"import runpy; sys.argv = {[script, *args]!r}; "
               f"runpy.run_path({str(REPO / 'experiments' / script)!r}, run_name='__main__')")
    return run_on_jax(("import sys; " if not block_tf else "") + program, block_tf=block_tf, cache=cache)


def check_jax_run(proc, out, model: str, *, block_tf: bool, sample_shape: tuple) -> dict:
    """The run folder of a JAX run: the reports, a reloadable model.keras, the SavedModel or its skip reason."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "backend: jax" in proc.stdout and "SYNTHETIC" in proc.stdout
    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    sub = out / model
    results = json.loads((out / "results.json").read_text())
    entry = results["models"][model]
    assert entry["epochs_run"] == 1 and (sub / "checkpoints" / "state.json").is_file()
    assert entry["export_max_abs_diff"]["keras"] < 1e-5  # reloaded in the JAX process
    reloaded = load_model(sub / "model.keras")  # and here, on TensorFlow: the format is the backend's neither
    assert reloaded(np.zeros((1, *sample_shape), np.float32)).shape[:-1] == (1, *sample_shape[:-1])
    spec = json.loads((sub / INFERENCE_FILE).read_text())
    if block_tf:
        reason = entry["exports"]["saved_model_skipped"]
        assert "TensorFlow is not importable" in reason and "ModuleNotFoundError" in reason
        assert spec["saved_model_skipped"] == reason and "saved_model" not in entry["exports"]
        assert not (sub / "saved_model").exists() and not (sub / "logs").exists()
        assert f"export: saved_model/ skipped: {reason}" in proc.stdout
        assert proc.stdout.count("logs: TensorBoard logs skipped") == 1
    else:
        assert (sub / "saved_model" / "saved_model.pb").is_file() and entry["export_max_abs_diff"]["saved_model"] < 1e-4
        assert "saved_model_skipped" not in spec and "saved_model_skipped" not in entry["exports"]
        assert any((sub / "logs").iterdir())
    return results


@pytest.mark.slow
@pytest.mark.parametrize("block_tf", [False, True], ids=["tf-importable", "tf-blocked"])
def test_paper1_tiny_on_jax(synthetic_brats, tmp_path, block_tf):
    pytest.importorskip("jax", reason="jax is part of the [test] extra")
    out = tmp_path / "run"
    proc = run_script_on_jax("paper1_u_resunet.py", ["--data-dir", str(synthetic_brats), "--out", str(out), *PAPER1],
                             block_tf=block_tf, cache=tmp_path / "cache")
    results = check_jax_run(proc, out, "unet2d", block_tf=block_tf, sample_shape=(32, 32, 2))
    summary = results["models"]["unet2d"]["whole_volume"]["summary"]
    assert set(summary) == {"ET", "TC", "WT"} and summary["WT"]["dice"]["count"] == 1
    assert "Table 6.1" in (out / "table.md").read_text()
    if block_tf:  # the inference command on the exported model.keras, still without TensorFlow
        one_case = tmp_path / "one_case"
        case = next(p for p in sorted(synthetic_brats.iterdir()) if p.is_dir())
        shutil.copytree(case, one_case / case.name)
        predict = run_on_jax("from brats_keras.cli import main; sys.exit(main(" + repr(
            ["predict", "--model", str(out / "unet2d" / "model.keras"), "--data-dir", str(one_case),
             "--out", str(tmp_path / "pred")]) + "))", block_tf=True, cache=tmp_path / "cache")
        assert predict.returncode == 0, predict.stdout[-2000:] + predict.stderr[-2000:]
        assert len(list((tmp_path / "pred").rglob("*.nii.gz"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("block_tf", [False, True], ids=["tf-importable", "tf-blocked"])
def test_paper2_tiny_on_jax(synthetic_brats, tmp_path, block_tf):
    pytest.importorskip("jax", reason="jax is part of the [test] extra")
    out = tmp_path / "run"
    proc = run_script_on_jax("paper2_attention_unet3d.py",
                             ["--data-dir", str(synthetic_brats), "--out", str(out), *PAPER2],
                             block_tf=block_tf, cache=tmp_path / "cache")
    results = check_jax_run(proc, out, "unet3d_simple", block_tf=block_tf, sample_shape=(32, 32, 32, 3))
    assert {"train-2020", "val-2020"} <= set(results["models"]["unet3d_simple"]["cohorts"])


DATA_PARALLEL = """
import json
import numpy as np
from brats_keras.data.inputs import input_dataset
from brats_keras.errors import BratsKerasError
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy

class Index:  # 13 samples: batches of 8 over 2 devices leave the last one out
    num_classes, x_shape, y_shape = 3, (4, 4, 1), (4, 4)
    def __len__(self): return 13
    def gather(self, i):
        return (np.asarray(i, np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32),
                (np.asarray(i)[:, None, None] % 3 * np.ones((1, 4, 4), np.uint8)).astype(np.uint8))

strategy = select_strategy("auto")
distribution = keras.distribution.distribution()
batch = global_batch_size(4, strategy)
data = input_dataset(Index(), batch_size=batch, shuffle=True, seed=1)
def build():
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(3, 1, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    return model
model, history = fit(build, data, run=RunDir.create(sys.argv[1], "dp"), epochs=1, strategy=strategy, verbose=0)
kernel = model.weights[0].value
try:
    select_strategy("multiworker")
    multiworker = "no error"
except BratsKerasError as exc:
    multiworker = str(exc)
one = select_strategy("one")
print(json.dumps({"distribution": type(distribution).__name__, "replicas": strategy.num_replicas_in_sync,
                  "devices": len(distribution.device_mesh.devices.flatten()), "global_batch": batch,
                  "batches": len(data), "samples": data.samples_per_epoch, "loss": history["loss"],
                  "kernel_devices": len(kernel.sharding.device_set), "multiworker": multiworker,
                  "after_one": repr(keras.distribution.distribution()), "one_replicas": one.num_replicas_in_sync}))
"""


@pytest.mark.slow
def test_data_parallel_over_two_host_devices_without_tensorflow(tmp_path):
    pytest.importorskip("jax", reason="jax is part of the [test] extra")
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + "import keras; " + DATA_PARALLEL, str(tmp_path / "run")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env=jax_env(tmp_path / "cache", XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "strategy: keras.distribution.DataParallel over 2 devices (cpu:0, cpu:1)" in proc.stdout
    assert "13 samples in batches of 8 over 2 devices" in proc.stdout and "1 sample(s) left out" in proc.stdout
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["distribution"] == "DataParallel" and got["replicas"] == 2 and got["devices"] == 2
    assert got["global_batch"] == 8  # per-replica 4 × 2 devices, as with tf.distribute
    assert got["batches"] == 2 and got["samples"] == 12 and np.isfinite(got["loss"][0])
    assert got["kernel_devices"] == 2  # the weights live on both devices (replicated)
    assert "TF_CONFIG" in got["multiworker"] and "KERAS_BACKEND=tensorflow" in got["multiworker"]
    assert got["after_one"] == "None" and got["one_replicas"] == 1


# --- the pieces, in this process (TensorFlow backend) ------------------------------------------------------


class _Index:
    num_classes, x_shape, y_shape = 2, (2, 2, 1), (2, 2)

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def gather(self, indices):
        indices = np.asarray(indices)
        return ((indices[:, None, None, None] * np.ones((1, 2, 2, 1))).astype(np.float32),
                (indices[:, None, None] % 2 * np.ones((1, 2, 2))).astype(np.uint8))


def test_input_dataset_is_the_tf_data_pipeline_on_tensorflow():
    import tensorflow as tf

    from brats_keras.data.pipeline import make_dataset

    assert keras.backend.backend() == "tensorflow"
    ds = input_dataset(_Index(5), batch_size=2, shuffle=True, seed=3)
    assert isinstance(ds, tf.data.Dataset)
    ours = [x.numpy().ravel().tolist() for x, _ in ds]
    assert ours == [x.numpy().ravel().tolist() for x, _ in make_dataset(_Index(5), batch_size=2, shuffle=True, seed=3)]


def test_batch_multiple_cuts_only_the_last_batch():
    full = IndexPyDataset(_Index(13), batch_size=8)
    assert len(full) == 2 and full.samples_per_epoch == 13 and len(full[1][0]) == 5
    cut = IndexPyDataset(_Index(13), batch_size=8, batch_multiple=2, shuffle=True, seed=0)
    assert len(cut) == 2 and cut.samples_per_epoch == 12 and len(cut[0][0]) == 8 and len(cut[1][0]) == 4
    seen = np.concatenate([cut[i][0][:, 0, 0, 0] for i in range(len(cut))])
    assert len(set(seen.tolist())) == 12  # no sample twice; the one left out is the order's last
    assert IndexPyDataset(_Index(16), batch_size=8, batch_multiple=2).samples_per_epoch == 16
    with pytest.raises(ValueError, match="multiple of batch_multiple"):
        IndexPyDataset(_Index(13), batch_size=6, batch_multiple=4)


def test_fewer_samples_than_devices_is_one_line_error(monkeypatch):
    import brats_keras.data.inputs as inputs

    monkeypatch.setattr(inputs, "uses_tf_data", lambda: False)
    monkeypatch.setattr(inputs, "batch_divisor", lambda: 4)
    with pytest.raises(BratsKerasError, match="3 sample.* cannot be split over 4 devices"):
        input_dataset(_Index(3), batch_size=8)


def test_saved_model_is_skipped_with_its_reason_when_tensorflow_is_not_importable(tmp_path, monkeypatch, capsys):
    import brats_keras.export as export
    from brats_keras.configs.paper1 import paper1_config
    from brats_keras.inference import InferenceSpec

    monkeypatch.setattr(export, "tensorflow_import_error", lambda: "ModuleNotFoundError: No module named 'tensorflow'")
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(4, 1, activation="softmax")])
    spec = InferenceSpec.for_slices(paper1_config(quick=True).data.slices, experiment="x", model="m")
    out = export.export_checked(model, tmp_path / "model.keras", tmp_path / "saved_model",
                                np.zeros((1, 4, 4, 2), np.float32), spec)
    reason = out["exports"]["saved_model_skipped"]
    assert reason.startswith("TensorFlow is not importable (ModuleNotFoundError: No module named 'tensorflow')")
    assert capsys.readouterr().out.count("export: saved_model/ skipped:") == 1
    assert not (tmp_path / "saved_model").exists() and set(out["export_max_abs_diff"]) == {"keras"}
    assert json.loads((tmp_path / INFERENCE_FILE).read_text())["saved_model_skipped"] == reason
    assert export.find_inference_spec(tmp_path / "model.keras")[0] == spec  # the note does not disturb the spec
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        assert json.loads(archive.read(INFERENCE_FILE))["saved_model_skipped"] == reason
    # with TensorFlow importable nothing changes: no note anywhere
    monkeypatch.undo()
    paths = export_model(model, tmp_path / "b" / "model.keras", tmp_path / "b" / "saved_model", spec)
    assert "saved_model_skipped" not in paths and (tmp_path / "b" / "saved_model" / "saved_model.pb").is_file()
    assert "saved_model_skipped" not in json.loads((tmp_path / "b" / INFERENCE_FILE).read_text())


def test_tensorboard_is_skipped_once_without_tensorboard(tmp_path, monkeypatch, capsys):
    import brats_keras.callbacks as callbacks

    assert isinstance(callbacks.tensorboard_callback(tmp_path), keras.callbacks.TensorBoard)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setattr(callbacks, "_tensorboard_skip_said", False)
    assert callbacks.tensorboard_callback(tmp_path) is None and callbacks.tensorboard_callback(tmp_path) is None
    printed = capsys.readouterr().out
    assert printed.count("logs: TensorBoard logs skipped") == 1 and "tensorboard" in printed
