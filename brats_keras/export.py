"""Export a trained model as ``model.keras`` and a TF SavedModel, check both reload, and load either
back for inference.

The SavedModel has a ``serve`` endpoint (``Model.export(format="tf_saved_model")``) and is loadable
with plain ``tf.saved_model.load`` — no ``brats_keras`` import needed, because the graph is traced.
The ``.keras`` file needs ``import brats_keras.models`` (it registers every custom layer, loss and
metric) or :func:`load_model`, but no ``custom_objects``. Both are written atomically.

Given an :class:`~brats_keras.inference.InferenceSpec` (the pre-processing the model was trained
with), the export records it three times, so whichever file a user copies keeps it: ``inference.json``
beside the model, an entry of the same name inside the ``.keras`` zip archive (Keras ignores entries
it does not know), and ``saved_model/inference.json``. :func:`find_inference_spec` reads it back,
falling back to the run's ``config.json`` for models exported before it existed.

The SavedModel needs TensorFlow, on any backend (JAX exports through ``jax2tf``). Where TensorFlow is
not importable (JAX installed without it), ``model.keras`` is written and checked as always and the
SavedModel is skipped with one printed line; ``inference.json`` and the run's ``results.json`` record
the reason (``saved_model_skipped``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np

import brats_keras.models  # noqa: F401  (registers layers, models, losses and metrics for load_model)
from brats_keras.errors import BratsKerasError
from brats_keras.inference import INFERENCE_FILE, InferenceSpec
from brats_keras.io import atomic_dir, atomic_path, atomic_write_json
from brats_keras.precision import rebuild_in_precision
from brats_keras.runtime import tensorflow_import_error


def _spec_text(spec: InferenceSpec) -> str:
    return json.dumps(spec.to_json(), indent=2) + "\n"


def save_keras(model: keras.Model, path: str | Path, spec: InferenceSpec | None = None,
               record: dict | None = None) -> Path:
    """``model.save`` atomically; with ``spec``, ``inference.json`` is added to the archive (``record``:
    that file's content, the spec's JSON with export notes)."""
    path = Path(path)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        if spec is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(INFERENCE_FILE, _spec_text(spec) if record is None
                                 else json.dumps(record, indent=2) + "\n")
    return path


def export_saved_model(model: keras.Model, path: str | Path, spec: InferenceSpec | None = None) -> Path:
    """TF SavedModel with a ``serve`` signature (TensorFlow backend); with ``spec``, also
    ``<path>/inference.json``."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        if spec is not None:
            (tmp / INFERENCE_FILE).write_text(_spec_text(spec), encoding="utf-8")
    return path


def saved_model_skip_reason() -> str | None:
    """Why a SavedModel cannot be written in this environment (TensorFlow not importable), or ``None``."""
    error = tensorflow_import_error()
    if error is None:
        return None
    return f"TensorFlow is not importable ({error}); the SavedModel export needs it, model.keras does not"


def export_model(model: keras.Model, keras_path: str | Path, saved_model_path: str | Path | None,
                 spec: InferenceSpec | None = None) -> dict[str, str]:
    """Write ``model.keras``, (when ``saved_model_path`` is given) ``saved_model/`` and (with
    ``spec``) ``inference.json`` beside ``model.keras``.

    When TensorFlow is not importable (the JAX backend installed without it) the SavedModel is skipped
    with one printed line; the returned ``saved_model_skipped`` and ``inference.json`` (beside the
    model and inside it) say why."""
    skipped = saved_model_skip_reason() if saved_model_path is not None else None
    if skipped is not None:
        print(f"export: saved_model/ skipped: {skipped}", flush=True)
        saved_model_path = None
    record = None if spec is None else {**spec.to_json(), **({"saved_model_skipped": skipped} if skipped else {})}
    out = {"keras": str(save_keras(model, keras_path, spec, record))}
    if saved_model_path is not None:
        out["saved_model"] = str(export_saved_model(model, saved_model_path, spec))
    if record is not None:
        sidecar = Path(keras_path).with_name(INFERENCE_FILE)
        atomic_write_json(sidecar, record)
        out["inference_spec"] = str(sidecar)
    if skipped is not None:
        out["saved_model_skipped"] = skipped
    return out


def export_checked(model: keras.Model, keras_path: str | Path, saved_model_path: str | Path | None,
                   sample: np.ndarray, spec: InferenceSpec | None = None) -> dict:
    """:func:`export_model`, then :func:`check_exports` on ``sample``:
    ``{"exports": {...paths}, "export_max_abs_diff": {...}}`` for a run's ``results.json``
    (``exports["saved_model_skipped"]``: why there is no SavedModel, when TensorFlow is not importable)."""
    exports = export_model(model, keras_path, saved_model_path, spec)
    return {"exports": exports,
            "export_max_abs_diff": check_exports(model, sample, exports["keras"], exports.get("saved_model"))}


def load_model(path: str | Path, *, compile: bool = True) -> keras.Model:
    """``keras.models.load_model`` with every ``brats_keras`` layer, loss and metric registered."""
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


# --------------------------------------------------------------------------------------------
# Loading an exported model for inference
# --------------------------------------------------------------------------------------------


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def find_inference_spec(model_path: str | Path) -> tuple[InferenceSpec, str]:
    """The pre-processing ``model_path`` (``.keras`` file or ``saved_model/`` folder) was trained
    with, and where it was found: inside the model, ``inference.json`` beside it, or the run's
    ``config.json`` in its folder or the one above. Raises :class:`BratsKerasError` naming the
    places looked at when none holds it."""
    model_path = Path(model_path)
    if not model_path.exists():
        raise BratsKerasError(f"{model_path}: no such model file or folder")
    looked = []

    def parse(text: str, where: str) -> InferenceSpec:
        try:
            return InferenceSpec.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise BratsKerasError(f"{where}: not a valid inference spec ({exc})") from None

    if model_path.suffix == ".keras" and model_path.is_file():
        looked.append(f"{model_path}::{INFERENCE_FILE}")
        try:
            with zipfile.ZipFile(model_path) as archive:
                if INFERENCE_FILE in archive.namelist():
                    return parse(archive.read(INFERENCE_FILE).decode("utf-8"), looked[-1]), looked[-1]
        except zipfile.BadZipFile:
            raise BratsKerasError(f"{model_path}: not a .keras archive (bad zip file)") from None
    inside = model_path / INFERENCE_FILE
    if model_path.is_dir():
        looked.append(str(inside))
        if inside.is_file():
            return parse(inside.read_text(encoding="utf-8"), str(inside)), str(inside)
    folder = model_path.parent
    sidecar = folder / INFERENCE_FILE
    looked.append(str(sidecar))
    if sidecar.is_file():
        return parse(sidecar.read_text(encoding="utf-8"), str(sidecar)), str(sidecar)
    for run_folder in (folder, folder.parent):
        config = run_folder / "config.json"
        looked.append(str(config))
        if config.is_file():
            try:
                return InferenceSpec.from_run_config(json.loads(config.read_text(encoding="utf-8")),
                                                     model=folder.name), str(config)
            except (ValueError, KeyError, TypeError) as exc:
                raise BratsKerasError(f"{config}: cannot tell the model's pre-processing ({exc})") from None
    raise BratsKerasError(
        f"{model_path}: no record of the pre-processing this model was trained with; looked at "
        f"{', '.join(looked)}. Models exported by brats_keras experiments carry {INFERENCE_FILE}; "
        "keep the model in its run folder or copy that file beside it")


class Predictor:
    """An exported model as ``batch → class probabilities`` (NumPy in, NumPy out).

    Batches are cut or zero-padded to ``batch_size``, so a compiled (XLA) function sees one input
    shape and never recompiles for the last, shorter batch. ``input_shape`` excludes the batch axis.
    """

    def __init__(self, fn, input_shape: tuple, batch_size: int, source: str, keep=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self._fn = fn
        self._keep = keep  # e.g. the loaded SavedModel object: its functions hold weak references
        self.input_shape = tuple(input_shape)
        self.batch_size = int(batch_size)
        self.source = source

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        expected = self.input_shape
        if x.ndim != len(expected) + 1 or any(e is not None and e != n for e, n in zip(expected, x.shape[1:])):
            raise ValueError(f"input {x.shape[1:]} does not match the model's {self.input_shape}")
        out = []
        for first in range(0, len(x), self.batch_size):
            chunk = x[first:first + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(keras.ops.convert_to_numpy(self._fn(chunk)), np.float32)[:n])
        return np.concatenate(out)


def accelerator_present() -> bool:
    """Whether the Keras backend sees a GPU (or another non-CPU device)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    return False


def load_predictor(model_path: str | Path, *, batch_size: int = 1, jit_compile: bool = True,
                   precision: str | None = None) -> Predictor:
    """A :class:`Predictor` for ``model.keras`` (any backend) or ``saved_model/`` (TensorFlow).

    ``jit_compile``: XLA-compile the forward pass on TensorFlow (JAX always compiles). On a CPU it
    speeds up 2D models and slows 3D ones down several times (docs/inference.md); the ``predict``
    command chooses per model kind. ``precision``: a dtype policy the ``.keras`` model is rebuilt in
    (:func:`~brats_keras.precision.rebuild_in_precision`; ``None``: the one it was trained in); a
    SavedModel runs as it was traced.
    """
    model_path = Path(model_path)
    if _is_saved_model(model_path):
        if keras.backend.backend() != "tensorflow":
            raise BratsKerasError(f"{model_path}: a SavedModel needs the TensorFlow backend; "
                                  "use the run's model.keras with this backend")
        import tensorflow as tf

        loaded = tf.saved_model.load(str(model_path))
        if not hasattr(loaded, "serve"):
            raise BratsKerasError(f"{model_path}: SavedModel has no 'serve' endpoint")
        specs = loaded.serve.concrete_functions[0].structured_input_signature[0]
        if len(specs) != 1:
            raise BratsKerasError(f"{model_path}: 'serve' takes {len(specs)} inputs; expected one image batch")
        input_shape = tuple(specs[0].shape)[1:]
        fn = tf.function(lambda x: loaded.serve(x), jit_compile=jit_compile)
        return Predictor(fn, input_shape, batch_size, str(model_path), keep=loaded)
    if model_path.suffix == ".keras" and model_path.is_file():
        try:
            model = load_model(model_path, compile=False)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise BratsKerasError(f"{model_path}: cannot load the model ({type(exc).__name__}: {exc})") from None
        if precision is not None:
            model = rebuild_in_precision(model, precision)
        model.compile(jit_compile=bool(jit_compile) or keras.backend.backend() == "jax")  # JAX: never eager
        return Predictor(model.predict_on_batch, tuple(model.input_shape[1:]), batch_size, str(model_path), keep=model)
    raise BratsKerasError(f"{model_path}: not a .keras file or a SavedModel folder (saved_model.pb)")
