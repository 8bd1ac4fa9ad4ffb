"""Paper 1 — U-ResUNet cascade vs U-Net on 2D BraTS 2020 slices (``000_bacedb4591857e9e.txt``).

Numbers carry the place in the paper (or REPLICATION.md choice) they come from. ``quick=True`` is
the small synthetic profile the default command runs on this CPU; only data volume and epochs
differ from the paper profile, never the architecture or the optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from brats_keras.configs.base import (
    ExperimentConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig, quick_profile_norm_momentum,
)
from brats_keras.data.slices2d import SliceSettings
from brats_keras.data.splits import PAPER1_SPLIT

EXPERIMENT = "paper1_u_resunet"
PAPER_FILE = "000_bacedb4591857e9e.txt"
MODELS = ("u_resunet", "unet2d")
"""Proposed cascade and the plain U-Net baseline (paper §6, Fig. 6.3)."""
MOVED_PATHS = {"options.cascade_input": "models.u_resunet.options.cascade_input"}
"""Fields of a ``config.json`` written before per-model settings, and where they are now (``--config``)."""

# Table 6.1 — test accuracy and loss (%) per epoch (paper values, printed units).
TABLE_6_1 = {
    5: {"accuracy": 97.91, "loss": 9.09},
    6: {"accuracy": 97.06, "loss": 10.41},
    8: {"accuracy": 97.48, "loss": 12.43},
    10: {"accuracy": 98.70, "loss": 9.30},
    15: {"accuracy": 97.45, "loss": 7.98},
    20: {"accuracy": 93.04, "loss": 23.57},
}
# Table 6.2 — training accuracy and loss (%) per epoch.
TABLE_6_2 = {
    2: {"accuracy": 98.43, "loss": 6.49},
    4: {"accuracy": 98.36, "loss": 5.07},
    6: {"accuracy": 98.61, "loss": 4.14},
    8: {"accuracy": 98.48, "loss": 4.33},
    10: {"accuracy": 98.70, "loss": 3.69},
}
UNET_BASELINE_TEXT = "95–96.11 % accuracy and 22.8–16.58 % loss over epochs 5–20 (paper, Fig. 6.3 text)"


@dataclass
class Paper1Data:
    """Data settings of paper 1."""

    slices: SliceSettings = field(default_factory=SliceSettings)
    """FLAIR + T1ce, axial slices 22..121, 240 → 128, per-volume max scaling (REPLICATION.md choices)."""
    test_fraction: float = PAPER1_SPLIT["test_fraction"]
    """80 % train+val / 20 % test by patient (paper §3.1)."""
    val_fraction: float = PAPER1_SPLIT["val_fraction"]
    """15 % of train+val for validation (paper text mentions 15 %)."""
    eval_slices: str = "window"
    """Whole-volume evaluation predicts the training window's slices and labels the rest background
    (``window``, what the method sees), or predicts every axial slice (``all``)."""
    synthetic_cases: int = 0
    """Cases generated when no --data-dir is given (quick profile only)."""
    max_eval_cases: int = 0
    """Cap on test patients evaluated on whole volumes (0: all)."""

    def __post_init__(self):
        if self.eval_slices not in ("window", "all"):
            raise ValueError(f"eval_slices: {self.eval_slices!r} not in ('window', 'all')")


def paper1_config(*, quick: bool = False) -> ExperimentConfig:
    """The paper profile, or the quick synthetic profile (``quick=True``)."""
    train = TrainConfig(
        epochs=20,  # Tables 6.1 / 6.2 go to epoch 20
        batch_size=32,  # paper §5.5: "Our batch size is 32"
        optimizer="adam",  # paper §5.6: Adam
        learning_rate=1e-3,  # paper §5.6: learning rate 0.001
        loss=LossConfig("categorical_crossentropy"),  # paper §5.6
        # pixel accuracy (Tables 6.1 / 6.2), and the BraTS regions' Dice and the mean IoU so accuracy cannot mislead
        metrics=(MetricConfig("accuracy"), MetricConfig("region_dice", {"region": "ET"}),
                 MetricConfig("region_dice", {"region": "TC"}), MetricConfig("region_dice", {"region": "WT"}),
                 MetricConfig("mean_iou", {"num_classes": 4})),
    )
    data = Paper1Data()
    if quick:
        # The quick profile shrinks the data, never the networks nor the slices: the paper's 128²
        # (mixed bfloat16 on CPUs where it is faster, docs/performance.md), 20 slices per case
        # spread over the paper's window, 12 synthetic patients, batch 8 for ~120 optimisation steps.
        train.epochs = 6
        train.batch_size = 8
        data = Paper1Data(
            slices=SliceSettings(start=22, count=20, step=5),
            synthetic_cases=12,
            max_eval_cases=2,
        )
    # input shape follows data.slices (size × size × channels) and is set when the model is built;
    # base filters 32: bottom 8×8×512 (REPLICATION.md choice); the cascade hands the ResUNet the U-Net's
    # last decoder features (our choice; `probabilities` is its softmax output)
    models = {name: ModelConfig(name, {"num_classes": 4, "filters": 32}) for name in MODELS}
    if quick:
        models = quick_profile_norm_momentum(models)  # ~100 steps: BN statistics must catch up
    return ExperimentConfig(name=EXPERIMENT, paper=PAPER_FILE, data=data, models=models, train=train, synthetic=quick)
