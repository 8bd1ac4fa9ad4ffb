"""End-to-end runs of experiments/paper1_u_resunet.py on tiny synthetic data (32² slices, 4 filters)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, export_tolerance, history_epochs, predict_and_evaluate, run_experiment

SCRIPT = REPO / "experiments" / "paper1_u_resunet.py"
TINY = ["--epochs", "1", "--batch-size", "8", "--slice-start", "5", "--slice-count", "30", "--image-size", "32",
        "--filters", "4"]


def run_script(*args, cache, timeout=600):
    return run_experiment(SCRIPT, *args, cache=cache, timeout=timeout)


@pytest.mark.slow
def test_tiny_run_writes_the_whole_run_folder(synthetic_brats, tmp_path):
    out = tmp_path / "run"
    proc = run_script("--data-dir", str(synthetic_brats), "--out", str(out), *TINY, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SYNTHETIC" in proc.stdout  # the synthetic fixture is recognised even when passed as --data-dir

    for name in ("config.json", "split.json", "table.md", "results.json"):
        assert (out / name).is_file(), name
    for model in ("u_resunet", "unet2d"):
        for name in ("curves", "overlay"):
            png = out / "plots" / f"{model}_{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        sub = out / model
        assert (sub / "model.keras").is_file() and (sub / "saved_model" / "saved_model.pb").is_file()
        assert (sub / "checkpoints" / "state.json").is_file() and any((sub / "logs").iterdir())
        assert history_epochs(sub / "history.csv") == [0]

    split = json.loads((out / "split.json").read_text())
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 6 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    config = json.loads((out / "config.json").read_text())
    assert config["synthetic"] is True and config["train"]["epochs"] == 1 and config["data"]["slices"]["size"] == 32

    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True and set(results["models"]) == {"u_resunet", "unet2d"}
    for entry in results["models"].values():
        summary = entry["whole_volume"]["summary"]
        assert set(summary) == {"ET", "TC", "WT"} and summary["WT"]["dice"]["count"] == len(split["test"])
        per_case = [scores["WT"]["dice"] for scores in entry["whole_volume"]["per_case"].values()]
        assert summary["WT"]["dice"]["mean"] == pytest.approx(sum(per_case) / len(per_case), abs=1e-12)
        assert entry["export_max_abs_diff"]["saved_model"] < export_tolerance(entry)
        assert entry["epochs_run"] == 1 and entry["train_items_per_s"] > 0

    table = (out / "table.md").read_text()
    assert "Table 6.1" in table and "Table 6.2" in table and "Whole-volume" in table
    assert "97.91" in table  # the paper's epoch-5 value, in its paper column
    assert "| 5 | not run | 97.91 |" in table  # a 1-epoch run never shows a paper value as measured
    assert "synthetic" in table.lower()

    # the trained model predicts new patients with the pre-processing it recorded, and is scored
    spec = json.loads((out / "u_resunet" / "inference.json").read_text())
    assert spec["kind"] == "slices2d" and spec["slices"]["size"] == 32 and spec["synthetic"] is True
    pred, scores = tmp_path / "pred", tmp_path / "scores.csv"
    predicted = predict_and_evaluate(out / "u_resunet" / "saved_model", synthetic_brats, pred, scores)
    assert len(predicted) == 6 * 3 and all(r["status"] == "ok" for r in predicted)
    # table.md's all-slice row is what predict + evaluate give for the same test patients
    all_slices = results["models"]["u_resunet"]["whole_volume_all_slices"]["per_case"]
    dice = {(r["case"], r["region"]): float(r["dice"]) for r in predicted}
    assert set(all_slices) == set(split["test"])
    for case, regions in all_slices.items():
        for region in ("ET", "TC", "WT"):
            assert dice[(case, region)] == pytest.approx(regions[region]["dice"], abs=1e-3), (case, region)
    assert "all slices (as predict)" in table


@pytest.mark.slow
def test_unet_only_and_resume_continue_the_same_run(synthetic_brats, tmp_path):
    out = tmp_path / "run"
    first = run_script("--data-dir", str(synthetic_brats), "--out", str(out), "--model", "unet2d", *TINY,
                       cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-4000:]
    assert not (out / "u_resunet").exists()
    split_before = (out / "split.json").read_text()
    args = [a if a != "1" else "3" for a in TINY]  # --epochs 3
    resumed = run_script("--data-dir", str(synthetic_brats), "--resume", str(out), "--model", "unet2d", *args,
                         cache=tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert history_epochs(out / "unet2d" / "history.csv") == [0, 1, 2]
    assert (out / "split.json").read_text() == split_before  # the resumed run keeps its patients
    assert json.loads((out / "results.json").read_text())["models"]["unet2d"]["epochs_run"] == 3


def test_help_documents_the_contract_and_paper_defaults(tmp_path):
    proc = run_script("--help", cache=tmp_path)
    assert proc.returncode == 0
    for flag in ("--data-dir", "--out", "--epochs", "--batch-size", "--seed", "--strategy", "--resume", "--quick",
                 "--model", "--cascade-input"):
        assert flag in proc.stdout
    words = " ".join(proc.stdout.split())  # argparse wraps the help text
    assert "paper profile: 20 — Tables 6.1 / 6.2 go to epoch 20; quick profile: 6" in words
    assert "paper profile: 32 — paper §5.5; quick profile: 8" in words and "--config" in words


def test_bad_data_dir_is_one_line_error(tmp_path):
    proc = run_script("--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), cache=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # (TensorFlow may log its start-up lines before it)
    assert last.startswith("error:") and "missing" in last and "does not exist" in last
