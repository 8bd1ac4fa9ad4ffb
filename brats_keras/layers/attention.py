"""Attention layers: the additive attention gate (Oktay et al. 2018) and spatial attention (paper 2).

Tensors are channels-last: ``(batch, H, W, C)`` for ``spatial_dims=2`` and ``(batch, H, W, D, C)``
for ``spatial_dims=3``. Everything is written with ``keras.ops`` and runs on every Keras backend.
"""

from __future__ import annotations

import keras
from keras import ops

from brats_keras.layers.conv import (
    build_sequence,
    check_initializer,
    check_input_rank,
    check_int_tuple,
    check_norm,
    check_positive_int,
    check_spatial_dims,
    make_conv,
    make_norm,
)

INTERPOLATIONS = ("linear", "nearest")
SPATIAL_ATTENTION_ACTIVATIONS = ("sigmoid", "softmax")


# --------------------------------------------------------------------------------------------
# Integer-factor up-sampling (2D and 3D, nearest or linear)
# --------------------------------------------------------------------------------------------


def _slice_axis(x, axis: int, start=None, stop=None):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _upsample_axis_linear(x, axis: int, factor: int):
    """Linear up-sampling by an integer ``factor`` along ``axis``, half-pixel centres, edge clamp.

    Output sample ``i * factor + r`` lies at input coordinate ``i + t_r`` with
    ``t_r = (r + 0.5) / factor - 0.5``; it mixes sample ``i`` with its right neighbour
    (``t_r ≥ 0``) or left neighbour (``t_r < 0``), the border sample repeating itself. This is
    what ``keras.ops.image.resize(..., interpolation="bilinear")`` does per axis.
    """
    if factor == 1:
        return x
    prev = ops.concatenate([_slice_axis(x, axis, 0, 1), _slice_axis(x, axis, None, -1)], axis=axis)
    nxt = ops.concatenate([_slice_axis(x, axis, 1, None), _slice_axis(x, axis, -1, None)], axis=axis)
    phases = []
    for r in range(factor):
        t = (r + 0.5) / factor - 0.5
        phases.append((1.0 - t) * x + t * nxt if t >= 0 else (1.0 + t) * x - t * prev)
    stacked = ops.stack(phases, axis=axis + 1)  # (..., n, factor, ...)
    shape = list(ops.shape(x))
    shape[0] = -1
    shape[axis] = shape[axis] * factor
    return ops.reshape(stacked, shape)


def upsample(x, factor, spatial_dims: int, interpolation: str = "linear"):
    """Up-sample a channels-last tensor by integer factors along its spatial axes.

    Args:
        x: ``(batch, H, W, C)`` or ``(batch, H, W, D, C)``.
        factor: int or tuple of ``spatial_dims`` ints.
        spatial_dims: 2 or 3.
        interpolation: ``"linear"`` (bi-/tri-linear, half-pixel centres, as Oktay et al.'s code and
            ``keras.ops.image.resize``) or ``"nearest"`` (each sample repeated, as ``UpSamplingND``).

    Returns:
        ``(batch, H·f₁, W·f₂[, D·f₃], C)``.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    factors = check_int_tuple(factor, "factor", spatial_dims)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    for axis, f in enumerate(factors, start=1):
        if f == 1:
            continue
        x = ops.repeat(x, f, axis=axis) if interpolation == "nearest" else _upsample_axis_linear(x, axis, f)
    return x


# --------------------------------------------------------------------------------------------
# AttentionGate
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="brats_keras")
class AttentionGate(keras.layers.Layer):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018, eqs. 1–2), 2D or 3D.

    Inputs ``[x, g]``:

    - ``x``: skip-connection features ``(batch, *S, C_x)``, ``S = (H, W)`` or ``(H, W, D)``;
    - ``g``: gating signal from the coarser decoder level ``(batch, *S / s, C_g)``, where the
      sub-sampling factor ``s`` is 2 in the standard Attention U-Net and 1 when both inputs share
      a resolution.

    Computation (``F = inter_filters``)::

        θ = conv(x, kernel = stride = s, no bias)      (batch, *S/s, F)   W_x
        φ = conv1x1(g, bias)                           (batch, *S/s, F)   W_g, b_g
        q = conv1x1(relu(θ + φ), 1 filter, bias)       (batch, *S/s, 1)   ψ, b_ψ
        α = upsample(sigmoid(q), s)                    (batch, *S, 1)     resampled to x's grid
        y = α · x                                      (batch, *S, C_x)   broadcast over channels

    This is the variant of the authors' ``GridAttentionBlock`` code (θ_x as a strided ``s × s``
    convolution, so ``x`` is resampled to ``g``'s grid rather than ``g`` to ``x``'s), with the gate
    resampled back by (bi/tri-)linear interpolation. With ``s = 1`` θ is a 1 × 1 convolution and
    nothing is resampled. The authors' code also passes ``y`` through an output transform
    ``norm(conv1x1(y, C_x))``; that is off by default (the paper's equations end at ``α · x``) and
    switched on with ``output_projection=True``, which is the only place ``norm`` is used.

    ``s`` is inferred in ``build`` from the static spatial sizes (``x`` must be an integer multiple
    of ``g`` along every axis); pass ``subsample`` when the spatial sizes are unknown (``None``).

    Args:
        inter_filters: channels ``F`` of the intermediate space (≥ 1); Oktay et al. use ``C_x / 2``.
        spatial_dims: 2 or 3.
        subsample: ``None`` (infer) or the factor ``s`` (int or tuple of ``spatial_dims`` ints).
        interpolation: ``"linear"`` or ``"nearest"`` resampling of the gate ``α``.
        output_projection: add the output transform ``norm(conv1x1(α · x))``.
        norm: normalisation of the output transform: ``"batch"``, ``"instance"`` or ``"none"``.
        use_bias: bias of φ and ψ (θ never has one, as in the paper: one bias ``b_g`` suffices).
        kernel_initializer: Keras initializer for the convolutions.
        name: layer name.
    """

    def __init__(self, inter_filters, spatial_dims=2, subsample=None, interpolation="linear",
                 output_projection=False, norm="batch", use_bias=True, kernel_initializer="glorot_uniform",
                 name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.inter_filters = check_positive_int(inter_filters, "inter_filters")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.subsample = None if subsample is None else check_int_tuple(subsample, "subsample", self.spatial_dims)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.interpolation = interpolation
        self.output_projection = bool(output_projection)
        self.norm = check_norm(norm)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = check_initializer(kernel_initializer)

        init = self.kernel_initializer
        self.phi_g = make_conv(self.spatial_dims, self.inter_filters, 1, use_bias=self.use_bias,
                               kernel_initializer=init, name="phi_g")
        self.psi = make_conv(self.spatial_dims, 1, 1, use_bias=self.use_bias, kernel_initializer=init, name="psi")
        self.theta_x = None  # its kernel and stride are the sub-sampling factor, known in build
        self.out_conv = self.out_norm = None
        self.factor = None

    def _infer_factor(self, x_shape, g_shape):
        x_spatial, g_spatial = tuple(x_shape[1:-1]), tuple(g_shape[1:-1])
        known = all(n is not None for n in x_spatial + g_spatial)
        if not known:
            if self.subsample is None:
                raise ValueError(
                    f"AttentionGate cannot infer subsample from x {tuple(x_shape)} and g {tuple(g_shape)} "
                    "(unknown spatial sizes); pass subsample"
                )
            return self.subsample
        factor = []
        for nx, ng in zip(x_spatial, g_spatial):
            if ng == 0 or nx % ng:
                raise ValueError(
                    f"AttentionGate needs x's spatial size to be an integer multiple of g's, got x "
                    f"{tuple(x_shape)} and g {tuple(g_shape)}"
                )
            factor.append(nx // ng)
        factor = tuple(factor)
        if self.subsample is not None and self.subsample != factor:
            raise ValueError(
                f"subsample={self.subsample} does not match the inputs: x {tuple(x_shape)} is {factor} "
                f"times g {tuple(g_shape)}"
            )
        return factor

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"AttentionGate expects two inputs [x, g], got input shape {input_shape}")
        x_shape, g_shape = (tuple(s) for s in input_shape)
        check_input_rank(x_shape, self.spatial_dims, "AttentionGate input x")
        check_input_rank(g_shape, self.spatial_dims, "AttentionGate input g")
        self.factor = self._infer_factor(x_shape, g_shape)
        self.theta_x = make_conv(self.spatial_dims, self.inter_filters, self.factor, strides=self.factor,
                                 padding="valid", use_bias=False, kernel_initializer=self.kernel_initializer,
                                 name="theta_x")
        self.theta_x.build(x_shape)
        inter_shape = build_sequence([self.phi_g], g_shape)
        build_sequence([self.psi], inter_shape)
        if self.output_projection:
            self.out_conv = make_conv(self.spatial_dims, x_shape[-1], 1, use_bias=self.use_bias,
                                      kernel_initializer=self.kernel_initializer, name="out_conv")
            self.out_norm = make_norm(self.norm, name="out_norm")
            build_sequence([self.out_conv, self.out_norm], x_shape)
        self.built = True

    def attention_map(self, inputs):
        """The gate ``α`` on ``x``'s grid, ``(batch, *S, 1)``, values in (0, 1)."""
        x, g = inputs
        q = self.psi(ops.relu(self.theta_x(x) + self.phi_g(g)))
        return upsample(ops.sigmoid(q), self.factor, self.spatial_dims, self.interpolation)

    def call(self, inputs, training=None):
        x = inputs[0]
        y = x * ops.cast(self.attention_map(inputs), x.dtype)
        if self.out_conv is not None:
            y = self.out_conv(y)
            if self.out_norm is not None:
                y = self.out_norm(y, training=training)
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            inter_filters=self.inter_filters, spatial_dims=self.spatial_dims,
            subsample=None if self.subsample is None else list(self.subsample), interpolation=self.interpolation,
            output_projection=self.output_projection, norm=self.norm, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
        )
        return config


# --------------------------------------------------------------------------------------------
# SpatialAttention
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="brats_keras")
class SpatialAttention(keras.layers.Layer):
    """Spatial attention of paper 2 (CBAM's spatial module, Woo et al. 2018), 2D or 3D.

    Input ``(batch, *S, C)``; output the same shape::

        m = concat([mean(x, axis=-1, keepdims), max(x, axis=-1, keepdims)])   (batch, *S, 2)
        a = activation(conv(m, 1 filter, kernel_size, padding="same"))        (batch, *S, 1)
        y = a · x                                                             (batch, *S, C)

    ``activation="sigmoid"`` (default) is CBAM's gate. ``activation="softmax"`` is the paper's
    literal wording, applied as Keras applies it, over the last (channel) axis. The map has a
    single channel, so ``softmax(a) = exp(a) / exp(a) = 1`` everywhere and the module returns its
    input unchanged whatever its weights: paper 2's "spatial attention" is a no-op as written
    (REPLICATION.md, paper 2 audit; proved in ``tests/test_layers.py``).

    Args:
        spatial_dims: 2 or 3 (paper 2 is 3D).
        kernel_size: kernel of the convolution (int or tuple); 7 as in CBAM (the paper is silent).
        activation: ``"sigmoid"`` or ``"softmax"``.
        use_bias: bias of the convolution.
        kernel_initializer: Keras initializer for the convolution.
        name: layer name.
    """

    def __init__(self, spatial_dims=3, kernel_size=7, activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size = check_int_tuple(kernel_size, "kernel_size", self.spatial_dims)
        if activation not in SPATIAL_ATTENTION_ACTIVATIONS:
            raise ValueError(f"activation must be one of {SPATIAL_ATTENTION_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = check_initializer(kernel_initializer)
        self.conv = make_conv(self.spatial_dims, 1, self.kernel_size, use_bias=self.use_bias,
                              kernel_initializer=self.kernel_initializer, name="conv")

    def build(self, input_shape):
        check_input_rank(input_shape, self.spatial_dims, type(self).__name__)
        self.conv.build(tuple(input_shape[:-1]) + (2,))
        self.built = True

    def attention_map(self, inputs):
        """The map ``a``, ``(batch, *S, 1)``."""
        pooled = ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1
        )
        logits = self.conv(pooled)
        if self.activation == "softmax":
            return ops.softmax(logits, axis=-1)
        return ops.sigmoid(logits)

    def call(self, inputs):
        return inputs * ops.cast(self.attention_map(inputs), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            spatial_dims=self.spatial_dims, kernel_size=list(self.kernel_size), activation=self.activation,
            use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
        )
        return config
