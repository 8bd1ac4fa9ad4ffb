"""Paper 5 — EfficientNetB1 4-class classifier and residual U-Net segmenter
(``004_91819a1a59d0cf73.txt``).

Two independent halves, each with its data, model and training. Stated by the paper: classifier —
frozen pre-trained EfficientNetB1, GAP, Dense 512, Dense 4 softmax, dropout 0.4, Adam lr 0.001,
weight decay 1e-4, batch 32, 50 epochs, early stopping on validation accuracy, LR × 0.3 after 2
epochs without improvement, [0, 1] normalisation, rotation / flip / zoom augmentation, 70 / 15 / 15
split (§3.1–3.2, Table 2); segmenter — residual U-Net (3×3, 1024-filter bottleneck, BN + ReLU,
1-filter sigmoid), BCE + Dice, Adam 1e-4, batch 32, weight decay 1e-4, 50 epochs, early stopping on
validation loss keeping the best model (§4.2–4.3). Everything else is a **choice** (docs/paper5.md).
``quick=True``: the synthetic profile (small images, few epochs; the networks and optimisers stay).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from brats_keras.configs.base import (
    ExperimentConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig, quick_profile_norm_momentum,
)
from brats_keras.data.augment import AugmentSettings
from brats_keras.labels import BRAIN_MRI, LGG_SLICES

EXPERIMENT = "paper5_effnet_classify_segment"
PAPER_FILE = "004_91819a1a59d0cf73.txt"
TASKS = ("classify", "segment")
MOVED_PATHS = {"model": "models.classifier", "train.segment.model": "models.segmenter"}
"""Fields of a ``config.json`` written before per-model settings, and where they are now (``--config``)."""

PAPER_REPORT = {
    **BRAIN_MRI.per_class(
        meningioma={"precision": 0.997, "recall": 0.995, "f1-score": 0.991},
        glioma={"precision": 0.992, "recall": 0.994, "f1-score": 0.990},
        pituitary={"precision": 0.998, "recall": 0.989, "f1-score": 0.993},
        notumor={"precision": 0.992, "recall": 0.991, "f1-score": 0.990},
    ),
    "accuracy": 0.9939,
}
"""Paper 5, §3.4: the classification report and the test accuracy 99.39 %. Meningioma's F1 0.991 is
below both its precision 0.997 and recall 0.995, which a harmonic mean cannot be (audit)."""
PAPER_TABLE1 = {
    "classify": BRAIN_MRI.per_class(meningioma=(1339, 306), glioma=(1321, 300), pituitary=(1457, 300),
                                    notumor=(1595, 405)),
    "segment": {LGG_SLICES[1].key: (1167, 206), LGG_SLICES[0].key: (2181, 386)},  # tumour present, no tumour
}
"""Paper 5, Table 1 ("Dataset Description"): (Training, Testing) images per class of the classification
set — the release's two folders — and slices with / without tumour of the segmentation set (its
"Dataset After" rows, counts after augmentation, are not comparable and not listed)."""
PAPER_SEGMENTATION = {"dice": 0.9977, "iou": 0.9981, "dice_text": 0.8477}
"""Paper 5, §4.4: the table's Dice 0.9977 and IoU 0.9981, and the text's "Dice coefficient of 0.8477
and an IOU of 0.9981". IoU ≤ Dice for any masks (audit)."""


@dataclass
class StopSettings:
    """Early stopping and the LR schedule of one half."""

    monitor: str
    stop_patience: int
    """Epochs without improvement before stopping (**choice**; the paper gives none); 0 disables."""
    reduce_factor: float = 0.0
    reduce_patience: int = 0
    """``ReduceLROnPlateau`` on ``monitor``; factor 0 disables."""

    def __post_init__(self):
        if self.stop_patience < 0 or self.reduce_patience < 0 or not 0.0 <= self.reduce_factor < 1.0:
            raise ValueError(f"stop settings: need patience ≥ 0 and 0 ≤ reduce_factor < 1, got {self}")


@dataclass
class ClassifyData:
    size: int = 240
    """Images resized to 240 × 240 (**choice**: EfficientNetB1's native resolution)."""
    split: str = "paper"
    """``paper``: both release folders pooled, 70 / 15 / 15 stratified by class (§3.1); ``folders``:
    the release's Testing/ as test, 15 % of Training/ for validation."""
    augment: AugmentSettings = field(default_factory=lambda: AugmentSettings(
        rotation_deg=15.0, flip_horizontal=True, flip_vertical=True, zoom=(0.9, 1.1), elastic_alpha=0.0))
    """Rotation, horizontal and vertical flips, zoom (§2.2, §3.1); ranges are **choices**."""
    synthetic_per_class: int = 0
    synthetic_test_per_class: int = 0

    def __post_init__(self):
        if self.size < 32 or self.split not in ("paper", "folders"):
            raise ValueError(f"classify data: need size ≥ 32 and split 'paper' or 'folders', got {self.size}, "
                             f"{self.split!r}")


@dataclass
class SegmentData:
    size: int = 256
    """The LGG slices' own 256 × 256."""
    test_fraction: float = 0.15
    val_fraction: float = 0.15
    """By patient (**choice**: the paper splits the LGG set but gives no fractions; Table 1's
    train / test counts are about 85 / 15)."""
    augment: AugmentSettings = field(default_factory=lambda: AugmentSettings(
        rotation_deg=15.0, flip_horizontal=True, flip_vertical=True, zoom=(0.9, 1.1), elastic_alpha=0.0))
    """§4.4: "data augmentation was utilized"; the classifier's transforms, on image and mask together."""
    synthetic_patients: int = 0
    synthetic_slices: int = 0


@dataclass
class Paper5Data:
    classify: ClassifyData = field(default_factory=ClassifyData)
    segment: SegmentData = field(default_factory=SegmentData)
    overlay_images: int = 6
    """Test images in the misclassified-examples and segmentation-overlay figures."""


@dataclass
class SegmentTrain(TrainConfig):
    """The segmenter's training (the experiment config's ``train`` is the classifier's)."""

    stop: StopSettings = field(default_factory=lambda: StopSettings("val_loss", stop_patience=10))


@dataclass
class Paper5Train(TrainConfig):
    """The classifier's training plus the segmenter's (``segment``)."""

    stop: StopSettings = field(default_factory=lambda: StopSettings("val_accuracy", stop_patience=5,
                                                                    reduce_factor=0.3, reduce_patience=2))
    segment: SegmentTrain = field(default_factory=lambda: SegmentTrain(
        epochs=50, batch_size=32, optimizer="adam", learning_rate=1e-4, weight_decay=1e-4,  # §4.2 / §4.3
        loss=LossConfig("bce_dice"),  # §4.3: BCE + Dice
        metrics=(MetricConfig("dice", {"num_classes": 1, "name": "dice"}),
                 MetricConfig("iou", {"num_classes": 1, "name": "iou"}))))


def paper5_config(*, quick: bool = False) -> ExperimentConfig:
    """The paper profile, or the quick synthetic profile (``quick=True``)."""
    train = Paper5Train(epochs=50, batch_size=32, optimizer="adam", learning_rate=1e-3, weight_decay=1e-4,  # Table 2
                        loss=LossConfig("categorical_crossentropy"), metrics=(MetricConfig("accuracy"),))  # Table 2
    models = {
        "classifier": ModelConfig("efficientnet_b1_classifier", {"num_classes": 4, "dense": 512, "dropout": 0.4}),  # §3.1
        "segmenter": ModelConfig("residual_unet2d_binary", {"filters": 64}),  # §4.2: 64 filters, 1024 at the bottleneck
    }
    data = Paper5Data()
    if quick:
        models = quick_profile_norm_momentum(models)
        # choice, sized for this 2-core CPU (docs/paper5.md): 96² images, 75 synthetic images per class,
        # 32 classifier epochs of batch 16 (a randomly initialised EfficientNetB1 needs the steps: after
        # 12 epochs of batch 32 its training accuracy was still 34 %, measured) without the LR plateau
        # (on 3 validation batches it cut the LR to 3e-5 by epoch 7); 64² LGG slices of 12 synthetic
        # patients, 8 segmenter epochs of batch 16; BN momentum 0.9 for the short runs; no early stopping.
        train.epochs = 32
        train.batch_size = 16
        train.stop = dataclasses.replace(train.stop, stop_patience=0, reduce_factor=0.0)
        train.segment = dataclasses.replace(
            train.segment, epochs=8, batch_size=16, stop=dataclasses.replace(train.segment.stop, stop_patience=0))
        data = Paper5Data(
            classify=ClassifyData(size=96, synthetic_per_class=60, synthetic_test_per_class=15),
            segment=SegmentData(size=64, synthetic_patients=12, synthetic_slices=24))
    return ExperimentConfig(name=EXPERIMENT, paper=PAPER_FILE, data=data, models=models, train=train, synthetic=quick)
