"""Multi-worker runs: only the chief writes the run folder (training.worker_run_dir), every worker resumes
from the same checkpoint (training.agreed_resume), and paper 1 run as two workers on 127.0.0.1 writes the
same run folder as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from brats_keras.errors import BratsKerasError
from brats_keras.training import RunDir, agreed_resume, select_strategy, worker_run_dir, writes_run
from tests.helpers import REPO

SCRIPT = REPO / "experiments" / "paper1_u_resunet.py"
TINY = ["--model", "unet2d", "--epochs", "1", "--batch-size", "8", "--slice-start", "5", "--slice-count", "30",
        "--image-size", "32", "--filters", "4"]


def worker_strategy(task_id: int, chief: bool, others=()):
    """A stand-in for a MultiWorkerMirroredStrategy on worker ``task_id``: ``others`` are the
    ``[resuming, epochs_done, stopped]`` rows the other workers contribute to the all-gather."""
    def gather(value, axis):
        return tf.concat([value, tf.constant(list(others), tf.int64, shape=(len(others), 3))], axis)

    return SimpleNamespace(extended=SimpleNamespace(should_checkpoint=chief),
                           cluster_resolver=SimpleNamespace(task_type="worker", task_id=task_id),
                           run=lambda fn: fn(), gather=gather, num_replicas_in_sync=1 + len(others))


def checkpointed_run(path: Path, epochs_done: int) -> RunDir:
    run = RunDir.create(path, "paperX")
    run.checkpoints.mkdir()
    run.checkpoint_model.write_bytes(b"model")
    run.checkpoint_state.write_text(json.dumps({"epochs_done": epochs_done, "callbacks": {}}))
    return run


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_one_process_and_the_chief_write_the_run_itself(tmp_path, temp_root):
    assert writes_run(select_strategy("one")) and writes_run(object())
    for strategy in (select_strategy("one"), worker_strategy(0, chief=True)):
        run = RunDir(tmp_path / f"run_{type(strategy).__name__}")
        with worker_run_dir(run, strategy) as own:
            assert own == run and run.path.is_dir()
            own.config.write_text("{}")
        assert run.config.is_file()
    assert not list(temp_root.iterdir())


def test_a_non_chief_worker_writes_a_temporary_folder_removed_at_the_end(tmp_path, temp_root, capsys):
    strategy = worker_strategy(1, chief=False)
    assert not writes_run(strategy)
    run = RunDir(tmp_path / "run")
    with worker_run_dir(run, strategy) as own:
        assert own.path.parent == temp_root and own.path.name.startswith("brats_keras_worker1_")
        own.results.write_text("{}")
        (own.path / "unet2d" / "saved_model").mkdir(parents=True)
    assert not own.path.exists() and not run.path.exists()  # the chief's folder is the chief's to make
    assert f"the chief writes the run folder {run.path}" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="crash"), worker_run_dir(run, strategy) as own:
        raise RuntimeError("crash")
    assert not own.path.exists() and not list(temp_root.iterdir())


def test_a_resuming_non_chief_starts_from_a_copy_of_the_chiefs_checkpoints(tmp_path, temp_root):
    chief = checkpointed_run(tmp_path / "run", 3)
    chief.split.write_text('{"train": ["a"]}')
    sub = checkpointed_run(chief.path / "unet2d", 2)
    sub.history.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    for written_only in (sub.saved_model / "saved_model.pb", sub.logs / "train" / "events", chief.plots / "a.png"):
        written_only.parent.mkdir(parents=True, exist_ok=True)
        written_only.write_bytes(b"x")
    with worker_run_dir(chief, worker_strategy(1, chief=False), resume=True) as own:
        own_sub = RunDir(own.path / "unet2d")
        assert own.checkpoint_epochs() == 3 and own_sub.checkpoint_epochs() == 2
        assert own.split.read_text() == chief.split.read_text() and own_sub.history.is_file()
        assert not (own_sub.saved_model.exists() or own_sub.logs.exists() or own.plots.exists())
        own_sub.checkpoint_state.write_text(json.dumps({"epochs_done": 4, "callbacks": {}}))
    assert sub.checkpoint_epochs() == 2  # the chief's checkpoint is not written by the other worker
    with worker_run_dir(chief, worker_strategy(1, chief=False)) as fresh:  # not resuming: nothing copied
        assert not any(fresh.path.iterdir())


def test_workers_resume_only_from_the_same_checkpoint(tmp_path):
    run = checkpointed_run(tmp_path / "run", 3)
    assert agreed_resume(select_strategy("one"), run, True) is True
    assert agreed_resume(select_strategy("one"), run, False) is False
    assert agreed_resume(worker_strategy(0, True, others=[(1, 3, 0)]), run, True) is True
    assert agreed_resume(worker_strategy(0, True, others=[(0, 0, 0)]), run, False) is False
    for other in [(0, 0, 0), (1, 2, 0), (1, 3, 1)]:  # no checkpoint, another epoch, stopped there
        with pytest.raises(BratsKerasError, match=r"different checkpoints .*filesystem every worker sees"):
            agreed_resume(worker_strategy(0, True, others=[other]), run, True)


# --- paper 1 as two workers on 127.0.0.1 ---------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(args, *, cache: Path, tmp: Path, task: int | None = None, ports=()) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BRATS_KERAS_CACHE": str(cache), "TMPDIR": str(tmp)}
    env.pop("TF_CONFIG", None)
    if task is not None:
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                       "task": {"type": "worker", "index": task}})
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_workers(outs, extra, *, cache: Path, tmp: Path) -> list[subprocess.Popen]:
    ports = _free_ports(len(outs))
    return [start(["--out", str(out), *extra], cache=cache, tmp=tmp, task=i, ports=ports) for i, out in enumerate(outs)]


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def layout(folder: Path) -> set[str]:
    """Relative paths of the files under ``folder``; TensorBoard event files (named by host, pid and time)
    by their folder."""
    return {str(p.relative_to(folder).parent / "events") if p.name.startswith("events.out.tfevents")
            else str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_paper1_as_two_workers_writes_one_run_folder_like_one_process(synthetic_brats, tmp_path):
    from brats_keras.configs.base import load_config
    from brats_keras.configs.paper1 import paper1_config
    from brats_keras.data.brats import discover_cases
    from brats_keras.export import load_model
    from brats_keras.runner import evaluate_slice_model

    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    args = ["--data-dir", str(synthetic_brats), *TINY]
    run, single = tmp_path / "runs" / "workers", tmp_path / "single"
    done = [finish(start(["--out", str(single), *args], cache=cache, tmp=tmp))]  # first: it builds the slice cache
    done += [finish(p) for p in start_workers([run, run], args, cache=cache, tmp=tmp)]
    for rc, out, err in done:
        assert rc == 0, err[-4000:]
    assert f"worker 1: removed {tmp}" in done[2][1]  # worker 1 wrote to a temporary folder under TMPDIR
    assert not list(tmp.iterdir()) and [p.name for p in run.parent.iterdir()] == ["workers"]

    assert layout(run) == layout(single)
    assert {"config.json", "split.json", "table.md", "results.json", "unet2d/model.keras", "unet2d/inference.json",
            "unet2d/saved_model/saved_model.pb", "unet2d/checkpoints/state.json", "unet2d/logs/train/events",
            "plots/unet2d_overlay.png"} <= layout(run)
    results = json.loads((run / "results.json").read_text())
    assert "Whole-volume" in (run / "table.md").read_text()

    # the chief's whole-volume scores are those of its trained model scored in one process
    config = load_config(run / "config.json", paper1_config(quick=True))
    cases = {f.case_id: f for f in discover_cases(synthetic_brats, modalities=config.data.slices.modalities)}
    test = json.loads((run / "split.json").read_text())["test"][: config.data.max_eval_cases or None]
    model = load_model(run / "unet2d" / "model.keras")
    here = evaluate_slice_model(model.predict_on_batch, [cases[c] for c in test], config.data.slices,
                                eval_slices=config.data.eval_slices)
    recorded = results["models"]["unet2d"]["whole_volume"]
    assert set(recorded["per_case"]) == set(test) and recorded["summary"]["WT"]["dice"]["count"] == len(test)
    for case, regions in here["per_case"].items():
        for region in ("ET", "TC", "WT"):
            assert recorded["per_case"][case][region]["dice"] == pytest.approx(regions[region]["dice"], abs=1e-9)
    assert np.isfinite(results["models"]["unet2d"]["final_test"]["loss"])

    # --resume with the run folder where only the chief sees it: one clear error line on both workers
    resumed = [finish(p) for p in start_workers([run, tmp_path / "not_shared"], [*args, "--resume"], cache=cache,
                                                tmp=tmp)]
    for rc, out, err in resumed:
        assert rc == 2, err[-4000:]
        assert err.strip().splitlines()[-1] == ("error: the workers found different checkpoints to resume from "
                                                "(epochs done: [0, 1]): --resume with several workers needs the run "
                                                "folder on a filesystem every worker sees")
    assert not list(tmp.iterdir()) and not (tmp_path / "not_shared").exists()
