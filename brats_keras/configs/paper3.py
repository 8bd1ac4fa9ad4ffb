"""Paper 3 — multimodal 2D U-Net with bias-field correction, denoising and the "dwell" callback
(``002_1845296d8be7a3a0.txt``).

The paper states the network (4 encoder blocks, bridge, 4 decoder blocks), the four modalities, the
pre-processing steps by name, Dice loss, the Dice coefficient and accuracy as metrics and the dwell
callback's behaviour; it states no epochs, batch size, learning rate, slice window, split or filter
count. Those are marked **choice** below and explained in ``docs/paper3.md``. ``quick=True`` is the
synthetic profile the default command runs on this CPU; it shrinks data, epochs and the N4 fitting
grid, never the network or the optimiser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from brats_keras.configs.base import ExperimentConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig
from brats_keras.data.correction import CorrectionSettings
from brats_keras.data.slices2d import NORMALIZATIONS, SliceSettings
from brats_keras.data.splits import PAPER1_SPLIT
from brats_keras.labels import region_classes

EXPERIMENT = "paper3_unet_dwell"
PAPER_FILE = "002_1845296d8be7a3a0.txt"
MODEL = "unet2d_multimodal"
VARIANTS = ("preprocessed", "raw")
"""The two runs of the ablation: on the bias-corrected, denoised, z-scored volumes (the paper's
method) and on the raw volumes (``--no-preprocess``)."""
VARIANT_TITLES = {"preprocessed": "with pre-processing (N4 + denoise + z-score)",
                  "raw": "without pre-processing (raw volumes)"}


@dataclass
class DwellSettings:
    """Arguments of :class:`brats_keras.callbacks.DwellLearningRate` (the paper's callback, §V)."""

    patience: int = 1
    """Epochs without improvement before the LR is lowered: 1, so every worse epoch moves back to the
    best weights and lowers the LR, as the paper describes (the callback's usual default)."""
    stop_patience: int = 3
    """Stop after this many reductions in a row without improvement (callback default)."""
    threshold: float = 0.0
    """Training accuracy below which accuracy is monitored instead of validation loss: 0, so the
    validation loss is watched from the first epoch, as the paper says ("If dwell is set to True, the
    callback monitors the validation loss"). The callback's usual 0.9 watched training accuracy for
    the first epochs here, because the tumour-only Dice loss leaves pixel accuracy low early on."""
    factor: float = 0.5
    """LR multiplier at each reduction (callback default)."""
    dwell: bool = True
    """Move back to the best weights when the LR is lowered — the paper's point."""

    def callback_kwargs(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Paper3Train(TrainConfig):
    """Paper 3's training settings: the shared ones plus the dwell callback's."""

    dwell: DwellSettings = field(default_factory=DwellSettings)


TUMOUR_CLASSES = list(region_classes()["WT"])  # [1, 2, 3]: the whole tumour
"""Classes of the Dice loss and of the Dice coefficient metric: the tumour classes (**choice**, the
paper's Dice "assesses the extent to which the model's segmentation aligns with the true tumor
location"; with background included the U-Net collapsed to all-background, docs/paper3.md)."""


@dataclass
class Paper3Data:
    """Data settings of paper 3."""

    slices: SliceSettings = field(default_factory=lambda: SliceSettings(
        modalities=("t1", "t1ce", "t2", "flair"), normalization="none"))
    """T1, T1ce, T2, FLAIR (paper §V, "multimodal"), 128² (REPLICATION.md choice), axial slices
    22..121 like paper 1 (**choice**). Normalisation ``none``: the corrected volumes are already
    z-scored inside the brain by the pre-processing."""
    raw_normalization: str = "max"
    """How the ``raw`` run scales each channel (**choice**): by its volume maximum, the least any
    network needs (raw BraTS intensities run to thousands), as paper 1 does; the ablation removes
    the paper's three steps, not all scaling."""
    correction: CorrectionSettings = field(default_factory=CorrectionSettings)
    """N4 per modality in the brain mask (shrink 4, iterations 50/50/30/20), 3 curvature-flow steps,
    z-score in the mask (REPLICATION.md choice)."""
    test_fraction: float = PAPER1_SPLIT["test_fraction"]
    """20 % of patients for test (**choice**, as paper 1; the paper states no split)."""
    val_fraction: float = PAPER1_SPLIT["val_fraction"]
    """15 % of the rest for validation, which the dwell callback monitors (**choice**)."""
    eval_slices: str = "window"
    """Whole-volume evaluation predicts the training window (``window``) or every slice (``all``)."""
    synthetic_cases: int = 0
    """Cases generated when no --data-dir is given (quick profile only)."""
    max_eval_cases: int = 0
    """Cap on test patients evaluated on whole volumes (0: all)."""

    def __post_init__(self):
        if self.eval_slices not in ("window", "all"):
            raise ValueError(f"eval_slices: {self.eval_slices!r} not in ('window', 'all')")
        if self.raw_normalization not in NORMALIZATIONS:
            raise ValueError(f"raw_normalization: {self.raw_normalization!r} not in {NORMALIZATIONS}")
        if set(self.slices.modalities) - set(self.correction.modalities):
            raise ValueError(f"slices.modalities {list(self.slices.modalities)} must all be corrected "
                             f"(correction.modalities {list(self.correction.modalities)})")

    def slices_for(self, variant: str) -> SliceSettings:
        """The slice settings of the ``preprocessed`` or the ``raw`` run."""
        if variant not in VARIANTS:
            raise ValueError(f"variant: {variant!r} not in {VARIANTS}")
        if variant == "preprocessed":
            return self.slices
        return dataclasses.replace(self.slices, normalization=self.raw_normalization)


def paper3_config(*, quick: bool = False) -> ExperimentConfig:
    """The paper profile, or the quick synthetic profile (``quick=True``)."""
    train = Paper3Train(
        epochs=50,  # choice: the paper states none; the dwell callback stops earlier on a plateau
        batch_size=32,  # choice: as paper 1 (same slices, same U-Net)
        optimizer="adam",  # choice: the paper states none; Adam as the suite's other 2D U-Net
        learning_rate=1e-4,  # choice: 1e-3 collapsed to all-background (docs/paper3.md); the dwell callback lowers it
        loss=LossConfig("dice", {"class_ids": TUMOUR_CLASSES}),  # §V: "Dice loss, being 1 minus the Dice coefficient"
        metrics=(
            MetricConfig("accuracy"),  # Fig. 5.1: training accuracy
            # Fig. 5.1's Dice coefficient, accumulated over the epoch (1 − Dice loss)
            MetricConfig("dice", {"class_ids": TUMOUR_CLASSES, "soft": True, "name": "soft_dice"}),
            # the BraTS regions, so accuracy cannot mislead
            MetricConfig("region_dice", {"region": "ET"}), MetricConfig("region_dice", {"region": "TC"}),
            MetricConfig("region_dice", {"region": "WT"}),
        ),
    )
    data = Paper3Data()
    if quick:
        # ~8 slices/s for this U-Net at 64² on a 2-core CPU with validation (docs/paper3.md): 64²
        # slices, 20 per case spread over the paper's window, 12 synthetic patients, batch 8, 6 epochs
        # per run; N4 fitted on a ×8 shrunk grid (about 3× faster per case than ×4, the field is smooth).
        train.epochs = 6
        train.batch_size = 8
        data = Paper3Data(
            slices=dataclasses.replace(data.slices, start=22, count=20, step=5, size=64),
            correction=dataclasses.replace(data.correction, shrink_factor=8),
            synthetic_cases=12,
            max_eval_cases=2,
        )
    return ExperimentConfig(
        name=EXPERIMENT,
        paper=PAPER_FILE,
        data=data,
        models={MODEL: ModelConfig(MODEL, {"num_classes": 4, "filters": 32})},  # choice: 32 filters, see docs/paper3.md
        train=train,
        synthetic=quick,
    )

