"""Paper 4's LSTM enhancement stage as a stand-alone model (pre-trained as a denoiser).

Paper: ``shared/papers/003_3777ada94496fdc3.txt``, §3.1: a "sequential LSTM" (forget / input /
output gates, RMSprop) enhances the MRI before the U-Net. REPLICATION.md (paper 4, choices): a
residual row/column bidirectional-LSTM enhancer for slices, a bidirectional ConvLSTM over
neighbouring slices for volumes (:class:`brats_keras.layers.LSTMEnhancer`), pre-trained as a denoiser
(:func:`brats_keras.enhancement.pretrain_enhancer`), then fine-tuned end to end with the U-Net.

The model is ``{name}_input → {name}_enhancer``: its one layer carries the same name suffix as the
enhancer inside paper 4's combined model, so pre-trained weights are copied layer to layer.
"""

from __future__ import annotations

import keras

from brats_keras.layers.conv import check_int_tuple, check_positive_int
from brats_keras.layers.lstm import LSTMEnhancer
from brats_keras.models.registry import register_model

__all__ = ["ENHANCER_INPUT_SHAPE", "lstm_enhancer"]

ENHANCER_INPUT_SHAPE = (256, 256, 1)
"""Paper 4's figshare T1ce slices resized to 256 × 256 (REPLICATION.md choice), one channel."""


def _check_input_shape(input_shape) -> tuple:
    """``(H, W, C)`` or ``(H, W, D, C)``; ``None`` allowed where the enhancer allows it (2D: H, W; 3D: D)."""
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) in (3, 4)
    if ok:
        spatial_dims = len(input_shape) - 1
        may_be_none = (0, 1) if spatial_dims == 2 else (2,)
        for axis, n in enumerate(input_shape):
            if n is None and axis in may_be_none:
                continue
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                ok = False
    if not ok:
        raise ValueError(
            "input_shape must be (H, W, C) for slices or (H, W, D, C) for volumes, positive integers "
            f"(None allowed for H and W of slices and for D of volumes), got {input_shape!r}"
        )
    return tuple(input_shape)


@register_model("lstm_enhancer")
def lstm_enhancer(input_shape=ENHANCER_INPUT_SHAPE, units=16, kernel_size=3, name="lstm_enhancer") -> keras.Model:
    """Paper 4's LSTM enhancer: ``(batch, *S, C) → (batch, *S, C)``, the input plus a learnt residual.

    The rank of ``input_shape`` picks the variant: ``(H, W, C)`` → row/column bidirectional LSTMs
    (slices); ``(H, W, D, C)`` → bidirectional ``ConvLSTM2D`` over the ``D`` slices (volumes). The
    projection to the residual is zero-initialised: the untrained model returns its input exactly.
    With the defaults, ``(B, 256, 256, 1) → (B, 256, 256, 1)`` and 8,770 parameters.

    Args:
        input_shape: ``(H, W, C)`` or ``(H, W, D, C)`` (channels-last, ``D`` the slice axis).
        units: hidden units per direction of each LSTM (ConvLSTM filters in 3D).
        kernel_size: ConvLSTM kernel over ``(H, W)`` (3D only).
        name: model name; the layers are ``{name}_input`` and ``{name}_enhancer``.
    """
    input_shape = _check_input_shape(input_shape)
    check_positive_int(units, "units")
    check_int_tuple(kernel_size, "kernel_size", 2)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    inputs = keras.Input(input_shape, name=f"{name}_input")
    outputs = LSTMEnhancer(units=units, spatial_dims=len(input_shape) - 1, kernel_size=kernel_size,
                           name=f"{name}_enhancer")(inputs)
    return keras.Model(inputs, outputs, name=name)
