"""Subprocess body of tests/test_mirrored.py: MirroredStrategy on two logical CPU devices against one device.

The logical devices must be configured before TensorFlow starts its runtime, hence a fresh process
(``python tests/mirrored_worker.py MODE ...``); each mode prints one JSON line.

Modes:
  batchnorm          one training step of ``resunet2d`` (batch normalisation) on a global batch of 8: one
                     device, MirroredStrategy with and without synchronised batch norm.
  xla3d              paper 2's forced XLA: ``unet3d_modified`` trained two steps with ``jit_compile=True``
                     under MirroredStrategy and on one device.
  callbacks OUT N S  ``training.fit`` for N epochs under strategy S (``mirrored`` | ``one``) with the dwell
                     callback, early stopping, an epoch table evaluated on test data and the checkpoints;
                     with KILL_AFTER=k the process kills itself after epoch k was checkpointed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from brats_keras.configs.base import LossConfig, ModelConfig, TrainConfig, make_compiled_model  # noqa: E402
from brats_keras.training import RunDir, fit, global_batch_size, select_strategy  # noqa: E402


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def segmentation_batch(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    x[: n // 2] += 1.5  # the two replicas' halves differ in their statistics, as real shards do
    labels = (x[..., 0] > 0.5).astype("int64") + (x[..., -1] > 1.5)
    return x, np.eye(classes, dtype="float32")[np.clip(labels, 0, classes - 1)]


def train_step(strategy, build, init, x, y, steps=1):
    with strategy.scope():
        model = build()
        model.set_weights(init)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x) // steps)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    return model, history.history["loss"][0]


def batchnorm():
    x, y = segmentation_batch(8, (16, 16, 2), 4)
    train = TrainConfig(epochs=1, batch_size=4, optimizer="sgd", learning_rate=0.5, precision="float32",
                        loss=LossConfig("categorical_crossentropy"))
    model_config = ModelConfig("resunet2d", {"filters": 4, "depth": 2})

    def build(sync):
        def make():
            keras.utils.set_random_seed(0)
            return make_compiled_model(model_config, dataclasses.replace(train, sync_batchnorm=sync),
                                       input_shape=(16, 16, 2))
        return make

    init = build(False)().get_weights()
    one, loss_one = train_step(select_strategy("one"), build(False), init, x, y)
    mirrored = select_strategy("mirrored")
    synced, loss_synced = train_step(mirrored, build(True), init, x, y)
    plain, loss_plain = train_step(mirrored, build(False), init, x, y)
    bn = [layer for layer in synced._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync, "batch_norm_layers": len(bn),
        "synchronized": all(layer.synchronized for layer in bn),
        "loss_one": loss_one, "loss_synced": loss_synced, "loss_plain": loss_plain,
        "diff_synced": max_diff(synced.get_weights(), one.get_weights()),
        "diff_plain": max_diff(plain.get_weights(), one.get_weights()),
        "change": max_diff(one.get_weights(), init),
    }))


def xla3d():
    x, y = segmentation_batch(4, (16, 16, 16, 3), 4)
    train = TrainConfig(epochs=1, batch_size=1, learning_rate=1e-3, jit_compile=True, precision="float32",
                        loss=LossConfig("dice_focal", {"class_weights": [0.25] * 4, "focal_weight": 1.0}))

    def build():
        keras.utils.set_random_seed(0)
        return make_compiled_model(ModelConfig("unet3d_modified", {"filters": 2}), train, input_shape=(16, 16, 16, 3))

    init = build().get_weights()
    mirrored = select_strategy("mirrored")
    m, loss_m = train_step(mirrored, build, init, x, y, steps=2)  # the project turns XLA off across replicas
    o, loss_o = train_step(select_strategy("one"), build, init, x, y, steps=2)  # one device: XLA on, as asked

    def forced():  # what Keras does with jit_compile=True across replicas
        model = build()
        model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
        return model

    try:
        train_step(mirrored, forced, init, x, y, steps=2)
        keras_error = None
    except tf.errors.InvalidArgumentError as exc:
        keras_error = str(exc).split("Trying to access resource")[-1].splitlines()[0][:200]
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "jit_compile": [m.jit_compile, o.jit_compile],
                      "loss_mirrored": loss_m, "loss_one": loss_o, "diff": max_diff(m.get_weights(), o.get_weights()),
                      "change": max_diff(o.get_weights(), init), "keras_forced_error": keras_error}))


class Killer(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.after:  # epoch `after` (1-based) has ended and been checkpointed
            os.kill(os.getpid(), signal.SIGKILL)


def callbacks(out, epochs, strategy_name):
    from brats_keras.callbacks import DwellLearningRate, EpochTable, ResumableEarlyStopping

    strategy = select_strategy(strategy_name)
    batch = global_batch_size(4, strategy) if strategy_name == "mirrored" else 8  # the same global batch
    x, y = segmentation_batch(48, (8, 8, 2), 2, seed=1)
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(batch)
    val = tf.data.Dataset.from_tensor_slices((x[32:40], y[32:40])).batch(batch)
    test = tf.data.Dataset.from_tensor_slices((x[40:], y[40:])).batch(batch)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                                  keras.layers.Conv2D(2, 1, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(3.0), loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    dwell = DwellLearningRate(patience=1, stop_patience=3, threshold=0.0, verbose=False)
    stopper = ResumableEarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True)
    table = EpochTable(keys=["accuracy", "loss"], epochs=[1, 2, 4, 6], data=test)
    extra = [Killer(int(os.environ["KILL_AFTER"]))] if os.environ.get("KILL_AFTER") else []
    model, history = fit(build, train, validation_data=val, run=RunDir.create(out, "mirrored_test"), epochs=epochs,
                         callbacks=[dwell, stopper, table, *extra], strategy=strategy, resume=True,
                         tensorboard=False, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "history": history,
                      "dwell": [{k: row[k] for k in ("epoch", "lr", "next_lr", "restored")} for row in dwell.rows],
                      "table": {str(k): v for k, v in table.rows.items()},
                      "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                      "weights": [w.tolist() for w in model.get_weights()]}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "batchnorm":
        batchnorm()
    elif mode == "xla3d":
        xla3d()
    elif mode == "callbacks":
        callbacks(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
