"""Shared Keras layers; each class covers 2D and 3D through ``spatial_dims``.

Tensors are channels-last, ``(batch, H, W, C)`` or ``(batch, H, W, D, C)``. Every layer is
registered with ``keras.saving.register_keras_serializable(package="brats_keras")``, so a model
holding them reloads from a ``.keras`` file without ``custom_objects``.

- ``ConvBlock``: (conv → norm → activation) × repeats, the U-Net double convolution.
- ``ResidualBlock``: pre-/post-activation residual block with identity or projection shortcut.
- ``AttentionGate``: additive attention gate of Attention U-Net (Oktay et al. 2018).
- ``SpatialAttention``: mean/max channel pooling → conv → sigmoid/softmax gate (paper 2).
"""

from brats_keras.layers.attention import AttentionGate, SpatialAttention, upsample
from brats_keras.layers.conv import NORMS, ConvBlock, conv_class, make_activation, make_conv, make_norm
from brats_keras.layers.lstm import LSTMEnhancer
from brats_keras.layers.residual import ResidualBlock

__all__ = [
    "NORMS",
    "AttentionGate",
    "ConvBlock",
    "LSTMEnhancer",
    "ResidualBlock",
    "SpatialAttention",
    "conv_class",
    "make_activation",
    "make_conv",
    "make_norm",
    "upsample",
]
