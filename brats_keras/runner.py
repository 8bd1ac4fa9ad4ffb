"""The experiment runner: what every ``experiments/paperN_*.py`` shares, written once.

A paper's script declares an :class:`Experiment` — its config factory, its own flags, its data and
its models — and hands it to :func:`run`::

    class Paper1(Experiment):
        name = EXPERIMENT
        factory = staticmethod(paper1_config)          # paper1_config(quick=...) -> ExperimentConfig
        flags = (Flag("--image-size", "data.slices.size", "slice size after resizing"), ...)

        def prepare(self, ctx): ...                    # split, caches, datasets (on ctx.data)
        def models(self, ctx): yield ModelRun(...)     # what to train, how to score it
        def tables(self, results, synthetic): ...      # table.md

    if __name__ == "__main__":
        sys.exit(run(Paper1()))

The runner owns everything else, in this order:

1. **Command line.** The shared flags (``--data-dir --out --epochs --batch-size --seed --strategy
   --resume --quick --config``) and the experiment's :class:`Flag` s, each bound to a dotted config
   path, so ``--help`` prints the paper profile's and the quick profile's values read from the config
   factory itself (no default is written twice). Every argument is checked, and the config built and
   validated, before any data are read: a bad value is one ``error:`` line and exit 2.
2. **Config.** ``factory(quick=...)`` or ``--config PATH`` (a run's ``config.json`` or a user's
   JSON / YAML, :func:`~brats_keras.configs.base.load_config`), then the flags given on the command
   line (one override path, :func:`~brats_keras.configs.base.apply_overrides`). The experiment's
   non-hyper-parameter choices (``--model``, ...) are kept in ``config.options``.
3. **Strategy, run folder and seed.** The strategy (``--strategy``); ``--out`` or
   ``runs/<experiment>/<UTC timestamp>``, ``--resume``; every hook below writes to ``ctx.run``, the
   run folder itself, or on a non-chief worker of a multi-worker cluster a temporary folder removed at
   the end (:func:`~brats_keras.training.worker_run_dir`, docs/distributed.md);
   ``keras.utils.set_random_seed(config.train.seed)``.
4. **Data.** :meth:`Experiment.sources` (the data folders, generated synthetic sets when none is given)
   → ``config.json`` (marked synthetic or not, with the banner) → :meth:`Experiment.prepare` (the
   global batch: ``ctx.batch()``).
5. **Models.** For each :class:`ModelRun` of :meth:`Experiment.models`: ``training.fit`` (resumable, in
   the strategy's scope), then on a single-process copy of the model
   (:func:`~brats_keras.training.single_process_model`) the paper's ``score``, the exports
   (``model.keras``, ``saved_model/``, ``inference.json``) with their reload check, timing and
   parameter count into ``results.json``.
6. **Report.** :meth:`Experiment.figures`, ``table.md`` (:meth:`Experiment.tables`) and
   ``results.json``, written atomically, and the synthetic warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import keras
import numpy as np

from brats_keras.cli import positive_int
from brats_keras.configs.base import (
    JIT_COMPILE_CHOICES, ExperimentConfig, TrainConfig, apply_overrides, effective_learning_rate, get_path,
    load_config, save_config,
)
from brats_keras.data.brats import CaseFiles, load_case
from brats_keras.data.layout import to_class_indices
from brats_keras.data.slices2d import SliceSettings
from brats_keras.data.splits import load_split, save_split, split_cases
from brats_keras.data.synthetic import is_synthetic_dataset
from brats_keras.errors import BratsKerasError, cli_errors
from brats_keras.evaluation import aggregate, evaluate_case
from brats_keras.export import export_checked
from brats_keras.inference import InferenceSpec, predict_volume_2d, slice_range
from brats_keras.io import atomic_write_json
from brats_keras.models.common import set_batch_norm_synchronized
from brats_keras.precision import (
    PRECISIONS, model_precision, precision_scope, resolve_jit_compile, resolve_precision, xla_unavailable,
)
from brats_keras.reporting import SYNTHETIC_WARNING, plot_prediction_overlay, write_markdown
from brats_keras.training import (
    STRATEGIES, RunDir, cluster_workers, fit, global_batch_size, select_strategy, single_process_model, worker_run_dir,
    writes_run,
)

SHARED_SOURCES = {"train.seed": "our choice; the papers do not state a seed"}


# --------------------------------------------------------------------------------------------
# What a paper declares
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """One command-line flag of an experiment.

    ``path`` is the dotted config field the flag sets (``"data.slices.size"``,
    ``"models.u_resunet.options.cascade_input"``; ``"models.*.options.filters"`` sets every model that
    has the setting); ``--help`` then shows the field's paper-profile and quick-profile
    values from the factory, and an unset flag keeps the config's value. With ``path=None`` the flag
    is an experiment option (which models to run, ...): its value is kept in ``config.options[dest]``
    with ``default`` when unset. ``convert`` maps the parsed value to the config value (``"on"`` →
    ``True``); ``kind="switch"`` is a ``store_true`` flag that sets ``value_if_set`` at ``path``.
    """

    name: str
    path: str | None
    help: str
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    convert: Callable[[Any], Any] | None = None
    default: Any = None
    nargs: str | None = None
    kind: str = "value"
    value_if_set: Any = True

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass
class ModelRun:
    """One model to train, score and export (a row of the paper's table).

    ``build`` returns a compiled model and is called inside the strategy's scope (or not at all when
    ``--resume`` finds a checkpoint). ``score(model, history)`` returns the paper's measurements of
    the trained model, merged into its ``results.json`` entry. ``sample()`` gives the batch the
    exports are checked on; ``inference`` is the pre-processing recorded with them (``predict``).
    """

    key: str
    """Sub-folder of the run and key under ``results["models"]``."""
    title: str
    build: Callable[[], keras.Model]
    train: Any
    sample: Callable[[], np.ndarray]
    validation: Any = None
    epochs: int | None = None
    """Training epochs (default: ``config.train.epochs``)."""
    callbacks: list = field(default_factory=list)
    score: Callable[[keras.Model, dict], dict] | None = None
    inference: InferenceSpec | None = None
    saved_model: bool = True
    summary: Callable[[dict], str] | None = None
    """The one line printed after the model is done, from its results entry."""
    train_items: int | None = None
    """Training samples per epoch; with it, ``train_items_per_s`` is recorded (not on resume)."""
    clear_session: bool = False
    """``keras.backend.clear_session()`` after the model (frees a large 3D model's graph)."""


class Experiment:
    """The hooks a paper's experiment supplies; :func:`run` calls them in order (module docstring)."""

    name: str = ""
    """The experiment (module) name: ``runs/<name>/``, the config's ``name``."""
    description: str | None = None
    """``--help`` text; by default the docstring of the module that defines the experiment (the script's)."""
    factory: Callable[..., ExperimentConfig]
    """``factory(quick=bool)`` → the paper profile or the quick synthetic profile."""
    flags: tuple[Flag, ...] = ()
    sources_of_defaults: dict[str, str] = {}
    """Where a config value comes from in the paper (``"train.epochs": "Table 1"``), for ``--help``."""
    moved_paths: dict[str, str] = {}
    """Config fields that moved, old dotted path → new, so ``--config`` of an older ``config.json`` reproduces
    its run (:func:`~brats_keras.configs.base.upgrade_config_data`)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "description" not in cls.__dict__:
            module = sys.modules.get(cls.__module__)
            cls.description = getattr(module, "__doc__", None)

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """Run this experiment with these arguments (``sys.argv[1:]`` by default): :func:`run`'s exit status.
        A script ends with ``main = PaperN.main`` and ``sys.exit(main())``."""
        return run(cls(), argv)

    def quick(self, args: argparse.Namespace) -> bool:
        """Whether this is the synthetic quick profile: ``--quick``, or no data folder given."""
        return bool(args.quick or args.data_dir is None)

    def check(self, args: argparse.Namespace, config: ExperimentConfig) -> None:
        """Argument checks beyond the flags' types, before any data are read (raise ``BratsKerasError``)."""

    def sources(self, ctx: "Context") -> dict[str, Path]:
        """The data folders by role (``{"data": ...}``): ``--data-dir``, or a generated synthetic set."""
        raise NotImplementedError(f"{type(self).__name__} must define sources()")

    def prepare(self, ctx: "Context") -> None:
        """Split, caches, datasets: whatever :meth:`models` needs, kept on ``ctx.data``."""

    def models(self, ctx: "Context") -> Iterable[ModelRun]:
        """The models to train, in order (a generator may prepare each one's data lazily)."""
        raise NotImplementedError(f"{type(self).__name__} must define models()")

    def figures(self, ctx: "Context") -> None:
        """Figures drawn after every model is done (``ctx.run.plots``)."""

    def tables(self, results: dict) -> str:
        """``table.md``: the paper's tables beside the measured values (the runner puts the synthetic-data
        warning above them when ``results["synthetic"]``)."""
        raise NotImplementedError(f"{type(self).__name__} must define tables()")


@dataclass
class Context:
    """What the hooks see: the arguments, the run, the config and the shared state of this run."""

    args: argparse.Namespace
    run: RunDir
    config: ExperimentConfig
    resume: bool
    quick: bool
    dirs: dict[str, Path] = field(default_factory=dict)
    synthetic: bool = False
    strategy: Any = None
    precision: Any = None
    """The resolved :class:`~brats_keras.precision.Precision` the models are built in."""
    results: dict = field(default_factory=dict)
    data: SimpleNamespace = field(default_factory=SimpleNamespace)
    """The experiment's own prepared data (split, indices, datasets ...)."""

    @property
    def option(self) -> dict[str, Any]:
        """The experiment options (``config.options``: the values of its ``path=None`` flags)."""
        return self.config.options

    def batch(self, per_replica: int | None = None) -> int:
        """The global batch for the pipelines: per-replica (default ``config.train.batch_size``) × replicas."""
        return global_batch_size(per_replica or self.config.train.batch_size, self.strategy)

    def patient_split(self, case_ids, *, test_fraction: float, val_fraction: float, strata=None,
                      **meta) -> dict[str, list[str]]:
        """The run's patient split: the saved ``split.json`` when resuming, else a new one seeded by
        ``config.train.seed`` (stratified by ``strata``) and written there with ``meta``."""
        return patient_split(self.run, self.resume, case_ids, test_fraction=test_fraction,
                             val_fraction=val_fraction, seed=self.config.train.seed, strata=strata, **meta)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _value_text(value: Any) -> str:
    if isinstance(value, dict):  # a "*" path whose models differ: "unet 24, effunet 32"
        return ", ".join(f"{key} {_value_text(v)}" for key, v in value.items())
    if isinstance(value, bool) or value is None:
        return {True: "on", False: "off", None: "none"}[value]
    if isinstance(value, tuple):  # a crop ((56, 184), ...) reads as its flag is written: 56:184,...
        return ",".join(":".join(map(str, v)) if isinstance(v, tuple) else _value_text(v) for v in value)
    return str(value)


def _profile_help(experiment: Experiment, path: str, paper: ExperimentConfig, quick: ExperimentConfig) -> str:
    """``(paper: 20 — Tables 6.1 / 6.2; quick profile: 6)`` for one config path."""
    paper_value, quick_value = get_path(paper, path), get_path(quick, path)
    source = {**SHARED_SOURCES, **experiment.sources_of_defaults}.get(path)
    text = f"paper profile: {_value_text(paper_value)}" + (f" — {source}" if source else "")
    if quick_value != paper_value:
        text += f"; quick profile: {_value_text(quick_value)}"
    return f"({text})"


def build_parser(experiment: Experiment) -> argparse.ArgumentParser:
    """The experiment's parser: the shared flags and its own, with defaults shown from the factory."""
    paper, quick = experiment.factory(quick=False), experiment.factory(quick=True)

    def help_of(path: str, text: str) -> str:
        return f"{text} {_profile_help(experiment, path, paper, quick)}".replace("%", "%%")

    p = argparse.ArgumentParser(prog=experiment.name, description=experiment.description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder of the real data set (see the experiment's docs page); without it "
                   "a synthetic set is generated once and the quick profile runs")
    p.add_argument("--out", help=f"run folder (default: runs/{experiment.name}/<UTC timestamp>)")
    p.add_argument("--config", metavar="PATH", help="start from this config (a run's config.json, or a JSON / YAML "
                   "file of the same fields) instead of the profile; flags given as well override it")
    p.add_argument("--epochs", type=positive_int, help=help_of("train.epochs", "training epochs"))
    p.add_argument("--batch-size", type=positive_int,
                   help=help_of("train.batch_size", "per-replica batch size; the pipeline uses per-replica × replicas"))
    p.add_argument("--seed", type=int, help=help_of("train.seed", "seed for splits, shuffling and weights"))
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="tf.distribute strategy: one device, mirrored (local GPUs), multiworker (TF_CONFIG); "
                   "auto picks from the hardware (default)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=help_of("train.precision", "dtype policy: auto picks mixed_bfloat16 on GPUs of compute "
                                "capability >= 8 and CPUs with native bfloat16, mixed_float16 on older GPUs, else "
                                "float32; heads, losses and metrics stay float32"))
    p.add_argument("--jit-compile", choices=tuple(JIT_COMPILE_CHOICES), type=str,
                   help=help_of("train.jit_compile", "XLA for training: auto = on with a GPU or TPU (inside "
                                "distribution strategies too), off on a CPU"))
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="batch-norm statistics over the global batch of all replicas (TensorFlow strategies; "
                   "under JAX data parallelism they are global already)")
    p.add_argument("--scale-lr", action="store_true",
                   help="multiply the learning rate by the replicas in sync (linear scaling rule; docs/distributed.md)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint: the given run folder, --out, or the "
                   "latest run of this experiment")
    p.add_argument("--quick", action="store_true",
                   help="small synthetic profile (few cases, slices and epochs); default without --data-dir")
    for flag in experiment.flags:
        kwargs: dict[str, Any] = {"dest": flag.dest}
        text = flag.help if flag.path is None else help_of(flag.path, flag.help)
        if flag.path is None and flag.default is not None and flag.kind == "value":
            text += f" (default: {_value_text(tuple(flag.default) if isinstance(flag.default, list) else flag.default)})"
        if flag.kind == "switch":
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=flag.type, choices=flag.choices, nargs=flag.nargs)
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
        p.add_argument(flag.name, help=text, **kwargs)
    return p


SHARED_FLAG_PATHS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "seed": "train.seed"}
RUNTIME_FLAG_FIELDS = {"strategy": "strategy", "precision": "precision", "jit_compile": "jit_compile",
                       "sync_batchnorm": "sync_batchnorm", "scale_lr": "scale_lr"}
"""Shared flags of how the hardware runs the training (flag dest → :class:`TrainConfig` field): set in
``train`` and in every training config nested in it (paper 5's ``train.segment``)."""
RUN_WIDE_FIELDS = ("strategy", "precision")
"""Fields one run has once: a nested training config must agree with ``train``."""


def train_config_paths(config: ExperimentConfig) -> list[str]:
    """``["train", "train.segment", ...]``: the experiment's training config and those nested in it."""
    paths, todo = [], [("train", config.train)]
    while todo:
        path, train = todo.pop(0)
        paths.append(path)
        todo += [(f"{path}.{f.name}", getattr(train, f.name)) for f in dataclasses.fields(train)
                 if isinstance(getattr(train, f.name), TrainConfig)]
    return paths


def _runtime_overrides(config: ExperimentConfig, args: argparse.Namespace) -> dict[str, Any]:
    values = {field: getattr(args, dest) for dest, field in RUNTIME_FLAG_FIELDS.items()}
    values["jit_compile"] = JIT_COMPILE_CHOICES.get(values["jit_compile"]) if values["jit_compile"] else None
    values.update({k: True if values[k] else None for k in ("sync_batchnorm", "scale_lr")})
    return {f"{path}.{field}": value for path in train_config_paths(config) for field, value in values.items()}


def check_run_wide(config: ExperimentConfig) -> None:
    """Raise ``ValueError`` when a nested training config asks for another strategy or precision."""
    for path in train_config_paths(config)[1:]:
        for name in RUN_WIDE_FIELDS:
            value, top = get_path(config, f"{path}.{name}"), getattr(config.train, name)
            if value != top:
                raise ValueError(f"{path}.{name} is {value!r} but train.{name} is {top!r}: a run has one {name}")


def resolve_config(experiment: Experiment, args: argparse.Namespace, quick: bool) -> ExperimentConfig:
    """The run's config: ``--config`` or the profile, then every flag given on the command line.

    Raises:
        BratsKerasError: a flag or config value the config refuses, naming it.
    """
    template = experiment.factory(quick=quick)
    try:
        config = load_config(args.config, template, experiment.moved_paths) if args.config else template
        overrides = {path: getattr(args, dest) for dest, path in SHARED_FLAG_PATHS.items()}
        overrides.update(_runtime_overrides(config, args))
        options = dict(config.options)
        for flag in experiment.flags:
            value = getattr(args, flag.dest)
            if flag.kind == "switch":
                value = flag.value_if_set if value else None
            if value is not None and flag.convert is not None:
                value = flag.convert(value)
            if flag.path is None:
                options[flag.dest] = value if value is not None else options.get(flag.dest, flag.default)
            else:
                overrides[flag.path] = value
        config = apply_overrides(config, {**overrides, "name": experiment.name, "options": options})
        check_run_wide(config)
    except ValueError as exc:
        raise BratsKerasError(f"invalid setting: {exc}") from None
    return config


def resolve_run(args: argparse.Namespace, experiment: str, *, root: str = "runs", make: bool = True) -> RunDir:
    """The run folder for these arguments: the one to resume, ``--out``, or a new timestamped one
    (made unless ``make=False``: a worker that does not write the run)."""
    if args.resume is not None:
        if args.resume != "latest":
            return RunDir.create(args.resume, experiment, make=make)
        if args.out is not None:
            return RunDir.create(args.out, experiment, make=make)
        return RunDir.latest(experiment, root=root)
    return RunDir.create(args.out, experiment, root=root, make=make)


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


def record_config(run: RunDir, config: ExperimentConfig, synthetic: bool) -> ExperimentConfig:
    """Mark ``config`` synthetic or not, save it as the run's ``config.json`` and, for synthetic
    data, print the banner every output of such a run carries. Returns the updated config."""
    config = apply_overrides(config, {"synthetic": synthetic})
    save_config(run.config, config)
    if synthetic:
        print(f"\n*** {SYNTHETIC_WARNING} ***\n", flush=True)
    return config


def data_provenance(synthetic: bool) -> str:
    """The ``data_provenance`` entry of ``results.json``."""
    return "synthetic (brats_keras.data.synthetic)" if synthetic else "real data (--data-dir)"


def patient_split(run: RunDir, resume: bool, case_ids, *, test_fraction: float, val_fraction: float, seed: int,
                  strata=None, **meta) -> dict[str, list[str]]:
    """The run's patient split: the saved ``split.json`` when resuming, else a new seeded split
    (stratified by ``strata``, see :func:`~brats_keras.data.splits.split_cases`) written there with
    ``meta`` (data folder, skipped cases, ...)."""
    if resume and run.split.is_file():
        return load_split(run.split)
    split = split_cases(list(case_ids), test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                        strata=strata)
    save_split(run.split, split, seed=seed, unit="patient", **meta)
    return split


def finish_run(run: RunDir, table_markdown: str, results: dict, synthetic: bool) -> None:
    """Write ``table.md`` (under the synthetic-data warning when ``synthetic``) and ``results.json``
    (atomically) and say where they are."""
    write_markdown(run.table, f"{SYNTHETIC_WARNING}\n\n{table_markdown}" if synthetic else table_markdown)
    atomic_write_json(run.results, results)
    print(f"\nrun folder: {run.path}\n  table: {run.table}\n  results: {run.results}", flush=True)
    if synthetic:
        print(f"*** {SYNTHETIC_WARNING} ***", flush=True)


def evaluate_slice_model(predict, files: list[CaseFiles], slices: SliceSettings, *, eval_slices: str,
                         skip_empty: bool = False, overlay_png=None, title: str = "", synthetic: bool = False) -> dict:
    """Dice / HD95 / sensitivity / specificity per BraTS region of a 2D slice model on whole test
    volumes (papers 1 and 3), and, with ``overlay_png``, one overlay PNG of the first case's slice with
    the most tumour.

    ``predict`` maps a batch of prepared slices to class probabilities (``model.predict_on_batch``);
    ``files`` are the test cases, read with ``slices.modalities``; ``eval_slices`` is ``window`` or
    ``all`` (:func:`brats_keras.inference.slice_range`); ``skip_empty`` labels slices without a brain
    voxel background without running the model, as ``predict`` does by default
    (:func:`brats_keras.inference.predict_volume_2d`). Returns ``{"per_case", "summary"}``.
    """
    per_case = {}
    overlay_done = overlay_png is None
    for case_files in files:
        case = load_case(case_files, slices.modalities)
        pred = predict_volume_2d(predict, case, slices, slices=eval_slices, skip_empty=skip_empty)
        per_case[case.case_id] = evaluate_case(pred, case.label, case.spacing, case=case.case_id)
        window = list(slice_range(slices, case.label.shape[2], eval_slices))
        tumour_area = (case.label[:, :, window] > 0).sum(axis=(0, 1))
        if not overlay_done and tumour_area.any():
            k = window[int(np.argmax(tumour_area))]
            truth, pred_k = to_class_indices(case.label[:, :, k]), to_class_indices(pred[:, :, k])
            plot_prediction_overlay(np.rot90(case.image[:, :, k, 0]), np.rot90(truth), np.rot90(pred_k),
                                    overlay_png, num_classes=4, synthetic=synthetic,
                                    title=f"{title} — {case.case_id}, axial slice {k}")
            overlay_done = True
    return {"per_case": per_case, "summary": aggregate(per_case) if per_case else {}}


def slice_flags() -> tuple[Flag, ...]:
    """The flags of the 2D slice experiments (papers 1 and 3)."""
    return (
        Flag("--slice-start", "data.slices.start", "first axial slice", type=int),
        Flag("--slice-count", "data.slices.count", "axial slices per case", type=int),
        Flag("--image-size", "data.slices.size", "slice size after resizing", type=int),
        Flag("--filters", "models.*.options.filters", "base filters of the networks", type=int),
        Flag("--max-eval-cases", "data.max_eval_cases", "evaluate at most this many test patients on whole volumes "
             "(0: all)", type=int),
    )


def window_text(slices: SliceSettings, eval_slices: str) -> str:
    """How a 2D model's whole-volume scores were made, for a table: ``"training window (slices 22–121)"``
    or ``"all slices"``."""
    if eval_slices == "all":
        return "all slices"
    return f"training window (slices {slices.start}–{slices.stop - 1})"


def train_model(ctx: Context, spec: ModelRun) -> dict:
    """Train (or resume) one model, score it, export it: its ``results.json`` entry."""
    print(f"\n=== {spec.title} ===", flush=True)
    model_run = RunDir.create(ctx.run.path / spec.key, ctx.config.name)
    started = time.perf_counter()
    model, history = fit(spec.build, spec.train, run=model_run, epochs=spec.epochs or ctx.config.train.epochs,
                         validation_data=spec.validation, callbacks=spec.callbacks, strategy=ctx.strategy,
                         resume=ctx.resume)
    seconds = time.perf_counter() - started
    trained_with_xla = bool(model.jit_compile)
    model = single_process_model(model, ctx.strategy)  # scores and exports as one process would
    epochs_run = len(history.get("loss", []))
    entry: dict[str, Any] = {"epochs_run": epochs_run, "train_seconds_this_session": round(seconds, 1),
                             "params": int(model.count_params()), "precision": model_precision(model),
                             "jit_compile": trained_with_xla}
    if spec.train_items is not None:
        entry["train_items_per_s"] = None if ctx.resume else round(spec.train_items * max(epochs_run, 1) / seconds, 2)
    if spec.score is not None:
        entry.update(spec.score(model, history))
    set_batch_norm_synchronized(model, False)  # a single-device concept at inference; .keras loads on any backend
    inference = None if spec.inference is None else dataclasses.replace(spec.inference, precision=entry["precision"])
    entry.update(export_checked(model, model_run.model_keras, model_run.saved_model if spec.saved_model else None,
                                spec.sample(), inference))
    if spec.summary is not None:
        print(spec.summary(entry), flush=True)
    if spec.clear_session:
        keras.backend.clear_session()
    return entry


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(experiment: Experiment, argv: Sequence[str] | None = None) -> int:
    """Run ``experiment`` with these command-line arguments (``sys.argv[1:]`` by default): exit status
    0, or 2 with one ``error:`` line for bad arguments or data (:func:`~brats_keras.errors.cli_errors`)."""
    return _run(experiment, argv)


@cli_errors
def _run(experiment: Experiment, argv: Sequence[str] | None) -> int:
    args = build_parser(experiment).parse_args(argv)
    quick = experiment.quick(args)
    config = resolve_config(experiment, args, quick)
    if args.config and quick and not config.synthetic:
        raise BratsKerasError(f"--config {args.config} is the config of a run on real data (synthetic: false): "
                              "give its data folder (--data-dir), or set synthetic: true for the synthetic set")
    experiment.check(args, config)
    # the strategy first: a multi-worker one must be made before TensorFlow runs any op (the precision's
    # CPU measurement does) — "Collective ops must be configured at program startup"
    strategy = select_strategy(config.train.strategy)
    try:
        precision = resolve_precision(config.train.precision, workers=cluster_workers(strategy))
    except ValueError as exc:
        raise BratsKerasError(f"--precision: {exc}") from None
    run_dir = resolve_run(args, experiment.name, make=writes_run(strategy))
    with worker_run_dir(run_dir, strategy, resume=args.resume is not None) as own:
        ctx = Context(args=args, run=own, config=config, resume=args.resume is not None, quick=quick,
                      strategy=strategy, precision=precision)
        keras.utils.set_random_seed(config.train.seed)

        ctx.dirs = {role: Path(path) for role, path in experiment.sources(ctx).items()}
        ctx.synthetic = any(is_synthetic_dataset(path) for path in ctx.dirs.values())
        ctx.config = record_config(own, ctx.config, ctx.synthetic)
        ctx.results = {"experiment": experiment.name, "synthetic": ctx.synthetic,
                       "data_dirs": {role: str(path) for role, path in ctx.dirs.items()},
                       "data_provenance": data_provenance(ctx.synthetic), **hardware_record(ctx), "models": {}}
        print(hardware_line(ctx), flush=True)
        with precision_scope(ctx.precision.policy):
            experiment.prepare(ctx)
            for spec in experiment.models(ctx):
                ctx.results["models"][spec.key] = train_model(ctx, spec)
            experiment.figures(ctx)
        finish_run(own, experiment.tables(ctx.results), ctx.results, ctx.synthetic)
    return 0


def hardware_record(ctx: Context) -> dict:
    """How this run uses the hardware, for ``results.json``: the resolved precision (and why), XLA as
    the config resolves it, the strategy, replicas and global batch, batch-norm synchronisation and the
    learning rate in effect (each model's entry records what its compiled model really used)."""
    train, replicas = ctx.config.train, int(ctx.strategy.num_replicas_in_sync)
    return {**ctx.precision.record(), "jit_compile": resolve_jit_compile(train.jit_compile, replicas=replicas),
            "strategy": type(ctx.strategy).__name__, "replicas": replicas, "global_batch": ctx.batch(),
            "sync_batchnorm": train.sync_batchnorm, "learning_rate": effective_learning_rate(train, replicas)}


def hardware_line(ctx: Context) -> str:
    """``precision: mixed_bfloat16 (auto: ...) · XLA off · OneDeviceStrategy × 1, global batch 16``."""
    record = hardware_record(ctx)
    xla = "on" if record["jit_compile"] else "off"
    if ctx.config.train.jit_compile is True and not record["jit_compile"]:
        xla += f" although asked for ({xla_unavailable(record['replicas'])})"
    text = (f"{ctx.precision.line()} · XLA {xla} · {record['strategy']} × {record['replicas']}, "
            f"global batch {record['global_batch']}")
    if ctx.config.train.scale_lr:
        text += f" · learning rate {record['learning_rate']:g} (× {record['replicas']} replicas, --scale-lr)"
    return text + (" · synchronised batch norm" if ctx.config.train.sync_batchnorm else "")
