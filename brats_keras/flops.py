"""Analytic FLOP count of a Keras model's forward pass (``python -m brats_keras.bench train``).

A FLOP is one multiply or one add: every multiply-accumulate (MAC) counts 2. Only the layers that
hold a model's arithmetic are counted, each from its kernel's shape and the shapes it is called on:

* ``Conv1D/2D/3D``: ``2 · output positions · prod(kernel shape)`` (kernel ``(k…, C_in/groups, C_out)``);
* ``Conv1D/2D/3DTranspose``: ``2 · input positions · prod(kernel shape)`` (every input voxel is
  scattered through the whole ``(k…, C_out, C_in)`` kernel);
* ``DepthwiseConv1D/2D``, ``SeparableConv1D/2D``: the depthwise part per output element, plus the
  pointwise convolution;
* ``Dense``: ``2 · input rows · C_in · units``;
* ``SimpleRNN``, ``GRU``, ``LSTM`` (also inside ``Bidirectional``): ``2 · timesteps · (prod(kernel) +
  prod(recurrent kernel))``; ``ConvLSTM1D/2D/3D``: the input and the recurrent convolution at every
  timestep and output position.

Bias additions, activations, normalisation, pooling, up-sampling, concatenation and the loss are
elementwise or cheap next to these and are not counted (the usual convention of papers that quote
GFLOPs). A layer that holds a weight matrix of a type not listed is named in
:attr:`FlopCount.uncounted`, so a model the counter does not cover says so instead of looking cheap.

The count walks nested models and the sub-layers of custom layers: the model is traced once on a
symbolic batch of one (no arithmetic runs) with every counted layer's ``call`` wrapped to record the
shapes it sees, so a layer called twice counts twice. A training step is taken as 3× the forward
pass (forward, gradient with respect to the activations, gradient with respect to the weights):
:data:`TRAIN_STEP_FACTOR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
from keras.src.backend import compute_output_spec  # Keras' own symbolic trace (Layer.compute_output_spec's)

TRAIN_STEP_FACTOR = 3
"""FLOPs of one training step per sample, in forward passes (the usual forward + 2× backward convention)."""
CONVENTION = ("FLOPs = 2 x multiply-accumulates of the Conv/ConvTranspose/Dense (and recurrent) layers, "
              "bias, activations, normalisation and pooling not counted; training step = 3 x forward")
"""One line for reports that quote these counts."""


@dataclass
class FlopCount:
    """A model's forward FLOPs per sample, by layer type."""

    forward: int = 0
    """FLOPs of one forward pass of one sample."""
    by_type: dict[str, int] = field(default_factory=dict)
    """``{"Conv2D": ..., "Conv2DTranspose": ...}``: the forward FLOPs per layer class."""
    calls: int = 0
    """Counted layer calls in one forward pass."""
    uncounted: list[str] = field(default_factory=list)
    """Classes of the layers holding a weight matrix that no rule above covers (empty for the paper models)."""

    def train_step(self, batch_size: int) -> int:
        """FLOPs of one training step on ``batch_size`` samples (:data:`TRAIN_STEP_FACTOR` × forward)."""
        return TRAIN_STEP_FACTOR * self.forward * batch_size


def _prod(values) -> int:
    return math.prod(int(v) for v in values)


def _shape(value) -> tuple[int, ...]:
    while isinstance(value, (list, tuple)):  # RNNs with return_state return [output, *states]
        value = value[0]
    dims = tuple(value.shape)
    if any(d is None for d in dims):
        raise ValueError(f"flops: a layer saw the unknown shape {dims}; give count_flops the input shape")
    return tuple(int(d) for d in dims)


def _first_input(args, kwargs):
    if args:
        return args[0]
    for key in ("inputs", "sequences", "x"):
        if key in kwargs:
            return kwargs[key]
    raise ValueError("flops: a counted layer was called without an input")


_RNN = (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM)
_CONV_LSTM = (keras.layers.ConvLSTM1D, keras.layers.ConvLSTM2D, keras.layers.ConvLSTM3D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
COUNTED = (*_RNN, *_CONV_LSTM, *_TRANSPOSE, *_SEPARABLE, *_DEPTHWISE, *_CONV, keras.layers.Dense)
"""The layer classes :func:`count_flops` counts (subclasses included)."""


def _channels(layer, shape: tuple[int, ...]) -> int:
    return shape[1] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[-1]


def layer_flops(layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """FLOPs of one call of a :data:`COUNTED` layer on a batch of ``in_shape`` giving ``out_shape``
    (batch included: the caller divides by it)."""
    if isinstance(layer, _RNN):
        cell = layer.cell
        batch, steps = in_shape[0], in_shape[1]
        return 2 * batch * steps * (_prod(cell.kernel.shape) + _prod(cell.recurrent_kernel.shape))
    if isinstance(layer, _CONV_LSTM):
        cell = layer.cell
        batch, steps = in_shape[0], in_shape[1]
        per_step = out_shape[2:] if layer.return_sequences else out_shape[1:]
        positions = _prod(per_step) // layer.filters  # spatial positions of one step's hidden state
        return 2 * batch * steps * positions * (_prod(cell.kernel.shape) + _prod(cell.recurrent_kernel.shape))
    if isinstance(layer, _TRANSPOSE):
        positions = _prod(in_shape) // _channels(layer, in_shape)
        return 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, _SEPARABLE):
        positions = _prod(out_shape) // layer.filters
        return 2 * positions * (_prod(layer.depthwise_kernel.shape) + _prod(layer.pointwise_kernel.shape))
    if isinstance(layer, _DEPTHWISE):
        return 2 * _prod(out_shape) * _prod(layer.kernel.shape[:-2])
    if isinstance(layer, _CONV):
        positions = _prod(out_shape) // layer.filters
        return 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        rows = _prod(in_shape) // int(layer.kernel.shape[0])
        return 2 * rows * _prod(layer.kernel.shape)
    raise TypeError(f"flops: no rule for {type(layer).__name__}")


def _sublayers(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _uncounted(model) -> list[str]:
    """Classes of leaf layers with a weight of rank >= 2 outside the counted layers (and their cells)."""
    inside = set()
    for layer in _sublayers(model):
        if isinstance(layer, COUNTED):
            inside.update(id(sub) for sub in _sublayers(layer))
    names = set()
    for layer in _sublayers(model):
        if isinstance(layer, COUNTED) or id(layer) in inside or _sublayers(layer):
            continue
        if any(len(w.shape) >= 2 for w in layer.weights):
            names.add(type(layer).__name__)
    return sorted(names)


def count_flops(model: keras.Model, input_shape=None) -> FlopCount:
    """The forward FLOPs per sample of ``model`` (module docstring for what counts).

    ``input_shape`` is one sample's shape (no batch axis), or a list of them for a model of several
    inputs; by default the model's own input shapes, which must then be fully known.
    """
    if input_shape is None:
        shapes = [tuple(t.shape[1:]) for t in model.inputs]
    elif input_shape and isinstance(input_shape[0], (list, tuple)):
        shapes = [tuple(s) for s in input_shape]
    else:
        shapes = [tuple(input_shape)]
    if any(d is None for s in shapes for d in s):
        raise ValueError(f"flops: input shape {shapes} has unknown sizes; give count_flops the input shape")
    dtypes = [getattr(t, "dtype", "float32") for t in model.inputs] if model.inputs else ["float32"] * len(shapes)
    symbols = [keras.KerasTensor((1, *s), dtype=d) for s, d in zip(shapes, dtypes)]

    records: list[tuple[object, tuple[int, ...], tuple[int, ...]]] = []
    layers = [layer for layer in _sublayers(model) if isinstance(layer, COUNTED)]

    def recording(layer, call):
        def call_and_record(*args, **kwargs):
            outputs = call(*args, **kwargs)
            records.append((layer, _shape(_first_input(args, kwargs)), _shape(outputs)))
            return outputs
        return call_and_record

    for layer in layers:
        object.__setattr__(layer, "call", recording(layer, layer.call))
    try:
        compute_output_spec(model, symbols[0] if len(symbols) == 1 else symbols)
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")

    count = FlopCount(uncounted=_uncounted(model))
    for layer, in_shape, out_shape in records:
        flops = layer_flops(layer, in_shape, out_shape) // in_shape[0]
        name = type(layer).__name__
        count.by_type[name] = count.by_type.get(name, 0) + flops
        count.forward += flops
        count.calls += 1
    return count
