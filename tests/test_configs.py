"""Experiment configuration dataclasses: JSON round trip, overrides, optimiser factory."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brats_keras.configs import ExperimentConfig, ModelConfig, TrainConfig, apply_overrides, config_to_dict, \
    make_optimizer, save_config
from brats_keras.data.slices2d import SliceSettings

pytestmark = pytest.mark.backend_agnostic


def example() -> ExperimentConfig:
    return ExperimentConfig(
        name="paperX", paper="000.txt", data=SliceSettings(), model=ModelConfig("unet2d", {"filters": 32}),
        train=TrainConfig(epochs=20, batch_size=32, learning_rate=1e-3), synthetic=True)


def test_saved_json_holds_every_field(tmp_path):
    save_config(tmp_path / "config.json", example())
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["data"]["modalities"] == ["flair", "t1ce"] and data["data"]["start"] == 22
    assert data["model"] == {"name": "unet2d", "options": {"filters": 32}}
    assert data["train"]["epochs"] == 20 and data["synthetic"] is True
    assert config_to_dict(example()) == data


def test_overrides_replace_nested_fields_and_skip_none():
    cfg = apply_overrides(example(), {"train.epochs": 3, "train.batch_size": None, "data.count": 10})
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 32 and cfg.data.count == 10
    assert example().train.epochs == 20  # the original is untouched
    with pytest.raises(ValueError, match="train.epoch"):
        apply_overrides(example(), {"train.epoch": 3})
    with pytest.raises(ValueError, match="batch_size"):
        apply_overrides(example(), {"train.batch_size": 0})


@pytest.mark.parametrize("name,cls", [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
                                      ("rmsprop", keras.optimizers.RMSprop), ("sgd", keras.optimizers.SGD)])
def test_make_optimizer(name, cls):
    opt = make_optimizer(TrainConfig(epochs=1, batch_size=1, optimizer=name, learning_rate=0.01, weight_decay=1e-4))
    assert isinstance(opt, cls)
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.01)
    assert opt.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_weight_decay_zero_means_none(weight_decay):
    """AdamW with weight_decay 0 leaves a weight whose gradient is zero unchanged after a step (it
    was silently 0.004 before); with 0.1 it shrinks the weight by lr · wd (decoupled decay)."""
    lr = 0.01
    opt = make_optimizer(TrainConfig(epochs=1, batch_size=1, optimizer="adamw", learning_rate=lr,
                                     weight_decay=weight_decay))
    assert opt.weight_decay == weight_decay
    start = np.array([2.0, -3.0, 0.5], dtype="float32")
    weight = keras.Variable(start)
    opt.apply_gradients([(keras.ops.zeros(weight.shape, dtype=weight.dtype), weight)])
    after = keras.ops.convert_to_numpy(weight)
    np.testing.assert_allclose(after, start * (1.0 - lr * weight_decay), rtol=0, atol=1e-7)
    if weight_decay == 0:
        np.testing.assert_array_equal(after, start)


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(epochs=1, batch_size=1, optimizer="lion")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(epochs=1, batch_size=1, learning_rate=0)


def test_paper2_profiles():
    from brats_keras.configs.paper2 import QUICK_CROP, TABLE_III, TABLE_IV, paper2_config

    paper, quick = paper2_config(), paper2_config(quick=True)
    # the paper's numbers (Table II, §VIII) and the 128³ reference crop
    assert (paper.train.learning_rate, paper.train.batch_size, paper.train.epochs) == (1e-4, 2, 100)
    assert paper.data.input_shape == (128, 128, 128, 3) and paper.data.val_fraction == 0.25
    assert paper.train.jit_compile is True  # XLA: 6.8 GB instead of 19.6 GB at 128³, batch 2 (docs/paper2.md)
    assert "norm_momentum" not in paper.model.options and not paper.data.filter_test_cohort
    # the quick profile changes data, schedule and BN momentum, never the batch size or the networks
    assert quick.data.input_shape == (32, 32, 32, 3) and quick.data.preprocess.crop == QUICK_CROP
    assert quick.train.batch_size == 2 and quick.train.learning_rate == 1e-3 and quick.train.jit_compile == "auto"
    assert quick.model.options["norm_momentum"] == 0.9
    assert {k for k, _ in TABLE_IV} == set(TABLE_III)
    # the external cohort keeps every case unless asked otherwise
    assert paper.data.test_preprocess().min_tumour_fraction is None
    assert paper.data.test_preprocess().crop == paper.data.preprocess.crop
    with pytest.raises(ValueError, match="jit_compile"):
        TrainConfig(epochs=1, batch_size=1, jit_compile="yes")


def test_paper3_profiles_and_variants():
    import dataclasses

    from brats_keras.callbacks import DwellLearningRate
    from brats_keras.configs.base import make_loss, make_metrics
    from brats_keras.configs.paper3 import Paper3Data, paper3_config
    from brats_keras.losses import DiceLoss
    from brats_keras.metrics import DiceScore

    paper, quick = paper3_config(), paper3_config(quick=True)
    assert paper.model.name == quick.model.name == "unet2d_multimodal"
    assert paper.model.options == quick.model.options  # the quick profile never changes the network
    assert paper.data.slices.modalities == ("t1", "t1ce", "t2", "flair") and paper.data.slices.size == 128
    assert paper.train.learning_rate == quick.train.learning_rate and paper.train.optimizer == "adam"
    assert paper.data.correction.shrink_factor == 4 and quick.data.correction.shrink_factor == 8
    pre, raw = paper.data.slices_for("preprocessed"), paper.data.slices_for("raw")
    assert pre.normalization == "none" and raw.normalization == "max"
    assert dataclasses.replace(pre, normalization="max") == raw  # the runs differ only in the input
    callback = DwellLearningRate(**paper.train.dwell.callback_kwargs(), verbose=False)
    assert callback.dwell and callback.patience == 1 and callback.factor == 0.5
    saved = json.loads(json.dumps(config_to_dict(paper)))
    assert saved["train"]["dwell"]["dwell"] is True
    assert saved["train"]["loss"] == {"name": "dice", "options": {"class_ids": [1, 2, 3]}}
    with pytest.raises(ValueError, match="variant"):
        paper.data.slices_for("both")
    loss = make_loss(paper.train.loss)
    assert isinstance(loss, DiceLoss) and loss.get_config()["class_ids"] == [1, 2, 3]
    dice = make_metrics(paper.train.metrics)[1]
    assert isinstance(dice, DiceScore) and dice.name == "soft_dice" and dice.get_config()["soft"] is True
    with pytest.raises(ValueError, match="raw_normalization"):
        Paper3Data(raw_normalization="minmax")
    with pytest.raises(ValueError, match="must all be corrected"):
        Paper3Data(correction=dataclasses.replace(paper.data.correction, modalities=("t1",)))


def test_paper4_profiles_follow_table1():
    from brats_keras.configs.paper4 import MODELS, PAPER_TABLE3, Paper4Data, ScheduleSettings, paper4_config
    from brats_keras.configs.base import make_optimizer

    paper, quick = paper4_config(), paper4_config(quick=True)
    t = paper.train
    assert (t.epochs, t.batch_size, t.optimizer, t.learning_rate) == (500, 8, "adamw", 1e-4)  # Table 1
    assert paper.model.options == {"num_classes": 2, "filters": 24} and paper.data.size == 256
    assert isinstance(make_optimizer(t), keras.optimizers.AdamW)
    assert t.enhancer.pretrain_epochs == 30 and t.schedule.stop_patience == 40  # early stopping on
    assert paper.data.augment.enabled and paper.synthetic is False
    # the quick profile: smaller data and schedule; the same networks apart from the BN momentum
    assert quick.synthetic and quick.data.size == 128 and quick.train.epochs == 12
    assert {k: v for k, v in quick.model.options.items() if k != "norm_momentum"} == paper.model.options
    assert quick.model.options["norm_momentum"] == 0.9 and quick.train.schedule.stop_patience == 0
    assert set(PAPER_TABLE3) <= set(MODELS) and PAPER_TABLE3["unet"]["iou"] > PAPER_TABLE3["unet"]["dice"]  # the audit
    saved = json.loads(json.dumps(config_to_dict(paper)))
    assert saved["data"]["augment"]["zoom"] == [0.9, 1.1] and saved["train"]["enhancer"]["noise"]["kind"] == "rician"
    with pytest.raises(ValueError, match="multiple of 32"):
        Paper4Data(size=100)
    with pytest.raises(ValueError, match="reduce_factor"):
        ScheduleSettings(reduce_factor=1.5)


def test_losses_and_metrics_by_name_in_the_config():
    from brats_keras.configs.base import LossConfig, MetricConfig, make_loss, make_metrics
    from brats_keras.losses import DiceFocalLoss
    from brats_keras.metrics import IoUScore, RegionDice

    loss = make_loss(LossConfig("dice_focal", {"class_weights": [0.25] * 4, "focal_weight": 1.0}))
    assert isinstance(loss, DiceFocalLoss) and loss.get_config()["class_weights"] == [0.25] * 4
    assert make_loss(LossConfig("categorical_crossentropy")) == "categorical_crossentropy"
    built = make_metrics((MetricConfig("accuracy"), MetricConfig("region_dice", {"region": "TC"}),
                          MetricConfig("iou", {"threshold": 0.5, "num_classes": 4, "name": "iou"})))
    assert built[0] == "accuracy" and isinstance(built[1], RegionDice) and built[1].name == "dice_tc"
    assert isinstance(built[2], IoUScore) and built[2].name == "iou" and built[2].threshold == 0.5
    with pytest.raises(ValueError, match="unknown name 'dice_bce'; known: bce_dice, "):
        LossConfig("dice_bce")
    with pytest.raises(ValueError, match="unknown name 'f2'"):
        MetricConfig("f2")
    with pytest.raises(ValueError, match="loss 'dice': .*unexpected keyword argument 'weight'"):
        make_loss(LossConfig("dice", {"weight": 2}))
    with pytest.raises(ValueError, match="metric 'accuracy' takes no options"):
        make_metrics((MetricConfig("accuracy", {"name": "acc"}),))


def test_a_builder_argument_the_model_does_not_take_is_refused_with_the_config():
    from brats_keras.configs.paper1 import paper1_config

    with pytest.raises(ValueError, match="model.options: model 'u_resunet' does not accept 'filtres'; its arguments "
                                         "are: input_shape, num_classes, filters, "):
        apply_overrides(paper1_config(), {"model.options.filtres": 8})
    assert ModelConfig("not_registered", {"anything": 1}).options == {"anything": 1}  # checked when built
