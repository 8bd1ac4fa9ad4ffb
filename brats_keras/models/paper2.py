"""Paper 2's models: three 3D U-Nets on 128³ crops — simple, modified (batch norm), spatial attention.

Paper: "Spatial attention 3D U-Net" (``shared/papers/001_af0cf957708a3ba0.txt``), §V and Table II;
the project's reading of it is ``shared/REPLICATION.md``, "Paper 2". The widths, dropouts and
initialiser are those of the widely used BraTS-2020 3D U-Net reference code the paper's pipeline
follows (filters 16-32-64-128-256, dropout 0.1/0.1/0.2/0.2/0.3, ``he_uniform``); the choices where
the paper is silent or contradicts itself are listed in ``docs/paper2.md``.

All builders take channels-last volumes ``(batch, H, W, D, C)`` with ``H``, ``W`` and ``D``
divisible by ``2 ** depth`` (16 for the paper's four poolings) and return per-voxel class
probabilities ``(batch, H, W, D, num_classes)``. Layer names::

    {name}_input
    {name}_enc1                       two 3×3×3 convolutions at full resolution
    {name}_enc{i}_pool                2×2×2 max-pool (i ≥ 2), then
    {name}_enc{i}_attention           spatial attention (``unet3d_spatial_attention`` only), then
    {name}_enc{i}                     two 3×3×3 convolutions with filters·2^(i-1) channels
    {name}_bridge[_pool|_attention]   the bottom, (H/16, W/16, D/16, 16·filters)
    {name}_dec{j}_up / _concat        2×2×2 transposed convolution (stride 2), skip concatenation
    {name}_dec{j}_attention           between the two: spatial attention (``attention_in_decoder=True`` only)
    {name}_dec{j}                     two 3×3×3 convolutions (j = 1 is the deepest decoder)
    {name}_head                       1×1×1 convolution → softmax

``brats_keras.models.common.block_summary`` turns a model into a table by these names. Every
model is the one U-Net builder's (:mod:`brats_keras.models.unet`) :data:`UNET3D` with the builder's
arguments filled in.
"""

from __future__ import annotations

import inspect

import keras

from brats_keras.layers.conv import check_initializer
from brats_keras.models.common import check_model_args
from brats_keras.models.registry import register_model
from brats_keras.models.unet import UNetSpec, doubling_filters, level_rates, unet

__all__ = [
    "ATTENTIONS", "PAPER_DROPOUT", "PAPER_INPUT_SHAPE", "UNET3D", "unet3d", "unet3d_modified", "unet3d_simple",
    "unet3d_spatial_attention",
]

PAPER_INPUT_SHAPE = (128, 128, 128, 3)
"""128³ crops of FLAIR, T1ce and T2 (paper §IV; Table II's 256³ contradicts the text, REPLICATION.md)."""
PAPER_DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)
"""Dropout between the two convolutions of encoder levels 1-4 and the bridge (reference code; the
paper's Table II says "0.1 - 0.2"). Decoder level j uses the rate of the encoder at its resolution."""
ATTENTIONS = ("none", "spatial")

UNET3D = UNetSpec(filters=doubling_filters(16, 4), spatial_dims=3, block="plain", norm="none", dropout=PAPER_DROPOUT,
                  kernel_initializer="he_uniform", down="maxpool", up="transpose", up_padding="same",
                  level_attention="none", attention_kernel_size=7, num_classes=4)
"""The reference code's 3D U-Net (Table II): filters 16 → 256, two 3×3×3 convolutions per level with
dropout between them, 2×2×2 max-pool, 2×2×2 transposed convolutions, ``he_uniform``, 1×1×1 softmax
head. The variants set ``norm`` (``"batch"``: modified), ``level_attention`` (``"spatial"``) and,
optionally, ``attention_in_decoder``."""


def unet3d(input_shape=PAPER_INPUT_SHAPE, num_classes=4, filters=16, depth=4, norm="none", attention="none",
           attention_activation="sigmoid", attention_kernel_size=7, dropout=PAPER_DROPOUT,
           kernel_initializer="he_uniform", activation="relu", output_activation="softmax", norm_momentum=0.99,
           attention_in_decoder=False, name="unet3d") -> keras.Model:
    """The generic 3D U-Net of paper 2; the three registered variants fix ``norm`` and ``attention``.

    ``(batch, H, W, D, C) → (batch, H, W, D, num_classes)``; with the defaults
    ``(B, 128, 128, 128, 3) → (B, 128, 128, 128, 4)``. ``depth`` encoder levels of two 3×3×3
    convolutions (``filters · 2^(i-1)`` channels, ``norm`` and ``activation`` after each, dropout
    between them), each level after the first starting with a 2×2×2 max-pool; a bridge of the same
    form at ``filters · 2^depth`` channels (8³×256 at 128³ with 16 filters); ``depth`` decoders of a
    2×2×2 transposed convolution with stride 2 halving the channels, concatenation with the encoder
    output at that resolution, and two 3×3×3 convolutions; a 1×1×1 convolution head.

    Args:
        input_shape: ``(H, W, D, C)``, spatial sizes divisible by ``2 ** depth``.
        num_classes: output channels (≥ 2); BraTS classes {0, 1, 2, 3}.
        filters: channels of the first level (16, doubling to 256 at the bridge).
        depth: number of poolings (4).
        norm: ``"none"`` (simple U-Net), ``"batch"`` (modified U-Net: conv → BN → ReLU) or
            ``"instance"``.
        attention: ``"spatial"`` puts a :class:`~brats_keras.layers.SpatialAttention` after every
            max-pool (the paper's §V: "After each max-pooling layer ... attention"); ``"none"``.
        attention_activation: ``"sigmoid"`` (default, CBAM's gate) or ``"softmax"``, the paper's
            literal wording, which makes every attention module the identity (docs/paper2.md).
        attention_kernel_size: kernel of the attention convolution (7 as in CBAM; the paper is silent).
        dropout: one rate, or ``depth + 1`` rates for the encoder levels and the bridge.
        kernel_initializer: initializer of every convolution (``he_uniform`` as the reference code).
        activation: activation after every 3×3×3 convolution.
        output_activation: the head's activation (``"softmax"`` for the Dice + focal loss).
        norm_momentum: batch normalisation's moving-average momentum (Keras' default 0.99).
        attention_in_decoder: with ``attention="spatial"``, also a spatial attention after every
            decoder up-sampling, ``{name}_dec{j}_attention`` (paper 2 §III: "during encoding and
            decoding"). Off by default: the published reading, attention after the max-pools only.
        name: model name and layer-name prefix.
    """
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name, spatial_dims=3)
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    rates = level_rates(dropout, depth)
    # As before the one U-Net builder: this check draws one Python seed (keras.initializers.get), which keeps
    # paper 2's initial weights under a given seed those of earlier runs.
    kernel_initializer = check_initializer(kernel_initializer)
    if attention_in_decoder is True and attention != "spatial":
        raise ValueError(f"attention_in_decoder=True needs attention='spatial', got attention={attention!r}")
    spec = UNET3D.replace(filters=doubling_filters(filters, depth), norm=norm, dropout=rates,
                          kernel_initializer=kernel_initializer, activation=activation, norm_momentum=norm_momentum,
                          level_attention=attention, attention_in_decoder=attention_in_decoder,
                          attention_activation=attention_activation, attention_kernel_size=attention_kernel_size,
                          num_classes=num_classes, output_activation=output_activation)
    return unet(spec, input_shape, name=name)


def _variant(**fixed):
    """Keyword arguments a registered variant fixes; overriding them raises ``ValueError``."""

    def check(kwargs, variant):
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise ValueError(f"{variant} fixes {', '.join(f'{k}={fixed[k]!r}' for k in clash)}; "
                             f"use unet3d(...) to change {', '.join(clash)}")
        return {**fixed, **kwargs}

    return check


_SIMPLE = _variant(norm="none", attention="none")
_MODIFIED = _variant(norm="batch", attention="none")
_SPATIAL = _variant(norm="batch", attention="spatial")
_ATTENTION_ARGS = ("attention_activation", "attention_kernel_size", "attention_in_decoder")


def _forwards(*hidden: str):
    """Give a variant the signature of what it takes: its own arguments and those of :func:`unet3d`
    it forwards (its model settings, ``brats_keras.models.registry.settings_class``), without the
    ``hidden`` ones it fixes or that mean nothing for it."""

    def decorate(variant):
        own = [p for p in inspect.signature(variant).parameters.values() if p.kind is not p.VAR_KEYWORD]
        taken = {p.name for p in own} | set(hidden)
        forwarded = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(unet3d).parameters.values()
                     if p.name not in taken]
        variant.__signature__ = inspect.Signature(own + forwarded)
        return variant

    return decorate


@register_model("unet3d_simple")
@_forwards("norm", "attention", "norm_momentum", *_ATTENTION_ARGS)
def unet3d_simple(input_shape=PAPER_INPUT_SHAPE, num_classes=4, name="unet3d_simple", **kwargs) -> keras.Model:
    """Paper 2's "Simple Unet": :func:`unet3d` without normalisation or attention (Table III row 1).

    ``(B, 128, 128, 128, 3) → (B, 128, 128, 128, 4)``; other keyword arguments as :func:`unet3d`.
    """
    return unet3d(input_shape, num_classes, name=name, **_SIMPLE(kwargs, "unet3d_simple"))


@register_model("unet3d_modified")
@_forwards("norm", "attention", *_ATTENTION_ARGS)
def unet3d_modified(input_shape=PAPER_INPUT_SHAPE, num_classes=4, name="unet3d_modified", **kwargs) -> keras.Model:
    """Paper 2's "Modified / Optimized Unet": batch normalisation after every convolution
    (conv → BN → ReLU, §V and §VIII "ReLU with batch normalization"), no attention (Table III row 2)."""
    return unet3d(input_shape, num_classes, name=name, **_MODIFIED(kwargs, "unet3d_modified"))


@register_model("unet3d_spatial_attention")
@_forwards("norm", "attention")
def unet3d_spatial_attention(input_shape=PAPER_INPUT_SHAPE, num_classes=4, attention_activation="sigmoid",
                             attention_in_decoder=False, name="unet3d_spatial_attention", **kwargs) -> keras.Model:
    """Paper 2's proposed "Spatial Attention Unet": the modified U-Net with spatial attention after
    every max-pool (mean and max along channels → concatenate → 3D conv → activation → multiply).

    ``attention_activation="sigmoid"`` (default) is CBAM's gate; ``"softmax"`` is the paper's
    literal text and turns every attention module into the identity, so that model computes exactly
    what :func:`unet3d_modified` computes (REPLICATION.md audit; ``tests/test_models_paper2.py``).

    ``attention_in_decoder=True`` adds a spatial attention after every decoder up-sampling too
    (``{name}_dec{j}_attention``; §III's "during encoding and decoding"); the default ``False`` is the
    published reading used so far (docs/paper2.md).
    """
    return unet3d(input_shape, num_classes, attention_activation=attention_activation,
                  attention_in_decoder=attention_in_decoder, name=name, **_SPATIAL(kwargs, "unet3d_spatial_attention"))
