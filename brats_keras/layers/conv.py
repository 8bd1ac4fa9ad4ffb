"""Convolution building blocks and the argument checks shared by every layer of the package.

One class covers 2D and 3D: ``spatial_dims`` picks ``Conv2D``/``Conv3D`` (and the matching pooling
and up-sampling layers in the model builders). Tensors are channels-last: ``(batch, H, W, C)`` for
``spatial_dims=2`` and ``(batch, H, W, D, C)`` for ``spatial_dims=3``.

The helpers ``make_conv``, ``make_norm`` and ``make_activation`` are public so model builders use
the same vocabulary (``norm="batch" | "instance" | "none"``, activation names as Keras spells them)
and the same error messages as the layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

SPATIAL_DIMS = (2, 3)
NORMS = ("batch", "instance", "none")
"""Normalisations a block accepts: ``"batch"`` (``BatchNormalization``), ``"instance"``
(``GroupNormalization(groups=-1)``: one group per channel, i.e. instance normalisation), ``"none"``."""

_NO_ACTIVATION = ("none", "linear")


# --------------------------------------------------------------------------------------------
# Argument checks (raise ValueError naming the argument and the bad value)
# --------------------------------------------------------------------------------------------


def check_spatial_dims(spatial_dims) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``ValueError``."""
    if isinstance(spatial_dims, bool) or spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as ``int`` if it is an integer ≥ 1, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_int_tuple(value, name: str, spatial_dims: int) -> tuple[int, ...]:
    """Normalise an int or a length-``spatial_dims`` sequence of positive ints to a tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = tuple(value)
        if len(items) != spatial_dims:
            raise ValueError(
                f"{name} must be an int or a sequence of {spatial_dims} ints for spatial_dims="
                f"{spatial_dims}, got {value!r}"
            )
    else:
        items = (value,) * spatial_dims
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"{name} must hold positive integers, got {value!r}")
    return items


def check_norm(norm) -> str:
    """Return the canonical norm name (``None`` means ``"none"``), else raise ``ValueError``."""
    key = "none" if norm is None else norm
    if not isinstance(key, str) or key.lower() not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (or None), got {norm!r}")
    return key.lower()


def check_activation(activation, name: str = "activation") -> str:
    """Return the activation name if Keras knows it (``None``/``"none"``/``"linear"``: none).

    Only names are accepted (not callables) so every block serialises to plain JSON.
    """
    if activation is None:
        return "linear"
    if not isinstance(activation, str):
        raise ValueError(f"{name} must be the name of a Keras activation (a string), got {activation!r}")
    key = activation.lower()
    if key in _NO_ACTIVATION:
        return "linear"
    try:
        keras.activations.get(key)
    except (ValueError, TypeError):
        raise ValueError(f"{name} {activation!r} is not a Keras activation name (e.g. 'relu', 'leaky_relu')") from None
    return key


def check_dropout(dropout) -> float:
    """Return ``dropout`` as float if it lies in [0, 1), else raise ``ValueError``."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    return float(dropout)


def check_initializer(initializer, name: str = "kernel_initializer"):
    """Return ``initializer`` if Keras can build an initializer from it, else raise ``ValueError``."""
    try:
        keras.initializers.get(initializer)
    except (ValueError, TypeError):
        raise ValueError(f"{name} {initializer!r} is not a Keras initializer") from None
    if isinstance(initializer, keras.initializers.Initializer):
        return keras.initializers.serialize(initializer)
    return initializer


# --------------------------------------------------------------------------------------------
# Layer factories
# --------------------------------------------------------------------------------------------


def conv_class(spatial_dims: int) -> type[keras.layers.Layer]:
    """``keras.layers.Conv2D`` or ``keras.layers.Conv3D``."""
    return {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[check_spatial_dims(spatial_dims)]


def make_conv(spatial_dims: int, filters: int, kernel_size=3, *, strides=1, padding: str = "same",
              use_bias: bool = True, kernel_initializer="glorot_uniform", name: str | None = None):
    """A ``Conv2D``/``Conv3D`` with the package defaults (``padding="same"``)."""
    return conv_class(spatial_dims)(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=kernel_initializer, name=name,
    )


def check_momentum(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"norm_momentum must be a number in [0, 1), got {value!r}")
    return float(value)


def make_norm(norm: str, name: str | None = None, momentum: float = 0.99):
    """The normalisation layer for ``norm`` (channels-last), or ``None`` for ``"none"``.

    ``momentum`` is batch normalisation's moving-average momentum (Keras' default 0.99); it changes
    only the statistics used at inference, not the layer's computation during training.
    """
    norm = check_norm(norm)
    if norm == "batch":
        return keras.layers.BatchNormalization(axis=-1, momentum=momentum, name=name)
    if norm == "instance":
        # One group per channel = instance normalisation (statistics over the spatial axes only).
        return keras.layers.GroupNormalization(groups=-1, axis=-1, name=name)
    return None


def make_activation(activation: str, name: str | None = None):
    """An ``Activation`` layer, or ``None`` when ``activation`` is ``None``/``"none"``/``"linear"``.

    ``"leaky_relu"`` is Keras' ``leaky_relu`` with its default ``negative_slope=0.2``.
    """
    activation = check_activation(activation)
    if activation == "linear":
        return None
    return keras.layers.Activation(activation, name=name)


def build_sequence(layers, input_shape):
    """Build ``layers`` (``None`` entries skipped) one after another; return the final shape."""
    shape = tuple(input_shape)
    for layer in layers:
        if layer is None:
            continue
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def conv_output_shape(input_shape, filters: int, strides: Sequence[int]):
    """Shape after a ``padding="same"`` convolution: spatial sizes ``ceil(n / stride)``."""
    spatial = tuple(None if n is None else -(-n // s) for n, s in zip(input_shape[1:-1], strides))
    return (input_shape[0],) + spatial + (filters,)


def check_input_rank(input_shape, spatial_dims: int, layer_name: str):
    """Raise ``ValueError`` unless ``input_shape`` is ``(batch, *spatial, channels)`` with known channels."""
    if len(input_shape) != spatial_dims + 2:
        raise ValueError(
            f"{layer_name} with spatial_dims={spatial_dims} expects inputs of rank {spatial_dims + 2} "
            f"(batch, {'H, W' if spatial_dims == 2 else 'H, W, D'}, C), got shape {tuple(input_shape)}"
        )
    if input_shape[-1] is None:
        raise ValueError(f"{layer_name} needs a known channel dimension, got shape {tuple(input_shape)}")


# --------------------------------------------------------------------------------------------
# ConvBlock
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="brats_keras")
class ConvBlock(keras.layers.Layer):
    """``repeats`` × (convolution → normalisation → activation), the U-Net "double conv".

    Input ``(batch, H, W, C_in)`` (2D) or ``(batch, H, W, D, C_in)`` (3D); output the same spatial
    size with ``filters`` channels (``padding="same"``, stride 1).

    Dropout placement: a ``Dropout(dropout)`` follows every unit except the last, i.e. it sits
    *between* the convolutions (``conv → norm → act → dropout → conv → norm → act`` for
    ``repeats=2``), as in the widely used BraTS 3D U-Net reference code of paper 2 (Ronneberger
    et al. 2015 put dropout at the end of the contracting path instead; a model builder adds a
    ``Dropout`` after the block for that). With ``repeats=1`` there is no such place, so
    ``dropout > 0`` with ``repeats=1`` is rejected rather than silently ignored.

    Args:
        filters: output channels of every convolution (≥ 1).
        spatial_dims: 2 or 3.
        kernel_size: int or tuple of ``spatial_dims`` ints.
        norm: ``"batch"``, ``"instance"`` or ``"none"`` (``None``). The plain U-Net of papers 1
            and 3 uses ``"none"``; paper 2's "optimized" U-Net uses ``"batch"``.
        activation: Keras activation name, e.g. ``"relu"`` or ``"leaky_relu"`` (paper 4, slope 0.2);
            ``"none"`` for no activation.
        dropout: rate in [0, 1) between the units (see above).
        repeats: number of conv → norm → activation units (≥ 1).
        use_bias: whether the convolutions carry a bias (``True`` as in the papers' reference code).
        kernel_initializer: Keras initializer name or config for the convolutions.
        norm_momentum: batch normalisation's moving-average momentum (Keras' default 0.99).
        name: layer name.
    """

    def __init__(self, filters, spatial_dims=2, kernel_size=3, norm="batch", activation="relu", dropout=0.0,
                 repeats=2, use_bias=True, kernel_initializer="glorot_uniform", norm_momentum=0.99, name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size = check_int_tuple(kernel_size, "kernel_size", self.spatial_dims)
        self.norm = check_norm(norm)
        self.norm_momentum = check_momentum(norm_momentum)
        self.activation = check_activation(activation)
        self.dropout = check_dropout(dropout)
        self.repeats = check_positive_int(repeats, "repeats")
        if self.dropout > 0 and self.repeats == 1:
            raise ValueError(
                f"dropout={dropout!r} needs repeats >= 2: ConvBlock puts dropout between its units; "
                "with repeats=1 add a Dropout layer after the block instead"
            )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = check_initializer(kernel_initializer)

        self.convs, self.norms, self.acts, self.drops = [], [], [], []
        for i in range(self.repeats):
            self.convs.append(make_conv(self.spatial_dims, self.filters, self.kernel_size, use_bias=self.use_bias,
                                        kernel_initializer=self.kernel_initializer, name=f"conv{i}"))
            self.norms.append(make_norm(self.norm, name=f"norm{i}", momentum=self.norm_momentum))
            self.acts.append(make_activation(self.activation, name=f"act{i}"))
            between = i < self.repeats - 1 and self.dropout > 0
            self.drops.append(keras.layers.Dropout(self.dropout, name=f"drop{i}") if between else None)

    def _units(self):
        for i in range(self.repeats):
            yield self.convs[i], self.norms[i], self.acts[i], self.drops[i]

    def build(self, input_shape):
        check_input_rank(input_shape, self.spatial_dims, type(self).__name__)
        shape = tuple(input_shape)
        for unit in self._units():
            shape = build_sequence(unit, shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for conv, norm, act, drop in self._units():
            x = conv(x)
            if norm is not None:
                x = norm(x, training=training)
            if act is not None:
                x = act(x)
            if drop is not None:
                x = drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return conv_output_shape(input_shape, self.filters, (1,) * self.spatial_dims)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, spatial_dims=self.spatial_dims, kernel_size=list(self.kernel_size),
            norm=self.norm, activation=self.activation, dropout=self.dropout, repeats=self.repeats,
            use_bias=self.use_bias, kernel_initializer=self.kernel_initializer, norm_momentum=self.norm_momentum,
        )
        return config
