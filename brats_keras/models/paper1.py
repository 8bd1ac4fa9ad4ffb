"""Paper 1's models: the plain 2D U-Net, the 2D ResUNet and their cascade, the U-ResUNet.

Paper: the U-ResUnet thesis (``shared/papers/000_bacedb4591857e9e.txt``), chapter 4 ("Our proposed
U-ResUnet model uses both the Unet and ResUnet model. First the input goes through the Unet network
and the output of the Unet network then passes to the ResUnet network as input") and §5.5. The
project's reading of it is ``shared/REPLICATION.md``, "Paper 1 — U-ResUNet"; the choices made where
the text is silent or contradicts itself are listed in ``docs/paper1.md``.

All three builders are registered (``create_model("u_resunet")``) and take channels-last slices
``(batch, H, W, C)`` with ``H`` and ``W`` divisible by ``2 ** depth`` (16 for the paper's 4 levels);
they return per-pixel class probabilities ``(batch, H, W, num_classes)``.

Layer names follow one scheme, so a block can be looked up with ``model.get_layer``::

    {prefix}_input
    {prefix}_enc1                     first encoder block, full resolution
    {prefix}_enc{i}[_pool]            encoder i (i ≥ 2) at H / 2**(i-1); U-Net: max-pool then ConvBlock
    {prefix}_bridge[_pool]            the bottom, H / 2**depth
    {prefix}_dec{j}_up / _concat      decoder j (j = 1 is the deepest): up-sampling, skip concatenation
    {prefix}_dec{j}                   decoder j's ConvBlock / ResidualBlock
    {prefix}_head                     1×1 convolution → softmax

In the cascade the prefixes are ``{name}_unet`` and ``{name}_resunet``. ``block_summary`` groups a
model's layers by these block names into a short Markdown table. The two networks are specs of the one
U-Net builder (:mod:`brats_keras.models.unet`): :data:`UNET` and :data:`RESUNET`.
"""

from __future__ import annotations

import keras

from brats_keras.models.common import block_of, block_summary, check_model_args
from brats_keras.models.registry import register_model
from brats_keras.models.unet import UNetSpec, doubling_filters, unet, unet_body

__all__ = ["CASCADE_INPUTS", "PAPER_INPUT_SHAPE", "PLAIN_UNET_INITIALIZER", "RESUNET", "UNET", "block_of",
           "block_summary", "resunet2d", "u_resunet", "unet2d"]

CASCADE_INPUTS = ("features", "probabilities")
"""What the cascade's U-Net hands to its ResUNet: its last decoder feature map ``(H, W, filters)``
(``"features"``, the default) or its softmax output ``(H, W, num_classes)`` (``"probabilities"``)."""

PAPER_INPUT_SHAPE = (128, 128, 2)
"""128 × 128 slices of two modalities (FLAIR, T1ce), as the paper states."""

PLAIN_UNET_INITIALIZER = "he_normal"
"""Initializer of the stand-alone plain U-Net (``unet2d``; paper 3's U-Net too): He-normal, the
initialisation derived for ReLU networks (He et al. 2015). The paper names none; this U-Net has no
normalisation layer, so its initial scale decides whether signal and gradient survive its 23
convolutions. With Keras' Glorot-uniform the baseline stayed at the all-background solution for
its whole quick profile (whole-volume WT Dice 0.000; docs/paper1.md). The cascade's U-Net stage,
which feeds a batch-normalised ResUNet, keeps Glorot-uniform (:data:`UNET`): with He-normal there
the cascade learned more slowly (measured, docs/paper1.md)."""


# --------------------------------------------------------------------------------------------
# The paper's two networks as data (each network written once; the builders fill in the sizes)
# --------------------------------------------------------------------------------------------

UNET = UNetSpec(filters=doubling_filters(32, 4), block="plain", norm="none", down="maxpool", up="transpose",
                num_classes=4)
"""The paper's U-Net (Fig. 4.2): encoder i (1..depth) a ``ConvBlock`` of two 3×3 convolutions + ReLU
with ``filters·2^(i-1)`` channels and no normalisation (the paper's U-Net has no batch norm), each
later level opened by a 2×2 max-pool; the bridge (max-pool, two 3×3 convolutions, ``filters·2^depth``
channels) is the bottom, 8×8×512 at 128² with 32 filters. Decoder j (deepest first): a 2×2 transposed
convolution with stride 2 halving the channels ("upscaled from 8x8x512 to 16x16x256"), concatenation
with encoder ``depth+1-j``'s output, two 3×3 convolutions + ReLU; a 1×1 softmax head."""

RESUNET = UNetSpec(filters=doubling_filters(32, 4), block="residual", stem=True, norm="batch", down="strided",
                   up="nearest", num_classes=4)
"""The paper's ResUNet (Fig. 4.3; Zhang et al. 2018): encoder 1 the stem ``conv3×3 → BN → ReLU →
conv3×3`` plus a projection shortcut; encoders 2..depth pre-activated residual blocks ``BN → ReLU →
conv3×3 (stride 2) → BN → ReLU → conv3×3`` plus a projection shortcut, doubling the channels; the
bridge the same block with stride 2 and ``filters·2^depth`` channels, ``(H/16, W/16, 16·filters)`` —
stride 2 as the model chapter says (§5.5's "stride value of 1" would leave the bridge at the 4th
encoder's resolution and the ResUNet one level shallower than the U-Net). Decoder j (deepest first):
2×2 nearest up-sampling, concatenation with encoder ``depth+1-j``'s output and a pre-activated
residual block halving the channels; a 1×1 softmax head."""


def _sized(spec: UNetSpec, filters, depth, activation, num_classes, output_activation, **changes) -> UNetSpec:
    """``spec`` with the builder's sizes: ``filters · 2^l`` channels over ``depth`` levels."""
    return spec.replace(filters=doubling_filters(filters, depth), activation=activation, num_classes=num_classes,
                        output_activation=output_activation, **changes)


# --------------------------------------------------------------------------------------------
# Registered builders
# --------------------------------------------------------------------------------------------


@register_model("unet2d")
def unet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=4, filters=32, depth=4, activation="relu",
           output_activation="softmax", kernel_initializer=PLAIN_UNET_INITIALIZER, name="unet2d") -> keras.Model:
    """Paper 1's plain U-Net (its baseline, Fig. 4.2 / Fig. 6.3).

    ``(batch, H, W, C) → (batch, H, W, num_classes)``; with the defaults ``(B, 128, 128, 2) →
    (B, 128, 128, 4)``. ``depth`` encoders of two 3×3 conv + ReLU (no batch norm) with 2×2 max-pool,
    a bridge of two 3×3 convolutions, ``depth`` decoders (2×2 transposed conv stride 2 halving the
    channels, skip concatenation, two 3×3 convolutions) and a 1×1 convolution head. Channels
    ``filters · (1, 2, 4, 8 | 16 | 8, 4, 2, 1)``: at 128² with ``filters=32`` the bridge is
    8×8×512 and the first decoder's transposed convolution gives 16×16×256, as the paper says.

    Args:
        input_shape: ``(H, W, C)``, ``H`` and ``W`` divisible by ``2 ** depth``.
        num_classes: output channels (≥ 2); BraTS classes {0, 1, 2, 3}.
        filters: channels of the first level (32 so that the bottom is 8×8×512).
        depth: number of encoder / decoder levels (the paper: 4).
        activation: activation of every 3×3 convolution.
        output_activation: head activation; ``"softmax"`` for categorical cross-entropy.
        kernel_initializer: initializer of the 3×3 and transposed convolutions (default
            :data:`PLAIN_UNET_INITIALIZER`, He-normal; the 1×1 head keeps Glorot-uniform).
        name: model name and layer-name prefix.
    """
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name)
    spec = _sized(UNET, filters, depth, activation, num_classes, output_activation,
                  kernel_initializer=kernel_initializer)
    return unet(spec, input_shape, name=name)


@register_model("resunet2d")
def resunet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=4, filters=32, depth=4, activation="relu",
              output_activation="softmax", norm_momentum=0.99, name="resunet2d") -> keras.Model:
    """Paper 1's ResUNet (Fig. 4.3; Zhang, Liu & Wang 2018, "Road extraction by deep residual U-Net").

    ``(batch, H, W, C) → (batch, H, W, num_classes)``. Stem encoder (conv, BN, ReLU, conv +
    projection shortcut), ``depth - 1`` pre-activated residual encoders with stride 2 doubling the
    channels, a residual bridge with stride 2 (``(H/16, W/16, 16·filters)``, 8×8×512 at 128² with
    ``filters=32``, the same depth as the U-Net; the paper's §5.5 also mentions stride 1 — see
    ``docs/paper1.md``), ``depth`` decoders (2×2 up-sampling, skip concatenation, residual block
    halving the channels) and a 1×1 convolution head. The head is a softmax although the text says
    sigmoid, because the loss is categorical cross-entropy over 4 classes (REPLICATION.md).

    Args: as ``unet2d``, plus ``norm_momentum``: the batch-normalisation moving-average momentum
    (Keras' default 0.99; it only affects the statistics used at inference).
    """
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name)
    spec = _sized(RESUNET, filters, depth, activation, num_classes, output_activation, norm_momentum=norm_momentum)
    return unet(spec, input_shape, name=name)


@register_model("u_resunet")
def u_resunet(input_shape=PAPER_INPUT_SHAPE, num_classes=4, filters=32, cascade_input="features", depth=4,
              activation="relu", output_activation="softmax", norm_momentum=0.99, name="u_resunet") -> keras.Model:
    """Paper 1's proposed U-ResUNet: the U-Net followed by the ResUNet, trained end to end (Fig. 4.1).

    ``(batch, H, W, C) → U-Net → (batch, H, W, C') → ResUNet → (batch, H, W, num_classes)``.
    The text only says "the output of the Unet network then passes to the ResUnet network as
    input"; ``cascade_input`` picks what that output is:

    - ``"features"`` (default, REPLICATION.md choice): the U-Net's last decoder feature map,
      ``C' = filters``; the U-Net has no head of its own.
    - ``"probabilities"``: the U-Net's own 1×1 head (``output_activation``), ``C' = num_classes``.

    Only the ResUNet's head gives the model's output; there is no auxiliary loss on the U-Net, so
    its weights learn through the ResUNet. Layer prefixes: ``{name}_unet`` and ``{name}_resunet``.

    Args:
        cascade_input: ``"features"`` or ``"probabilities"``, see above.
        norm_momentum: the ResUNet's batch-normalisation momentum, as in ``resunet2d``.
        others: as ``unet2d``; ``filters`` and ``depth`` apply to both networks.
    """
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name)
    if cascade_input not in CASCADE_INPUTS:
        raise ValueError(f"cascade_input must be one of {CASCADE_INPUTS}, got {cascade_input!r}")
    unet_head = num_classes if cascade_input == "probabilities" else None  # "features": no head of its own
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = unet_body(inputs, _sized(UNET, filters, depth, activation, unet_head, output_activation), prefix=f"{name}_unet")
    spec = _sized(RESUNET, filters, depth, activation, num_classes, output_activation, norm_momentum=norm_momentum)
    return keras.Model(inputs, unet_body(x, spec, prefix=f"{name}_resunet"), name=name)
