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
        name="paperX", paper="000.txt", data=SliceSettings(), models={"unet2d": ModelConfig("unet2d", {"filters": 32})},
        train=TrainConfig(epochs=20, batch_size=32, learning_rate=1e-3), synthetic=True)


def test_saved_json_holds_every_field(tmp_path):
    save_config(tmp_path / "config.json", example())
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["data"]["modalities"] == ["flair", "t1ce"] and data["data"]["start"] == 22
    # every setting of the builder is written, with the builder's defaults where the config set none
    assert data["models"] == {"unet2d": {"name": "unet2d", "options": {
        "num_classes": 4, "filters": 32, "depth": 4, "activation": "relu", "output_activation": "softmax",
        "kernel_initializer": "he_normal"}}}
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
    assert {m.options.norm_momentum for k, m in paper.models.items() if k != "unet3d_simple"} == {0.99}
    assert not hasattr(paper.models["unet3d_simple"].options, "norm_momentum")  # no normalisation to tune
    assert not paper.data.filter_test_cohort
    # the quick profile changes data, schedule and BN momentum, never the batch size or the networks
    assert quick.data.input_shape == (32, 32, 32, 3) and quick.data.preprocess.crop == QUICK_CROP
    assert quick.train.batch_size == 2 and quick.train.learning_rate == 1e-3 and quick.train.jit_compile == "auto"
    assert {m.options.norm_momentum for k, m in quick.models.items() if k != "unet3d_simple"} == {0.9}
    assert [m.options.filters for m in paper.models.values()] == [16, 16, 16]
    attention = paper.models["unet3d_spatial_attention"].options
    assert attention.attention_activation == "sigmoid" and attention.attention_in_decoder is False
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
    assert list(paper.models) == list(quick.models) == ["unet2d_multimodal"]
    assert paper.models == quick.models  # the quick profile never changes the network
    assert paper.models["unet2d_multimodal"].options.filters == 32
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
    import dataclasses

    from brats_keras.configs.paper4 import MODELS, PAPER_TABLE3, Paper4Data, ScheduleSettings, paper4_config
    from brats_keras.configs.base import make_optimizer

    paper, quick = paper4_config(), paper4_config(quick=True)
    t = paper.train
    assert (t.epochs, t.batch_size, t.optimizer, t.learning_rate) == (500, 8, "adamw", 1e-4)  # Table 1
    assert {k: (m.name, m.options.num_classes, m.options.filters) for k, m in paper.models.items()} == {
        k: (name, 2, 24) for k, name in MODELS.items()} and paper.data.size == 256
    assert paper.models["proposed"].options.enhancer_units == 16
    assert isinstance(make_optimizer(t), keras.optimizers.AdamW)
    assert t.enhancer.pretrain_epochs == 30 and t.schedule.stop_patience == 40  # early stopping on
    assert paper.data.augment.enabled and paper.synthetic is False
    # the quick profile: smaller data and schedule; the same networks apart from the BN momentum
    assert quick.synthetic and quick.data.size == 128 and quick.train.epochs == 12
    for key, model in quick.models.items():
        assert model.options.norm_momentum == 0.9 and paper.models[key].options.norm_momentum == 0.99
        assert dataclasses.replace(model.options, norm_momentum=0.99) == paper.models[key].options, key
    assert quick.train.schedule.stop_patience == 0
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


def test_model_settings_are_typed_per_builder_and_checked_when_the_config_is_made():
    from brats_keras.configs.paper1 import paper1_config
    from brats_keras.models.registry import settings_class

    settings = paper1_config().models["u_resunet"].options
    assert type(settings) is settings_class("u_resunet") and type(settings).__name__ == "UResunetSettings"
    assert (settings.filters, settings.cascade_input, settings.norm_momentum) == (32, "features", 0.99)
    with pytest.raises(ValueError, match="no field 'filtres' in UResunetSettings \\(fields: num_classes, filters, "
                                         "cascade_input, "):
        apply_overrides(paper1_config(), {"models.u_resunet.options.filtres": 8})
    with pytest.raises(ValueError, match="model 'u_resunet' has no setting 'filtres'; its settings are: num_classes, "
                                         "filters, cascade_input, "):
        ModelConfig("u_resunet", {"filtres": 8})
    with pytest.raises(ValueError, match="filters of model 'unet2d': expected int, got '8'"):
        ModelConfig("unet2d", {"filters": "8"})
    with pytest.raises(ValueError, match="norm_momentum of model 'resunet2d': expected float, got True"):
        ModelConfig("resunet2d", {"norm_momentum": True})
    with pytest.raises(ValueError, match="unknown model 'not_registered'"):
        ModelConfig("not_registered", {"anything": 1})
    with pytest.raises(ValueError, match="settings of model 'unet2d' given for model 'resunet2d'"):
        ModelConfig("resunet2d", ModelConfig("unet2d").options)
    # a JSON list becomes the tuple the builder's default is, an int a float
    three_d = ModelConfig("unet3d_modified", {"dropout": [0, 0, 0.1, 0.1, 0.2], "norm_momentum": 1})
    assert three_d.options.dropout == (0, 0, 0.1, 0.1, 0.2) and three_d.options.norm_momentum == 1.0
    # a variant takes only the settings that mean something for it: no attention or normalisation in the simple one
    assert "attention_activation" not in {f for f in vars(ModelConfig("unet3d_simple").options)}
    assert "norm_momentum" not in vars(ModelConfig("unet3d_simple").options)


def test_a_star_path_sets_every_model_that_has_the_setting():
    from brats_keras.configs.base import get_path
    from brats_keras.configs.paper4 import paper4_config

    config = apply_overrides(paper4_config(), {"models.*.options.filters": 8, "models.proposed.options.enhancer_units": 4})
    assert {m.options.filters for m in config.models.values()} == {8}
    assert get_path(config, "models.*.options.filters") == 8
    assert get_path(config, "models.*.options.enhancer_units") == 4  # only the proposed model has it
    mixed = apply_overrides(config, {"models.unet.options.filters": 16})
    assert get_path(mixed, "models.*.options.filters") == {"unet": 16, "attention_unet": 8, "res_attention_unet": 8,
                                                           "effunet": 8, "proposed": 8}
    with pytest.raises(ValueError, match="no entry of 'models' has 'options.filtres'"):
        apply_overrides(config, {"models.*.options.filtres": 8})
    with pytest.raises(ValueError, match="no entry 'unet3d' \\(entries: unet, attention_unet, "):
        apply_overrides(config, {"models.unet3d.options.filters": 8})


def test_a_config_naming_another_model_takes_that_builders_settings():
    from brats_keras.configs.base import config_from_dict
    from brats_keras.configs.paper3 import paper3_config

    template = paper3_config()
    changed = config_from_dict(template, {"models": {"unet2d_multimodal": {"name": "resunet2d",
                                                                           "options": {"filters": 8}}}})
    model = changed.models["unet2d_multimodal"]
    assert model.name == "resunet2d" and model.options.filters == 8 and model.options.norm_momentum == 0.99
    with pytest.raises(ValueError, match="config.models.unet2d_multimodal.options.norm_momentum: no such field"):
        config_from_dict(template, {"models": {"unet2d_multimodal": {"options": {"norm_momentum": 0.9}}}})
    with pytest.raises(ValueError, match="config.models.unet: no such entry"):
        config_from_dict(template, {"models": {"unet": {}}})
