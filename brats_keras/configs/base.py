"""Building blocks of every experiment's configuration (TF Model Garden style).

An experiment is ``ExperimentConfig(name, paper, data, model, train)``: ``data`` is the paper's own
data dataclass (e.g. :class:`brats_keras.data.slices2d.SliceSettings` plus split fractions),
``model`` names a registered model and its overrides, ``train`` holds the optimiser, loss, epochs
and batch size. Each paper's factory sets the numbers with a comment naming the table or section
they come from; the resolved configuration is saved as ``config.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from brats_keras.io_utils import atomic_write_json

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
JIT_COMPILE_CHOICES = {"auto": "auto", "on": True, "off": False}
"""Command-line spellings of :attr:`TrainConfig.jit_compile`."""


@dataclass
class ModelConfig:
    """A registered model (``brats_keras.models.create_model(name, **options)``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


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
    """XLA compilation of the train step (``model.compile(jit_compile=...)``): ``"auto"`` is Keras'
    rule (XLA on accelerators, not on CPU); ``True`` also on CPU, where it lowers peak memory of
    large 3D models (docs/paper2.md) at some speed."""

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: {self.optimizer!r} not in {OPTIMIZERS}")
        if self.jit_compile not in JIT_COMPILE_CHOICES.values():
            raise ValueError(f"jit_compile must be True, False or 'auto', got {self.jit_compile!r}")
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
    model: ModelConfig
    train: TrainConfig
    synthetic: bool = False
    """True when the run uses the synthetic stand-in data (reported in every output)."""


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
    atomic_write_json(path, config_to_dict(config))


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of ``config`` with dotted-path fields replaced, e.g. ``{"train.epochs": 3}``.

    ``None`` values are skipped (an unset command-line flag keeps the paper default). Unknown paths
    raise ``ValueError`` naming the path.
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        config = _replace(config, parts, value, dotted)
    return config


def _replace(obj: Any, parts: list[str], value: Any, dotted: str) -> Any:
    name = parts[0]
    if not (dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}):
        raise ValueError(f"config override {dotted!r}: no field {name!r} in {type(obj).__name__}")
    new_value = value if len(parts) == 1 else _replace(getattr(obj, name), parts[1:], value, dotted)
    return dataclasses.replace(obj, **{name: new_value})


QUICK_NORM_MOMENTUM = 0.9
"""Batch-norm momentum of the quick profiles (a hundred or so optimisation steps)."""


def quick_profile_norm_momentum(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``norm_momentum=0.9`` for a quick profile's short schedule.

    With Keras' default 0.99, after ~100 steps 0.99**100 = 37 % of the batch-norm moving statistics
    are still their initial values (mean 0, variance 1) and inference-mode outputs are wrong
    (measured in paper 1's quick profile, docs/paper1.md); 0.9 forgets them (0.9**100 ≈ 3e-5).
    Training-mode computation is unchanged; paper profiles keep 0.99.
    """
    return {**options, "norm_momentum": QUICK_NORM_MOMENTUM}


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """The Keras optimiser a :class:`TrainConfig` describes (learning rate as a variable, so
    learning-rate callbacks can change it). ``weight_decay`` 0 means no decay for every optimiser
    (AdamW gets ``weight_decay=0.0``, which Keras applies as ``w -= w · 0 · lr``: a no-op; the others
    get ``None``, Keras' "no decay")."""
    decay = train.weight_decay or None
    if train.optimizer == "adam":
        return keras.optimizers.Adam(train.learning_rate, weight_decay=decay)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(train.learning_rate, weight_decay=float(train.weight_decay))
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(train.learning_rate, weight_decay=decay)
    return keras.optimizers.SGD(train.learning_rate, weight_decay=decay)
