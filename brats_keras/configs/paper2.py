"""Paper 2 — three 3D U-Nets on 128³ BraTS 2020 crops, tested on BraTS 2021 (``001_af0cf957708a3ba0.txt``).

Numbers carry the place in the paper (or REPLICATION.md choice) they come from. ``quick=True`` is
the small synthetic profile the default command runs on this CPU: a 4 mm synthetic grid and the
reference crop's field of view at that resolution (32³), fewer cases, more epochs; the networks,
loss, optimiser and batch size are the paper's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import keras

from brats_keras.configs.base import (
    ExperimentConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig, make_loss, make_metrics,
    quick_profile_norm_momentum,
)
from brats_keras.data.layout import BRATS_SHAPE
from brats_keras.data.splits import PAPER2_SPLIT
from brats_keras.data.volumes3d import Preprocess3DSettings

EXPERIMENT = "paper2_attention_unet3d"
PAPER_FILE = "001_af0cf957708a3ba0.txt"
MODELS = ("unet3d_simple", "unet3d_modified", "unet3d_spatial_attention")
"""Table III's rows: "Simple Unet", "Optimized/Modified Unet", "Spatial Attention Unet"."""

# Table III — accuracy and IoU (threshold 0.5) on BraTS 2020 train / val and IoU on BraTS 2021.
TABLE_III = {
    "unet3d_simple": {"accuracy": 0.9908, "val_accuracy": 0.9792, "iou": 0.8123, "val_iou": 0.6753,
                      "test_iou": 0.6965},
    "unet3d_modified": {"accuracy": 0.9932, "val_accuracy": 0.9774, "iou": 0.8502, "val_iou": 0.6675,
                        "test_iou": 0.7025},
    "unet3d_spatial_attention": {"accuracy": 0.9942, "val_accuracy": 0.9818, "iou": 0.8698, "val_iou": 0.6773,
                                 "test_iou": 0.6962},
}
# Table IV — Dice per region on "Train-2020" and "Test-2021". The paper's headers read "Tumor (TC) /
# Core (WT) / Whole Tumor (ET)"; the values are keyed by the region abbreviation it prints.
TABLE_IV = {
    ("unet3d_simple", "train-2020"): {"TC": 0.8930, "WT": 0.8684, "ET": 0.8910},
    ("unet3d_simple", "test-2021"): {"TC": 0.7966, "WT": 0.7495, "ET": 0.6857},
    ("unet3d_modified", "train-2020"): {"TC": 0.7331, "WT": 0.7751, "ET": 0.8700},
    ("unet3d_modified", "test-2021"): {"TC": 0.8206, "WT": 0.7682, "ET": 0.6630},
    ("unet3d_spatial_attention", "train-2020"): {"TC": 0.9027, "WT": 0.8868, "ET": 0.9067},
    ("unet3d_spatial_attention", "test-2021"): {"TC": 0.8039, "WT": 0.7640, "ET": 0.6689},
}

QUICK_SHAPE = (60, 60, 39)
"""Synthetic grid of the quick profile: the 240×240×155 field of view at 4 mm (3.97 mm axially)."""
QUICK_CROP = ((14, 46), (14, 46), (3, 35))
"""The reference crop ``[56:184, 56:184, 13:141]`` at 4 mm: 32³ voxels over the same anatomy."""


@dataclass
class Paper2Data:
    """Data settings of paper 2."""

    preprocess: Preprocess3DSettings = field(default_factory=Preprocess3DSettings)
    """FLAIR, T1ce, T2; MinMaxScaler per axial slice as the reference; crop [56:184, 56:184, 13:141];
    keep a case with > 1 % tumour in the crop (paper §IV, REPLICATION.md)."""
    val_fraction: float = PAPER2_SPLIT["val_fraction"]
    """75:25 split of the kept BraTS 2020 cases by patient (paper §VIII: 258 / 86)."""
    filter_test_cohort: bool = False
    """Apply the 1 % tumour filter to the external cohort too. Off (our choice): an external test
    set is scored on every case, never selected by its labels; cases with little tumour in the crop
    are exactly where a crop-based model fails."""
    synthetic_cases: int = 0
    """Synthetic BraTS 2020 cases generated when no --data-dir is given (quick profile only)."""
    synthetic_test_cases: int = 0
    """Synthetic BraTS 2021 cases (the external cohort) generated when no --test-dir is given."""
    synthetic_shape: tuple[int, int, int] = BRATS_SHAPE
    """Grid of the generated synthetic volumes."""
    max_eval_cases: int = 0
    """Cap on the patients of each set (train, val, test) scored on whole volumes (0: all)."""

    def __post_init__(self):
        self.synthetic_shape = tuple(int(n) for n in self.synthetic_shape)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_eval_cases < 0:
            raise ValueError(f"max_eval_cases must be >= 0, got {self.max_eval_cases}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(X, Y, Z, C)`` of the crops the networks see."""
        return (*(hi - lo for lo, hi in self.preprocess.crop), len(self.preprocess.modalities))

    def test_preprocess(self) -> Preprocess3DSettings:
        """The external cohort's pre-processing: the same, without the tumour filter unless asked."""
        if self.filter_test_cohort:
            return self.preprocess
        return dataclasses.replace(self.preprocess, min_tumour_fraction=None)


def paper2_config(*, quick: bool = False) -> ExperimentConfig:
    """The paper profile, or the quick synthetic profile (``quick=True``)."""
    train = TrainConfig(
        epochs=100,  # paper §VIII: "trained for 100 epochs"
        batch_size=2,  # paper §VIII and Table II: batch size 2
        optimizer="adam",  # Table II: ADAM
        learning_rate=1e-4,  # Table II: learning rate 0.0001
        # XLA: on a CPU a 128³ batch of 2 peaks at 18-20 GB of host memory without it and at
        # 6.6-6.8 GB with it (python -m brats_keras.bench train3d, docs/paper2.md); on a GPU Keras
        # would pick XLA anyway. Inference drops it on CPU, where XLA predicts ~5x slower.
        jit_compile=True,
        # §VI: sm.losses.DiceLoss(class_weights=[0.25] * 4) + 1 * sm.losses.CategoricalFocalLoss()
        loss=LossConfig("dice_focal", {"class_weights": [0.25] * 4, "focal_weight": 1.0}),
        # §VI: accuracy and sm.metrics.IOUScore(threshold=0.5)
        metrics=(MetricConfig("accuracy"), MetricConfig("iou", {"threshold": 0.5, "num_classes": 4, "name": "iou"})),
    )
    data = Paper2Data()
    if quick:
        # A 128³ training step of batch 2 takes about a minute on this 2-core CPU (docs/paper2.md);
        # the quick profile keeps the reference crop's field of view at 4 mm (32³) and gives each
        # network ~300 steps: 50 epochs × 6 steps. The simple U-Net (no batch norm) is still at the
        # all-background solution after 14 epochs (~80 steps, WT Dice 0.02-0.04) and leaves it
        # between epochs 20 and 30 (measured, docs/paper2.md).
        train.epochs = 50
        # and steps 10× larger than the paper's 1e-4, at which the simple U-Net was still all
        # background after 80 steps (measured: Dice 0 for all regions, docs/paper2.md)
        train.learning_rate = 1e-3
        train.jit_compile = "auto"  # 32³ needs ~1.7 GB; XLA would only slow the CPU steps down
        data = Paper2Data(
            preprocess=Preprocess3DSettings(crop=QUICK_CROP),
            synthetic_cases=16,
            synthetic_test_cases=6,
            synthetic_shape=QUICK_SHAPE,
        )
    shared = {
        "num_classes": 4,  # classes 0, 1, 2, 4→3 (reference pipeline)
        "filters": 16,  # 16-32-64-128-256 (REPLICATION.md choice, from the reference code)
    }
    models = {name: ModelConfig(name, shared) for name in MODELS}
    models["unet3d_spatial_attention"] = ModelConfig("unet3d_spatial_attention", {
        **shared,
        "attention_activation": "sigmoid",  # REPLICATION.md audit: the paper's softmax is the identity
        # §III: attention "during encoding and decoding"; the published reading used so far applies it after
        # the encoder's pools only (docs/paper2.md); --attention-in-decoder adds it after each up-sampling
        "attention_in_decoder": False,
    })
    if quick:
        models = quick_profile_norm_momentum(models)  # ~100 steps: BN statistics must catch up
    return ExperimentConfig(name=EXPERIMENT, paper=PAPER_FILE, data=data, models=models, train=train, synthetic=quick)


def paper2_loss() -> keras.losses.Loss:
    """Paper 2's loss as its config names it: Dice loss with class weights 0.25 × 4 plus 1 × categorical
    focal loss (paper §VI)."""
    return make_loss(paper2_config().train.loss)


def paper2_metrics() -> list:
    """Paper 2's metrics as its config names them: accuracy and IoU at threshold 0.5 (paper §VI)."""
    return make_metrics(paper2_config().train.metrics)
