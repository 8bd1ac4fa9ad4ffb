"""Subprocess body for the distribution, resume and export tests (run as ``python tests/dist_worker.py``).

Modes:
  mirrored      one training step with MirroredStrategy on two logical CPUs and with
                OneDeviceStrategy on the same global batch; prints JSON with loss and weights, and the
                rows predict_on_batch returns for 7 inputs from the mirrored model and its single-process copy.
  multiworker   a few steps under MultiWorkerMirroredStrategy (TF_CONFIG set by the caller).
  resume OUT N  train N epochs into run folder OUT with --resume semantics; with KILL_AFTER=k the
                process kills itself (SIGKILL) after epoch k has been checkpointed.
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 2)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("float32")[:, None]
    return x, y


def build(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def one_step(strategy, init_weights, x, y):
    import tensorflow as tf

    with strategy.scope():
        model = build()
        model.set_weights(init_weights)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    hist = model.fit(ds, epochs=1, verbose=0)
    return hist.history["loss"][0], [w.tolist() for w in model.get_weights()]


def mirrored():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from brats_keras.training import global_batch_size, select_strategy

    x, y = data()
    init = build().get_weights()
    mirrored = select_strategy("mirrored")
    one = select_strategy("one")
    loss_m, w_m = one_step(mirrored, init, x, y)
    loss_o, w_o = one_step(one, init, x, y)
    from brats_keras.training import single_process_model

    with mirrored.scope():
        model = build()
        model.set_weights([np.array(w, "float32") for w in w_m])
    copy = single_process_model(model, mirrored)
    copy_rows = copy.predict_on_batch(x[:7])
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "global_batch": global_batch_size(16, mirrored),
                      "loss_mirrored": loss_m, "loss_one": loss_o,
                      "max_weight_diff": max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(w_m, w_o)),
                      "max_weight_change": max(float(np.max(np.abs(np.array(a) - np.array(b))))
                                               for a, b in zip(w_m, [w.tolist() for w in init])),
                      "mirrored_predict_rows": len(model.predict_on_batch(x[:7])), "copy_predict_rows": len(copy_rows),
                      "copy_max_diff": float(np.max(np.abs(copy_rows - np.asarray(model(x[:7], training=False)))))}))


def multiworker():
    import tensorflow as tf

    from brats_keras.training import global_batch_size, select_strategy

    strategy = select_strategy("auto")
    x, y = data(64)
    batch = global_batch_size(8, strategy)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
    with strategy.scope():
        model = build()
    hist = model.fit(ds, epochs=2, steps_per_epoch=3, verbose=0)
    print(json.dumps({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                      "global_batch": batch, "losses": hist.history["loss"]}))


def resume(out, epochs):
    import keras

    from brats_keras.callbacks import DwellLearningRate
    from brats_keras.training import RunDir, fit

    class Killer(keras.callbacks.Callback):
        def __init__(self, after):
            super().__init__()
            self.after = after

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.after:  # epoch `after` (1-based) has ended and been checkpointed
                os.kill(os.getpid(), signal.SIGKILL)

    import tensorflow as tf

    x, y = data(48)
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)
    callbacks = [DwellLearningRate(patience=1, threshold=0.0, verbose=False)]
    if os.environ.get("KILL_AFTER"):
        callbacks.append(Killer(int(os.environ["KILL_AFTER"])))
    run = RunDir.create(out, "resume_test")
    model, history = fit(build, train, validation_data=val, run=run, epochs=epochs,
                         callbacks=callbacks, resume=True, tensorboard=False, verbose=0)
    print(json.dumps({"epochs": len(history["loss"]), "dwell": callbacks[0].state()}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "mirrored":
        mirrored()
    elif mode == "multiworker":
        multiworker()
    elif mode == "resume":
        resume(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
