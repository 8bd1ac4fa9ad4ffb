"""Building blocks of every experiment's configuration (TF Model Garden style).

An experiment is ``ExperimentConfig(name, paper, data, models, train)``: ``data`` is the paper's own
data dataclass (e.g. :class:`brats_keras.data.slices2d.SliceSettings` plus split fractions),
``models`` maps each model the experiment trains to a registered builder and its typed settings
(:class:`ModelConfig`), ``train`` holds the optimiser, loss, metrics, epochs and batch size. Each paper's
factory sets the numbers with a comment naming the table or section
they come from; the resolved configuration is saved as ``config.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import yaml

from brats_keras.io import atomic_write_json
from brats_keras.losses import KERAS_LOSSES, LOSSES
from brats_keras.metrics import METRICS
from brats_keras.models import create_model
from brats_keras.models.common import set_batch_norm_synchronized
from brats_keras.models.registry import ModelSettings, RegistryError, model_settings
from brats_keras.precision import check_precision, replicas_in_sync, resolve_jit_compile

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
JIT_COMPILE_CHOICES = {"auto": "auto", "on": True, "off": False}
"""Command-line spellings of :attr:`TrainConfig.jit_compile`."""


@dataclass
class ModelConfig:
    """A registered model and its settings: ``options`` is the builder's typed settings dataclass
    (:func:`brats_keras.models.registry.settings_class`: one field per builder argument, the builder's
    defaults, checked types). A mapping of some fields may be given and becomes those settings, so
    ``ModelConfig("u_resunet", {"filters": 16})`` holds every setting of ``u_resunet`` with 16 filters.
    :func:`make_model` builds it."""

    name: str
    options: ModelSettings | dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        try:  # an unknown model or setting, or a value of the wrong type, fails when the config is made
            self.options = model_settings(self.name, self.options)
        except ValueError as exc:
            raise ValueError(f"model {self.name!r}: {exc}") from None


def make_model(model: ModelConfig, **build_args) -> keras.Model:
    """Build ``model`` with its settings and the arguments only the experiment knows when it builds
    (``input_shape`` from its data, resolved encoder ``weights``:
    :data:`~brats_keras.models.registry.BUILD_ARGUMENTS`)."""
    return create_model(model.name, **model.options.kwargs(), **build_args)


@dataclass
class LossConfig:
    """A loss by name with its keyword arguments: one of :data:`brats_keras.losses.LOSSES`
    (``"dice_focal"``, ...) or a Keras name (``"categorical_crossentropy"``); :func:`make_loss` builds it."""

    name: str = "categorical_crossentropy"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in (*LOSSES, *KERAS_LOSSES):
            raise ValueError(f"loss: unknown name {self.name!r}; known: {', '.join(sorted([*LOSSES, *KERAS_LOSSES]))}")


@dataclass
class MetricConfig:
    """An in-graph metric by name with its keyword arguments: one of :data:`brats_keras.metrics.METRICS`
    or ``"accuracy"``; :func:`make_metrics` builds them. The metric's ``name`` option is its key in the
    logs and ``history.csv`` (docs/engine.md, "Names of the measured quantities")."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in ("accuracy", *METRICS):
            raise ValueError(f"metric: unknown name {self.name!r}; known: accuracy, {', '.join(sorted(METRICS))}")


@dataclass
class TrainConfig:
    """Optimisation settings shared by all experiments."""

    epochs: int
    """Training epochs."""
    batch_size: int
    """Per-replica batch size; the pipeline uses per-replica × replicas."""
    optimizer: str = "adam"
    """One of ``adam``, ``adamw``, ``rmsprop``, ``sgd``."""
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or Keras' ``weight_decay`` for the others; 0 disables."""
    seed: int = 42
    strategy: str = "auto"
    jit_compile: bool | str = "auto"
    """XLA compilation of the train step: ``"auto"`` is the project's rule
    (:func:`brats_keras.precision.resolve_jit_compile`: on with a GPU or TPU, inside a distribution
    strategy too, where Keras' own ``"auto"`` would turn it off; off on a CPU); ``True`` also on CPU,
    where it lowers peak memory of large 3D models (docs/paper2.md) at some speed."""
    precision: str = "auto"
    """The Keras dtype policy (:data:`brats_keras.precision.PRECISIONS`): ``"auto"`` picks bfloat16 or
    float16 where the hardware computes them natively (:func:`brats_keras.precision.resolve_precision`);
    heads, losses and metrics stay float32."""
    sync_batchnorm: bool = False
    """Batch-normalisation statistics over the global batch of every replica
    (``BatchNormalization(synchronized=True)``, TensorFlow strategies) instead of each replica's share."""
    scale_lr: bool = False
    """Multiply ``learning_rate`` by the replicas in sync (the linear scaling rule for a global batch
    that grows with the devices; docs/distributed.md). Off: the rate is used as configured."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The training loss (each paper's factory names its section)."""
    metrics: tuple[MetricConfig, ...] = ()
    """The in-graph metrics ``model.compile`` gets, in order."""

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: {self.optimizer!r} not in {OPTIMIZERS}")
        if self.jit_compile not in JIT_COMPILE_CHOICES.values():
            raise ValueError(f"jit_compile must be True, False or 'auto', got {self.jit_compile!r}")
        check_precision(self.precision)
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class ExperimentConfig:
    """Everything a run needs, saved as ``config.json``."""

    name: str
    """Experiment module name, e.g. ``paper1_u_resunet``."""
    paper: str
    """Source paper file under ``shared/papers``."""
    data: Any
    models: dict[str, ModelConfig]
    """Every model the experiment can train, by its key (the run's sub-folder, ``results["models"]``)."""
    train: TrainConfig
    synthetic: bool = False
    """True when the run uses the synthetic stand-in data (reported in every output)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The run's experiment-level choices that are not hyper-parameters (which models to train, the
    cascade input, where encoder weights come from ...): the values of the experiment's own flags, so
    ``--config`` of a saved ``config.json`` reproduces the run."""


def config_to_dict(config: Any) -> Any:
    """Dataclasses (nested) → plain JSON-ready values; tuples become lists."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def save_config(path: str | Path, config: Any) -> None:
    """Write ``config`` as JSON (atomically); :func:`load_config` reads it back into the same dataclasses."""
    atomic_write_json(path, config_to_dict(config))


def config_from_dict(template: Any, data: Any, where: str = "config") -> Any:
    """``template`` (a config dataclass tree) with the values of ``data`` (plain JSON / YAML values).

    Each key of ``data`` must name a field of the template's dataclass at that place (an unknown key
    raises ``ValueError`` naming its dotted path); nested dataclasses are filled recursively, JSON
    lists become tuples where the template holds a tuple, and missing keys keep the template's value.
    Each dataclass is rebuilt with ``dataclasses.replace``, so its ``__post_init__`` checks the values.
    ``config_from_dict(t, config_to_dict(c)) == c`` for every config ``c`` of ``t``'s shape (tested).
    """
    if isinstance(template, ModelConfig) and isinstance(data, dict) and data.get("name", template.name) != \
            template.name:
        try:  # another model: its settings start from that builder's defaults
            template = ModelConfig(data["name"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if isinstance(template, dict) and template and all(_is_config(v) for v in template.values()):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {data!r}")
        unknown = sorted(set(data) - set(template))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: no such entry (entries: {', '.join(template)})")
        return {k: config_from_dict(v, data[k], f"{where}.{k}") if k in data else v for k, v in template.items()}
    if _is_config(template):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping for {type(template).__name__}, got {data!r}")
        names = set(_field_names(template))
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: no such field in {type(template).__name__} "
                             f"(fields: {', '.join(sorted(names))})")
        changes = {k: config_from_dict(getattr(template, k), v, f"{where}.{k}") for k, v in data.items()}
        try:
            return dataclasses.replace(template, **changes)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if isinstance(template, tuple) and isinstance(data, (list, tuple)):
        element = template[0] if template else None
        return tuple(config_from_dict(element, v, f"{where}[{i}]") for i, v in enumerate(data))
    return data


def _is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def upgrade_config_data(data: Any, template: Any, moved: dict[str, str] | None = None) -> Any:
    """``data`` of a ``config.json`` written before :attr:`ExperimentConfig.models` (one ``model`` whose
    options every model of the experiment shared) in today's layout, so such runs still reproduce.

    ``moved`` maps the paper's old dotted paths to their new ones (paper 1's ``options.cascade_input``
    → ``models.u_resunet.options.cascade_input``), moved first; what is left of ``model.options`` then
    goes to every model of ``template`` that has the setting, as the old scripts passed them. Other
    data are returned unchanged."""
    if not (isinstance(data, dict) and "model" in data and "models" not in data
            and isinstance(template, ExperimentConfig)):
        return data
    data = json.loads(json.dumps(data))
    for old, new in (moved or {}).items():
        *head, last = old.split(".")
        parent = data
        for name in head:
            parent = parent.get(name) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and last in parent:
            value, target = parent.pop(last), data
            *new_head, new_last = new.split(".")
            for name in new_head:
                target = target.setdefault(name, {})
            target[new_last] = value
    shared = (data.pop("model", None) or {}).get("options") or {}
    models = data.setdefault("models", {})
    for key, model in template.models.items():
        fields = _field_names(model.options)
        options = models.setdefault(key, {}).setdefault("options", {})
        options.update({k: v for k, v in shared.items() if k in fields and k not in options})
    return data


def load_config(path: str | Path, template: Any, moved: dict[str, str] | None = None) -> Any:
    """A config from a JSON or YAML file (a run's ``config.json``, or one a user wrote), typed after
    ``template`` (:func:`config_from_dict`; a ``config.json`` of the layout before per-model settings is
    upgraded first, :func:`upgrade_config_data` with ``moved``). Raises ``ValueError`` naming the file
    and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                         f"{str(exc).splitlines()[0]}") from None
    try:
        return config_from_dict(template, upgrade_config_data(data, template, moved))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def expand_path(config: Any, dotted: str) -> list[str]:
    """The concrete paths a dotted path names: itself, or for a ``*`` segment (``"models.*.options.filters"``)
    one path per entry of that mapping that has the rest of the path (every model with a ``filters``
    setting). Raises ``ValueError`` when none does."""
    parts = dotted.split(".")
    if "*" not in parts:
        return [dotted]
    found = list(_concrete_paths(config, parts, []))
    if not found:
        i = parts.index("*")
        raise ValueError(f"config path {dotted!r}: no entry of {'.'.join(parts[:i])!r} has "
                         f"{'.'.join(parts[i + 1:])!r}")
    return found


def _concrete_paths(obj: Any, parts: list[str], done: list[str]) -> Iterator[str]:
    """The paths below ``obj`` that ``parts`` names, ``*`` standing for every key of a mapping."""
    if not parts:
        yield ".".join(done)
        return
    name, rest = parts[0], parts[1:]
    if name == "*" and isinstance(obj, dict):
        for key, value in obj.items():
            yield from _concrete_paths(value, rest, [*done, str(key)])
    elif isinstance(obj, dict) and name in obj:
        yield from _concrete_paths(obj[name], rest, [*done, name])
    elif _is_config(obj) and name in _field_names(obj):
        yield from _concrete_paths(getattr(obj, name), rest, [*done, name])


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def get_path(config: Any, dotted: str) -> Any:
    """The value at a dotted path of a config (``"train.epochs"``, ``"models.unet2d.options.filters"``);
    ``None`` where a plain mapping has no such key. A ``*`` path (:func:`expand_path`) gives the common
    value of its entries, or ``{entry: value}`` when they differ. Raises ``ValueError`` for an unknown
    field."""
    if "*" in dotted.split("."):
        values = {path: get_path(config, path) for path in expand_path(config, dotted)}
        distinct = list(dict.fromkeys(map(repr, values.values())))
        if len(distinct) == 1:
            return next(iter(values.values()))
        i = dotted.split(".").index("*")
        return {path.split(".")[i]: value for path, value in values.items()}
    obj = config
    for name in dotted.split("."):
        if isinstance(obj, dict):
            obj = obj.get(name)
        elif _is_config(obj) and name in _field_names(obj):
            obj = getattr(obj, name)
        else:
            raise ValueError(f"config path {dotted!r}: no field {name!r} in {type(obj).__name__}")
    return obj


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of ``config`` with dotted-path fields replaced, e.g. ``{"train.epochs": 3}``; a ``*`` path
    (``"models.*.options.filters"``) sets every entry that has the field (:func:`expand_path`).

    ``None`` values are skipped (an unset command-line flag keeps the paper default). Unknown paths
    raise ``ValueError`` naming the path; below a plain ``dict`` field (``options``) a key is set or
    replaced; a typed field checks the value (a model setting of the wrong type is refused).
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        for path in expand_path(config, dotted):
            config = _replace(config, path.split("."), value, path)
    return config


def _replace(obj: Any, parts: list[str], value: Any, dotted: str) -> Any:
    name = parts[0]
    if isinstance(obj, dict):
        if name not in obj and any(_is_config(v) for v in obj.values()):
            raise ValueError(f"config override {dotted!r}: no entry {name!r} (entries: {', '.join(obj)})")
        return {**obj, name: value if len(parts) == 1 else _replace(obj.get(name), parts[1:], value, dotted)}
    if not (_is_config(obj) and name in _field_names(obj)):
        fields = f" (fields: {', '.join(_field_names(obj))})" if _is_config(obj) else ""
        raise ValueError(f"config override {dotted!r}: no field {name!r} in {type(obj).__name__}{fields}")
    new_value = value if len(parts) == 1 else _replace(getattr(obj, name), parts[1:], value, dotted)
    return dataclasses.replace(obj, **{name: new_value})


QUICK_NORM_MOMENTUM = 0.9
"""Batch-norm momentum of the quick profiles (a hundred or so optimisation steps)."""


def quick_profile_norm_momentum(models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
    """``models`` with ``norm_momentum=0.9`` in every model that has batch normalisation, for a quick
    profile's short schedule.

    With Keras' default 0.99, after ~100 steps 0.99**100 = 37 % of the batch-norm moving statistics
    are still their initial values (mean 0, variance 1) and inference-mode outputs are wrong
    (measured in paper 1's quick profile, docs/paper1.md); 0.9 forgets them (0.9**100 ≈ 3e-5).
    Training-mode computation is unchanged; paper profiles keep 0.99.
    """
    return {key: dataclasses.replace(m, options=dataclasses.replace(m.options, norm_momentum=QUICK_NORM_MOMENTUM))
            if hasattr(m.options, "norm_momentum") else m for key, m in models.items()}


def make_compiled_model(model: ModelConfig, train: TrainConfig, *, replicas: int | None = None, **build_args) -> keras.Model:
    """:func:`make_model`, compiled with ``train``'s optimiser, loss, metrics and XLA setting (resolved by
    :func:`~brats_keras.precision.resolve_jit_compile`), with synchronised batch normalisation when
    ``train.sync_batchnorm`` and the learning rate scaled by ``replicas`` (default: the replicas of the
    strategy in scope, :func:`~brats_keras.precision.replicas_in_sync`) when ``train.scale_lr``: what
    every experiment trains. The model computes in the global dtype policy in force when it is built
    (the runner sets ``train.precision``'s)."""
    built = make_model(model, **build_args)
    replicas = replicas_in_sync() if replicas is None else replicas
    if train.sync_batchnorm:
        set_batch_norm_synchronized(built, True)
    built.compile(optimizer=make_optimizer(train, replicas), loss=make_loss(train.loss),
                  metrics=make_metrics(train.metrics),
                  jit_compile=resolve_jit_compile(train.jit_compile, replicas=replicas))
    return built


def _build_named(kind: str, name: str, options: dict, registry: dict, plain: tuple[str, ...]):
    """``registry[name](**options)``, or ``name`` itself for a Keras name in ``plain`` (no options).
    Raises ``ValueError`` naming the ``kind``, the name or the argument it does not know."""
    options = dict(options or {})
    if name in plain:
        if options:
            raise ValueError(f"{kind} {name!r} takes no options, got {sorted(options)}")
        return name
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted([*registry, *plain]))}")
    try:
        return registry[name](**options)
    except TypeError as exc:
        raise ValueError(f"{kind} {name!r}: {exc}") from None


def make_loss(loss: LossConfig):
    """The loss a :class:`LossConfig` describes: an instance of one of :data:`brats_keras.losses.LOSSES`,
    or the Keras name of :data:`~brats_keras.losses.KERAS_LOSSES` (``model.compile`` resolves it)."""
    return _build_named("loss", loss.name, loss.options, LOSSES, KERAS_LOSSES)


def make_metrics(specs) -> list:
    """The metrics of a sequence of :class:`MetricConfig`: instances of :data:`brats_keras.metrics.METRICS`,
    or ``"accuracy"`` (Keras picks categorical or binary accuracy from the loss)."""
    return [_build_named("metric", m.name, m.options, METRICS, ("accuracy",)) for m in specs]


def effective_learning_rate(train: TrainConfig, replicas: int = 1) -> float:
    """``train.learning_rate``, times ``replicas`` when ``train.scale_lr`` (the linear scaling rule)."""
    return float(train.learning_rate) * (int(replicas) if train.scale_lr else 1)


def make_optimizer(train: TrainConfig, replicas: int = 1) -> keras.optimizers.Optimizer:
    """The Keras optimiser a :class:`TrainConfig` describes (learning rate as a variable, so
    learning-rate callbacks can change it; :func:`effective_learning_rate` for ``replicas``).
    ``weight_decay`` 0 means no decay for every optimiser (AdamW gets ``weight_decay=0.0``, which Keras
    applies as ``w -= w · 0 · lr``: a no-op; the others get ``None``, Keras' "no decay")."""
    decay = train.weight_decay or None
    rate = effective_learning_rate(train, replicas)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=float(train.weight_decay))
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, weight_decay=decay)
    return keras.optimizers.SGD(rate, weight_decay=decay)
