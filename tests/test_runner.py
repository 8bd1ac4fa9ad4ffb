"""The experiment runner (brats_keras.runner) on a toy experiment, and typed configs (load / round trip)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import tensorflow as tf

from brats_keras.configs.base import (
    ExperimentConfig, ModelConfig, TrainConfig, apply_overrides, config_from_dict, config_to_dict, get_path,
    load_config, make_model,
)
from brats_keras.configs.paper1 import paper1_config
from brats_keras.configs.paper2 import paper2_config
from brats_keras.configs.paper3 import paper3_config
from brats_keras.configs.paper4 import paper4_config
from brats_keras.configs.paper5 import paper5_config
from brats_keras.data.synthetic import SYNTHETIC_MARKER
from brats_keras.models.registry import is_model, register_model
from brats_keras.runner import Experiment, Flag, ModelRun, build_parser, run

FACTORIES = (paper1_config, paper2_config, paper3_config, paper4_config, paper5_config)


def toy(input_shape=(4,), units=3, name="toy") -> keras.Model:
    """A registered builder: its settings (``units``) are typed from its signature like every paper model's."""
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")], name=name)


if not is_model("toy"):
    register_model("toy")(toy)


@dataclass
class ToyData:
    samples: int = 64
    features: int = 4


def toy_config(*, quick: bool = False) -> ExperimentConfig:
    return ExperimentConfig(
        name="toy", paper="none", data=ToyData(samples=16 if quick else 64),
        models={"toy": ModelConfig("toy", {"units": 3})},
        train=TrainConfig(epochs=2 if quick else 5, batch_size=4, learning_rate=1e-2), synthetic=quick)


class Toy(Experiment):
    """A dense network on random numbers, with every hook the runner calls recorded."""

    name = "toy"
    description = "toy experiment"
    factory = staticmethod(toy_config)
    sources_of_defaults = {"train.epochs": "Table 9"}
    flags = (
        Flag("--units", "models.toy.options.units", "hidden units", type=int),
        Flag("--learning-rate", "train.learning_rate", "learning rate", type=float),
        Flag("--variant", None, "which variant", choices=("a", "b"), default="a"),
        Flag("--twice", None, "train two models", kind="switch"),
    )

    def __init__(self, data_dir):
        self.data_dir, self.calls = data_dir, []

    def sources(self, ctx):
        self.calls.append("sources")
        return {"data": ctx.args.data_dir or self.data_dir}

    def prepare(self, ctx):
        self.calls.append("prepare")
        rng = np.random.default_rng(0)
        n, f = ctx.config.data.samples, ctx.config.data.features
        ctx.data.x = rng.random((n, f), dtype=np.float32)
        ctx.data.y = (ctx.data.x.sum(axis=1, keepdims=True) > f / 2).astype(np.float32)

    def models(self, ctx):
        keys = ("first", "second") if ctx.option["twice"] else ("first",)
        for key in keys:
            yield ModelRun(
                key=key, title=f"toy {key}", build=lambda: self.build(ctx),
                train=tf.data.Dataset.from_tensor_slices((ctx.data.x, ctx.data.y)).batch(ctx.batch()),
                sample=lambda: ctx.data.x[:2], saved_model=False, train_items=len(ctx.data.x),
                score=lambda model, history: {"loss_last": history["loss"][-1],
                                              "predicted": float(model.predict(ctx.data.x[:4], verbose=0).mean())},
                summary=lambda e: f"toy: {e['epochs_run']} epochs")

    def build(self, ctx):
        self.calls.append("build")
        c = ctx.config
        model = make_model(c.models["toy"], input_shape=(c.data.features,))
        model.compile(optimizer=keras.optimizers.Adam(c.train.learning_rate), loss="binary_crossentropy")
        return model

    def tables(self, results):
        return f"toy table: {sorted(results['models'])}, synthetic {results['synthetic']}"


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ of a run without --out lands here
    data = tmp_path / "toy_data"
    data.mkdir()
    (data / SYNTHETIC_MARKER).write_text("{}")
    return Toy(data)


def test_help_shows_both_profiles_from_the_factory(toy, capsys):
    with pytest.raises(SystemExit):
        build_parser(toy).parse_args(["--help"])
    words = " ".join(capsys.readouterr().out.split())
    assert "training epochs (paper profile: 5 — Table 9; quick profile: 2)" in words
    assert "hidden units (paper profile: 3)" in words  # equal in both profiles: shown once
    assert "which variant (default: a)" in words and "--config PATH" in words
    assert "paper profile: 42 — our choice; the papers do not state a seed" in words


def test_a_run_writes_config_results_table_and_exports(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(toy, ["--out", str(out), "--units", "5", "--twice"]) == 0
    assert toy.calls == ["sources", "prepare", "build", "build"]
    config = json.loads((out / "config.json").read_text())
    assert config["models"]["toy"]["options"] == {"units": 5} and config["train"]["epochs"] == 2  # quick: no --data-dir
    assert config["options"] == {"variant": "a", "twice": True} and config["synthetic"] is True
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True and results["data_dirs"] == {"data": str(tmp_path / "toy_data")}
    for key in ("first", "second"):
        entry = results["models"][key]
        assert entry["epochs_run"] == 2 and entry["params"] == 4 * 5 + 5 + 5 + 1
        assert entry["train_items_per_s"] > 0 and entry["export_max_abs_diff"]["keras"] < 1e-6
        assert (out / key / "model.keras").is_file() and (out / key / "inference.json").exists() is False
        assert [int(line.split(",")[0]) for line in (out / key / "history.csv").read_text().splitlines()[1:]] == [0, 1]
    assert (out / "table.md").read_text().startswith("**WARNING: SYNTHETIC DATA.")
    assert "toy table: ['first', 'second'], synthetic True" in (out / "table.md").read_text()
    printed = capsys.readouterr().out
    assert "=== toy first ===" in printed and printed.count("toy: 2 epochs") == 2


def test_a_refused_value_is_one_error_line_before_any_data(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(toy, ["--out", str(out), "--learning-rate", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: invalid setting: learning_rate must be > 0, got -1.0"
    assert toy.calls == [] and not out.exists()  # no data read, no run folder made
    with pytest.raises(SystemExit) as exit_info:  # a value argparse refuses: its own usage line, exit 2
        run(toy, ["--out", str(out), "--epochs", "0"])
    assert exit_info.value.code == 2 and "--epochs: must be a positive integer" in capsys.readouterr().err


def test_config_reproduces_a_run_and_flags_override_it(toy, tmp_path):
    first = tmp_path / "first"
    assert run(toy, ["--out", str(first), "--units", "6", "--variant", "b", "--seed", "7"]) == 0
    again = tmp_path / "again"
    assert run(toy, ["--config", str(first / "config.json"), "--out", str(again)]) == 0
    assert (again / "config.json").read_text() == (first / "config.json").read_text()
    predicted = [json.loads((p / "results.json").read_text())["models"]["first"]["predicted"] for p in (first, again)]
    assert predicted[0] == predicted[1]  # the same config and seed: the same trained network
    third = tmp_path / "third"
    assert run(toy, ["--config", str(first / "config.json"), "--out", str(third), "--units", "2"]) == 0
    config = json.loads((third / "config.json").read_text())
    assert config["models"]["toy"]["options"] == {"units": 2} and config["options"]["variant"] == "b"
    assert config["train"]["seed"] == 7


def test_a_yaml_config_sets_some_fields_and_bad_ones_are_named(toy, tmp_path, capsys):
    user = tmp_path / "mine.yaml"
    user.write_text("train:\n  epochs: 1\n  learning_rate: 0.05\noptions:\n  variant: b\n")
    out = tmp_path / "run"
    assert run(toy, ["--config", str(user), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["train"]["learning_rate"] == 0.05
    assert config["train"]["batch_size"] == 4 and config["options"]["variant"] == "b"
    user.write_text("train:\n  epoch: 1\n")
    assert run(toy, ["--config", str(user), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: invalid setting: {user}: config.train.epoch: no such field in TrainConfig")
    user.write_text("synthetic: false\n")  # a real-data run's config, without its data folder
    assert run(toy, ["--config", str(user), "--out", str(tmp_path / "bad")]) == 2
    assert "is the config of a run on real data (synthetic: false): give its data folder" in capsys.readouterr().err
    user.write_text("train: [1, 2\n")
    assert run(toy, ["--config", str(user), "--out", str(tmp_path / "bad")]) == 2
    assert f"{user}: not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_every_paper_config_round_trips_through_json(factory, tmp_path):
    for quick in (False, True):
        config = factory(quick=quick)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config_to_dict(config)))
        loaded = load_config(path, factory(quick=not quick))  # typed after the *other* profile
        assert loaded == config
        assert config_to_dict(loaded) == config_to_dict(config)


def test_overrides_reach_builder_options_and_paths_read_back():
    config = paper1_config(quick=True)
    changed = apply_overrides(config, {"models.*.options.filters": 8, "data.slices.size": 32, "train.epochs": None})
    assert get_path(changed, "models.*.options.filters") == 8 and get_path(changed, "data.slices.size") == 32
    assert [m.options.filters for m in changed.models.values()] == [8, 8]
    assert get_path(changed, "train.epochs") == config.train.epochs  # None: unset flag, kept
    assert get_path(config, "models.u_resunet.options.filters") == 32  # the original is not touched
    with pytest.raises(ValueError, match="no field 'epoch' in TrainConfig"):
        apply_overrides(config, {"train.epoch": 3})
    with pytest.raises(ValueError, match="config.data.slices: size: must be positive, got 0"):
        config_from_dict(config, {"data": {"slices": {"size": 0}}})


def test_the_help_text_defaults_to_the_scripts_docstring():
    class Bare(Experiment):
        name = "bare"

    assert Bare.description == __doc__ and Toy.description == "toy experiment"


@pytest.mark.parametrize("factory, moved, old", [
    # the "model" / moved fields of config.json files written before per-model settings (quick profiles)
    (paper1_config, "paper1", {"model": {"name": "u_resunet", "options": {"num_classes": 4, "filters": 32,
                                                                          "norm_momentum": 0.9}},
                               "options": {"model": "both", "cascade_input": "features"}}),
    (paper4_config, "paper4", {"model": {"name": "lstm_effunet", "options": {"num_classes": 2, "filters": 24,
                                                                             "norm_momentum": 0.9}},
                               "train": {"enhancer": {"units": 16}}}),
    (paper5_config, "paper5", {"model": {"name": "efficientnet_b1_classifier",
                                         "options": {"dense": 512, "dropout": 0.4, "norm_momentum": 0.9}},
                               "train": {"segment": {"model": {"name": "residual_unet2d_binary",
                                                               "options": {"filters": 64, "norm_momentum": 0.9}}}}}),
])
def test_a_config_json_from_before_per_model_settings_still_reproduces_its_run(factory, moved, old, tmp_path):
    import importlib

    paths = importlib.import_module(f"brats_keras.configs.{moved}").MOVED_PATHS
    quick = factory(quick=True)
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = load_config(tmp_path / "config.json", factory(quick=False), paths)
    assert loaded.models == quick.models  # the old shared options, on every model that has them
    # a setting that differed reaches its model: the old options moved to where they are now
    changed = json.loads(json.dumps(old))
    changed["model"]["options"]["norm_momentum"] = 0.5
    if moved == "paper1":
        changed["options"]["cascade_input"] = "probabilities"
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    again = load_config(tmp_path / "changed.json", factory(quick=False), paths)
    if moved == "paper1":
        assert again.models["u_resunet"].options.cascade_input == "probabilities"
        assert again.models["u_resunet"].options.norm_momentum == 0.5 and "cascade_input" not in again.options
    if moved == "paper4":
        assert {m.options.norm_momentum for m in again.models.values()} == {0.5}
        assert again.models["proposed"].options.enhancer_units == 16
    if moved == "paper5":
        assert again.models["classifier"].options.norm_momentum == 0.5
        assert again.models["segmenter"].options.norm_momentum == 0.9  # it had its own model section


def test_precision_xla_and_batch_norm_flags_are_resolved_recorded_and_restored(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(toy, ["--out", str(out), "--precision", "mixed_bfloat16", "--jit-compile", "off", "--sync-batchnorm",
                     "--scale-lr"]) == 0
    assert keras.config.dtype_policy().name == "float32"  # the run's policy does not leak into the caller
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["precision"], train["jit_compile"], train["sync_batchnorm"], train["scale_lr"]) == (
        "mixed_bfloat16", False, True, True)
    results = json.loads((out / "results.json").read_text())
    assert results["precision"] == "mixed_bfloat16" and results["precision_requested"] == "mixed_bfloat16"
    assert results["jit_compile"] is False and results["replicas"] == 1 and results["global_batch"] == 4
    assert results["sync_batchnorm"] is True and results["learning_rate"] == pytest.approx(1e-2)  # × 1 replica
    assert results["models"]["first"]["precision"] == "mixed_bfloat16"
    assert "precision: mixed_bfloat16 (asked for: --precision) · XLA off · OneDeviceStrategy × 1, global batch 4" in (
        capsys.readouterr().out)
    assert run(toy, ["--out", str(tmp_path / "f32"), "--precision", "float32"]) == 0
    assert json.loads((tmp_path / "f32" / "results.json").read_text())["models"]["first"]["precision"] == "float32"


def test_float16_on_a_cpu_is_refused_before_any_data(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(toy, ["--out", str(out), "--precision", "mixed_float16"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --precision: mixed_float16 needs a GPU")
    assert toy.calls == [] and not out.exists()
