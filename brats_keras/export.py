"""Export a trained model as ``model.keras`` and a TF SavedModel, and check both reload.

The SavedModel has a ``serve`` endpoint (``Model.export(format="tf_saved_model")``) and is loadable
with plain ``tf.saved_model.load`` — no ``brats_keras`` import needed, because the graph is traced.
The ``.keras`` file needs ``import brats_keras.models`` (it registers every custom layer, loss and
metric) or :func:`load_model`, but no ``custom_objects``. Both are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from brats_keras.io_utils import atomic_dir, atomic_path


def save_keras(model: keras.Model, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """TF SavedModel with a ``serve`` signature (TensorFlow backend)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
    return path


def export_model(model: keras.Model, keras_path: str | Path, saved_model_path: str | Path | None) -> dict[str, str]:
    """Write ``model.keras`` and (when ``saved_model_path`` is given) ``saved_model/``."""
    out = {"keras": str(save_keras(model, keras_path))}
    if saved_model_path is not None:
        out["saved_model"] = str(export_saved_model(model, saved_model_path))
    return out


def export_checked(model: keras.Model, keras_path: str | Path, saved_model_path: str | Path | None,
                   sample: np.ndarray) -> dict:
    """:func:`export_model`, then :func:`check_exports` on ``sample``:
    ``{"exports": {...paths}, "export_max_abs_diff": {...}}`` for a run's ``results.json``."""
    exports = export_model(model, keras_path, saved_model_path)
    return {"exports": exports,
            "export_max_abs_diff": check_exports(model, sample, exports["keras"], exports.get("saved_model"))}


def load_model(path: str | Path, *, compile: bool = True) -> keras.Model:
    """``keras.models.load_model`` with every ``brats_keras`` layer, loss and metric registered."""
    import brats_keras.models  # noqa: F401  (registers layers, models, losses and metrics)

    return keras.models.load_model(path, compile=compile)


def check_exports(model: keras.Model, sample: np.ndarray, keras_path: str | Path,
                  saved_model_path: str | Path | None = None) -> dict[str, float]:
    """Largest absolute difference between ``model`` and each reloaded export on ``sample``."""
    expected = keras.ops.convert_to_numpy(model(sample, training=False))
    reloaded = load_model(keras_path)
    diffs = {"keras": float(np.max(np.abs(keras.ops.convert_to_numpy(reloaded(sample, training=False)) - expected)))}
    if saved_model_path is not None:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(saved_model_path))  # keep a reference: serve() holds weak refs
        served = loaded.serve(tf.constant(sample))
        diffs["saved_model"] = float(np.max(np.abs(np.asarray(served) - expected)))
    return diffs
