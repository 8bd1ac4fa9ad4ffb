"""What every model module shares: argument checks of the builders, the block summary, and the
offline handling of ``keras.applications``' ImageNet weights.

Builders take channels-last inputs ``(batch, *spatial, C)`` whose spatial sizes are divisible by
``2 ** depth``; :func:`check_model_args` validates that and the other shared arguments with one set
of error messages. Layer names follow ``{prefix}_{block}[_{helper}]`` (``enc1``, ``enc2_pool``,
``bridge``, ``dec1_up``, ``dec1_concat``, ``head``, ...), which :func:`block_summary` groups into a
short Markdown table.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import keras

from brats_keras.errors import BratsKerasError
from brats_keras.layers.conv import check_activation, check_positive_int, check_spatial_dims


def check_input_shape(input_shape, spatial_dims: int, depth: int, scale: int = 2) -> tuple[int, ...]:
    """Validate a builder's ``input_shape``; return it as a tuple.

    ``(H, W, C)`` for ``spatial_dims=2``, ``(H, W, D, C)`` for 3: positive integers, the spatial sizes
    divisible by ``scale ** depth`` (``depth`` down-sampling steps of factor ``scale``). Raises
    ``ValueError`` naming ``input_shape`` and the bad value.
    """
    layout = "(H, W, C)" if spatial_dims == 2 else "(H, W, D, C)"
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != spatial_dims + 1
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in input_shape)):
        raise ValueError(
            f"input_shape must be {layout} with {spatial_dims + 1} positive integers, got {input_shape!r}"
        )
    multiple = scale ** depth
    if any(n % multiple for n in input_shape[:-1]):
        raise ValueError(
            f"input_shape {tuple(input_shape)!r}: the spatial sizes must be divisible by {scale}**depth = {multiple} "
            f"(depth={depth} pooling steps)"
        )
    return tuple(input_shape)


def check_name(name, argument: str = "name") -> str:
    """Return ``name`` if it is a non-empty string, else raise ``ValueError`` naming ``argument``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument} must be a non-empty string, got {name!r}")
    return name


def check_model_args(input_shape, num_classes, filters, depth, activation, output_activation, name, *,
                     spatial_dims: int = 2):
    """Validate the builders' shared arguments; return them normalised.

    ``input_shape`` is ``(H, W, C)`` for ``spatial_dims=2`` and ``(H, W, D, C)`` for 3, every size a
    positive integer and the spatial ones divisible by ``2 ** depth`` (:func:`check_input_shape`).
    Raises ``ValueError`` naming the argument and the bad value.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    depth = check_positive_int(depth, "depth")
    input_shape = check_input_shape(input_shape, spatial_dims, depth)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    filters = check_positive_int(filters, "filters")
    activation = check_activation(activation, "activation")
    output_activation = check_activation(output_activation, "output_activation")
    return input_shape, num_classes, filters, depth, activation, output_activation, check_name(name)


# --------------------------------------------------------------------------------------------
# Compact summary
# --------------------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^(.*_(?:enc\d+|bridge|dec\d+|head))(?:_(?:pool|attention|up|concat|dropout))?$")


def block_of(layer_name: str) -> str:
    """The block a layer belongs to: ``"unet2d_dec1_up"`` → ``"unet2d_dec1"``; other names unchanged."""
    match = _BLOCK_RE.match(layer_name)
    return match.group(1) if match else layer_name


def _format_shape(shape) -> str:
    return "×".join("?" if n is None else str(n) for n in tuple(shape)[1:])


def block_summary(model: keras.Model) -> str:
    """A Markdown table with one row per block: name, layers, output shape, parameters.

    ``model`` is a functional model whose layers are each called once (as this package's are).
    Consecutive layers whose names share a block (``block_of``: the helper layers ``_pool``,
    ``_attention``, ``_up``, ``_concat`` and ``_dropout`` join their block) form one row; the output
    shape (batch axis dropped) is the block's last layer's (all of them, comma-separated, for a nested
    model with several outputs such as paper 4's EfficientNet encoder); parameters count trainable and
    non-trainable weights (batch-norm moving statistics included), as ``model.count_params()``.
    A final row gives the total.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise ValueError(f"model must be a built keras.Model, got {type(model).__name__}")
    rows: list[list] = []  # [block, [layer class names], shape, params]
    for layer in model.layers:
        block = block_of(layer.name)
        kind = type(layer).__name__
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        shape = ", ".join(_format_shape(o.shape) for o in outputs)  # a nested encoder has several
        params = layer.count_params() if layer.built else 0
        if rows and rows[-1][0] == block:
            rows[-1][1].append(kind)
            rows[-1][2] = shape
            rows[-1][3] += params
        else:
            rows.append([block, [kind], shape, params])
    lines = ["| block | layers | output shape | params |", "|---|---|---|---:|"]
    for block, kinds, shape, params in rows:
        lines.append(f"| `{block}` | {' + '.join(kinds)} | {shape} | {params:,} |")
    lines.append(f"| **total** | | | **{model.count_params():,}** |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# keras.applications ImageNet weights, offline
# --------------------------------------------------------------------------------------------

WEIGHT_CHOICES = ("auto", "imagenet", None)
ENCODER_WEIGHTS_FLAG = {"auto": "auto", "imagenet": "imagenet", "none": None}
"""``--encoder-weights`` (papers 4 and 5): the flag's spellings → ``weights`` of :func:`resolve_imagenet_weights`."""


def imagenet_weights_file(variant: str) -> Path:
    """Where ``keras.applications.EfficientNet<variant>(include_top=False, weights="imagenet")`` keeps
    its download: ``$KERAS_HOME/models/efficientnet<variant>_notop.h5`` (default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / f"efficientnet{variant.lower()}_notop.h5"


def resolve_imagenet_weights(weights, variant: str) -> str | None:
    """``"imagenet"`` when EfficientNet``variant``'s ImageNet weights may be used, ``None`` for random.

    ``"auto"`` uses them only if the file is already on disk (this never downloads) and warns that
    the network is random otherwise; ``"imagenet"`` insists and raises a clear error when the file
    is missing (no network access is assumed); ``None`` is random.
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    if weights is None:
        return None
    path = imagenet_weights_file(variant)
    name = f"EfficientNet{variant.upper()}"
    if path.is_file():
        return "imagenet"
    if weights == "imagenet":
        raise BratsKerasError(
            f"{name} ImageNet weights not found at {path}: this machine cannot download them. Copy {path.name} "
            "(from https://storage.googleapis.com/keras-applications/) there, or pass weights='auto' / None to "
            "train from a random initialisation")
    warnings.warn(f"{name} ImageNet weights not found at {path} (nothing is downloaded): the network starts from "
                  "a random initialisation", stacklevel=3)
    return None


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> keras.Model:
    """Give every ``BatchNormalization`` of ``model`` (nested models included) ``momentum``; Keras
    reads it at call time and saves it in the layer's config. For ``keras.applications`` bases, whose
    builders take no momentum (0.99). Returns ``model``."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
    return model


def set_batch_norm_synchronized(model: keras.Model, synchronized: bool = True) -> keras.Model:
    """Make every ``BatchNormalization`` of ``model`` (nested models included) compute its training
    statistics over the global batch of all replicas (``synchronized``; Keras reads it at call time).
    TensorFlow only: under JAX's ``keras.distribution.DataParallel`` one program sees the whole
    sharded batch, so its statistics are global already, and Keras refuses the flag — the model is
    returned unchanged there. Returns ``model``."""
    if keras.backend.backend() != "tensorflow":
        return model
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
    return model
