"""Residual blocks (He et al. 2016) for the ResUNet of paper 1 and the residual U-Net of paper 5."""

from __future__ import annotations

import keras

from brats_keras.layers.conv import (
    build_sequence,
    check_activation,
    check_dropout,
    check_initializer,
    check_input_rank,
    check_int_tuple,
    check_norm,
    check_positive_int,
    check_spatial_dims,
    conv_output_shape,
    make_activation,
    make_conv,
    check_momentum,
    make_norm,
)

SHORTCUTS = ("auto", "projection")


@keras.saving.register_keras_serializable(package="brats_keras")
class ResidualBlock(keras.layers.Layer):
    """Two-convolution residual block, pre-activation (default) or original post-activation.

    Input ``(batch, H, W, C_in)`` / ``(batch, H, W, D, C_in)``; output
    ``(batch, ceil(H/s), ceil(W/s)[, ceil(D/s)], filters)`` for stride ``s``.

    ``preactivation=True`` (He et al. 2016, "Identity mappings in deep residual networks"; the
    ResUNet of Zhang et al. 2018 used by paper 1)::

        h = conv3x3(act(norm(x)), strides)      # the first convolution carries the stride
        h = conv3x3(dropout(act(norm(h))))
        y = h + shortcut(x)

    With ``stem=True`` the leading ``act(norm(x))`` is skipped: ``conv → norm → act → conv`` plus
    the shortcut, the ResUNet's first encoder block (paper 1: "conv, BN, ReLU, conv").

    ``preactivation=False`` (He et al. 2015, original ResNet; paper 5's "BN + ReLU" residual
    U-Net)::

        h = dropout(act(norm(conv3x3(x, strides))))
        h = norm(conv3x3(h))
        y = act(h + shortcut(x))

    Shortcut: the identity when ``C_in == filters`` and every stride is 1; otherwise a projection,
    ``norm(conv1x1(x, strides))`` taken from the block's raw input, as in the ResUNet reference.
    ``shortcut="projection"`` forces the projection even when the identity would fit (the ResUNet
    reference code projects in every block). The decision needs ``C_in``, so the shortcut layers
    are created in ``build``.

    Args:
        filters: output channels (≥ 1).
        spatial_dims: 2 or 3.
        kernel_size: kernel of the two main convolutions (int or tuple).
        strides: stride of the first convolution and of the projection (int or tuple).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: Keras activation name.
        preactivation: pre-activation (True) or post-activation (False) ordering, see above.
        stem: skip the input's norm → activation (pre-activation blocks only).
        shortcut: ``"auto"`` (identity when shapes allow) or ``"projection"``.
        dropout: rate in [0, 1) between the two convolutions (Zagoruyko & Komodakis 2016).
        use_bias: whether the convolutions carry a bias.
        kernel_initializer: Keras initializer for the convolutions.
        norm_momentum: batch normalisation's moving-average momentum (Keras' default 0.99).
        name: layer name.
    """

    def __init__(self, filters, spatial_dims=2, kernel_size=3, strides=1, norm="batch", activation="relu",
                 preactivation=True, stem=False, shortcut="auto", dropout=0.0, use_bias=True,
                 kernel_initializer="glorot_uniform", norm_momentum=0.99, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.norm_momentum = check_momentum(norm_momentum)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size = check_int_tuple(kernel_size, "kernel_size", self.spatial_dims)
        self.strides = check_int_tuple(strides, "strides", self.spatial_dims)
        self.norm = check_norm(norm)
        self.activation = check_activation(activation)
        self.preactivation = bool(preactivation)
        self.stem = bool(stem)
        if self.stem and not self.preactivation:
            raise ValueError("stem=True applies to pre-activation blocks only; got preactivation=False")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.shortcut = shortcut
        self.dropout = check_dropout(dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = check_initializer(kernel_initializer)

        conv_kwargs = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer)
        self.conv1 = make_conv(self.spatial_dims, self.filters, self.kernel_size, strides=self.strides,
                               name="conv1", **conv_kwargs)
        self.conv2 = make_conv(self.spatial_dims, self.filters, self.kernel_size, name="conv2", **conv_kwargs)
        self.norm1 = make_norm(self.norm, name="norm1", momentum=self.norm_momentum)
        self.act1 = make_activation(self.activation, name="act1")
        self.drop = keras.layers.Dropout(self.dropout, name="drop") if self.dropout > 0 else None
        if self.preactivation:
            has_input_preact = not self.stem
            self.norm0 = make_norm(self.norm, name="norm0", momentum=self.norm_momentum) if has_input_preact else None
            self.act0 = make_activation(self.activation, name="act0") if has_input_preact else None
            self.norm2 = self.act_out = None
        else:
            self.norm0 = self.act0 = None
            self.norm2 = make_norm(self.norm, name="norm2", momentum=self.norm_momentum)
            self.act_out = make_activation(self.activation, name="act_out")
        self.shortcut_conv = self.shortcut_norm = None

    def needs_projection(self, in_channels: int) -> bool:
        """Whether a block fed ``in_channels`` channels uses the projection shortcut."""
        return self.shortcut == "projection" or in_channels != self.filters or any(s != 1 for s in self.strides)

    def build(self, input_shape):
        check_input_rank(input_shape, self.spatial_dims, type(self).__name__)
        shape = tuple(input_shape)
        if self.needs_projection(shape[-1]):
            self.shortcut_conv = make_conv(self.spatial_dims, self.filters, 1, strides=self.strides,
                                           use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                                           name="shortcut_conv")
            self.shortcut_norm = make_norm(self.norm, name="shortcut_norm", momentum=self.norm_momentum)
            build_sequence([self.shortcut_conv, self.shortcut_norm], shape)
        build_sequence([self.norm0, self.act0, self.conv1, self.norm1, self.act1, self.drop, self.conv2,
                        self.norm2, self.act_out], shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.shortcut_conv is not None:
            skip = self.shortcut_conv(x)
            if self.shortcut_norm is not None:
                skip = self.shortcut_norm(skip, training=training)
        else:
            skip = x
        h = x
        if self.norm0 is not None:
            h = self.norm0(h, training=training)
        if self.act0 is not None:
            h = self.act0(h)
        h = self.conv1(h)
        if self.norm1 is not None:
            h = self.norm1(h, training=training)
        if self.act1 is not None:
            h = self.act1(h)
        if self.drop is not None:
            h = self.drop(h, training=training)
        h = self.conv2(h)
        if self.norm2 is not None:
            h = self.norm2(h, training=training)
        y = h + skip
        if self.act_out is not None:
            y = self.act_out(y)
        return y

    def compute_output_shape(self, input_shape):
        return conv_output_shape(input_shape, self.filters, self.strides)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, spatial_dims=self.spatial_dims, kernel_size=list(self.kernel_size),
            strides=list(self.strides), norm=self.norm, activation=self.activation,
            preactivation=self.preactivation, stem=self.stem, shortcut=self.shortcut, dropout=self.dropout,
            use_bias=self.use_bias, kernel_initializer=self.kernel_initializer, norm_momentum=self.norm_momentum,
        )
        return config
