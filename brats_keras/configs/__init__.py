"""Experiment configurations: nested dataclasses, one factory per paper (added by the paper issues)."""

from brats_keras.configs.base import (
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    make_optimizer,
    save_config,
)

__all__ = [
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "make_optimizer",
    "save_config",
]
