"""Paper 3's model: the multimodal 2D U-Net trained with the "dwell" learning-rate callback.

Paper: ``shared/papers/002_1845296d8be7a3a0.txt``, §V ("Implementation"): "four encoder blocks and
four decoder blocks that are connected via a bridge"; each encoder block is "two 3x3 convolutions,
where each convolution is followed by a ReLU", whose output is the skip connection, then "a 2x2
max-pooling"; the bridge "consists of two 3x3 convolutions"; the decoder "doubles the spatial
dimensions and half the number of feature channels"; the input is multimodal (T1, T1ce, T2, FLAIR).
REPLICATION.md fixes 4 channels at 128 × 128.

That is the same network as paper 1's plain U-Net, so :func:`unet2d_multimodal` is a thin named
variant of paper 1's U-Net, :data:`brats_keras.models.paper1.UNET` (Keras applications style: one
generic builder, named variants), with paper 3's input. The paper states no filter count; the
default is 32 (bridge 8 × 8 × 512 at 128², 7.8 M parameters), the suite's U-Net width — see
``docs/paper3.md`` for why not the 64 of Ronneberger et al.

Layer names follow :mod:`brats_keras.models.paper1`: ``{name}_enc1..4``, ``{name}_bridge``,
``{name}_dec1..4`` (deepest first), ``{name}_head``.
"""

from __future__ import annotations

import keras

from brats_keras.models.paper1 import PLAIN_UNET_INITIALIZER, unet2d
from brats_keras.models.registry import register_model

__all__ = ["PAPER3_INPUT_SHAPE", "unet2d_multimodal"]

PAPER3_INPUT_SHAPE = (128, 128, 4)
"""128 × 128 axial slices of the four modalities (T1, T1ce, T2, FLAIR) — REPLICATION.md choice."""


@register_model("unet2d_multimodal")
def unet2d_multimodal(input_shape=PAPER3_INPUT_SHAPE, num_classes=4, filters=32, depth=4, activation="relu",
                      output_activation="softmax", kernel_initializer=PLAIN_UNET_INITIALIZER,
                      name="unet2d_multimodal") -> keras.Model:
    """Paper 3's U-Net on the four modalities.

    ``(batch, H, W, C) → (batch, H, W, num_classes)``; with the defaults ``(B, 128, 128, 4) →
    (B, 128, 128, 4)`` class probabilities (background, necrotic core, edema, enhancing). Four
    encoder blocks (two 3×3 conv + ReLU each, no normalisation — the paper names none), 2×2
    max-pooling, a bridge of two 3×3 convolutions, four decoder blocks (2×2 transposed convolution
    with stride 2 halving the channels, skip concatenation, two 3×3 conv + ReLU) and a 1×1 softmax
    head (the Dice loss is computed on the four class probabilities).

    Args:
        input_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** depth``. ``C`` is the number of
            modalities (the paper: 4).
        num_classes: output channels (≥ 2).
        filters: channels of the first level (paper silent; 32, see the module docstring).
        depth: encoder / decoder levels (the paper: 4).
        activation, output_activation, kernel_initializer, name: as :func:`brats_keras.models.paper1.unet2d`.
    """
    return unet2d(input_shape=input_shape, num_classes=num_classes, filters=filters, depth=depth,
                  activation=activation, output_activation=output_activation,
                  kernel_initializer=kernel_initializer, name=name)
