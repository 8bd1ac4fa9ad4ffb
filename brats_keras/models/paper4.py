"""Paper 4's models: the EfficientNet attention U-Net, its LSTM-enhanced form and Table 3's baselines.

Paper: "Optimized LSTM-driven MRI preprocessing with fine-tuned U-Net" (``shared/papers/
003_3777ada94496fdc3.txt``), §3.2 and Table 1; the project's reading is ``shared/REPLICATION.md``,
"Paper 4", and the choices are listed in ``docs/paper4.md``. Binary segmentation of the figshare
T1ce slices: every builder maps ``(batch, H, W, C)`` to per-pixel probabilities
``(batch, H, W, num_classes)`` with ``num_classes = 2`` (background, tumour) and a softmax head, so
the project's categorical Dice + focal loss and per-class metrics apply unchanged.

Table 1's U-Net (all four models share it where it applies): Leaky-ReLU, 4 encoding + 4 decoding
levels, 3×3 kernels, 24 filters in the first layer, max-pooling with kernel 3 and stride 2, dropout
0.5, batch normalisation (§3.2: "both dropout and batch normalization need implementation").

Registered builders (``create_model(name)``):

- ``unet2d_binary`` — Table 3's "U-Net";
- ``attention_unet2d`` — "Attention U-Net": additive attention gates (Oktay et al. 2018) on the skips;
- ``res_attention_unet2d`` — "Res Attention U-Net": residual blocks and attention gates;
- ``efficientnet_attention_unet`` — the paper's fine-tuned U-Net: a ``keras.applications``
  EfficientNetB0 encoder, attention-gated decoder;
- ``lstm_effunet`` — the proposed method: the LSTM enhancer (``LSTMEnhancer``) in front of
  ``efficientnet_attention_unet``, trained end to end.

Layer names: ``{name}_enc{i}[_pool]``, ``{name}_bridge[_dropout]``, ``{name}_dec{j}_up / _attention /
_concat``, ``{name}_dec{j}``, ``{name}_head`` (``block_summary`` groups them); the EfficientNet
encoder is one nested model ``{name}_encoder`` and the enhancer the layer ``{name}_enhancer``.
"""

from __future__ import annotations

import random
from pathlib import Path

import keras

from brats_keras.layers import AttentionGate, ConvBlock, LSTMEnhancer, ResidualBlock
from brats_keras.layers.conv import check_dropout, check_positive_int
from brats_keras.models.common import (
    check_model_args, imagenet_weights_file, resolve_imagenet_weights, set_batch_norm_momentum,
)
from brats_keras.models.registry import register_model

__all__ = [
    "EFFICIENTNET_SKIPS",
    "PAPER_INPUT_SHAPE",
    "attention_unet2d",
    "efficientnet_attention_unet",
    "efficientnet_weights_file",
    "lstm_effunet",
    "res_attention_unet2d",
    "unet2d_binary",
]

PAPER_INPUT_SHAPE = (256, 256, 1)
"""One T1ce slice resized to 256 × 256 (REPLICATION.md's choice; the files hold 512²)."""

TABLE1 = {"filters": 24, "depth": 4, "activation": "leaky_relu", "pool_size": 3, "dropout": 0.5}
"""Paper 4, Table 1: first-layer filters, encoding/decoding levels, activation, max-pool kernel
(stride 2), dropout."""

EFFICIENTNET_SKIPS = ("block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
                      "block6a_expand_activation")
"""EfficientNetB0 feature maps at strides 2, 4, 8 and 16 used as the four skips (the first layer of
each stage that runs at that resolution, as segmentation_models' EfficientNet U-Net); the bottom is
``top_activation`` at stride 32."""



def _check_pool(pool_size) -> int:
    return check_positive_int(pool_size, "pool_size")


def _level_filters(filters: int, level: int) -> int:
    """Channels of level ``level`` (0 = full resolution): ``filters · 2**level``."""
    return filters * 2**level


# --------------------------------------------------------------------------------------------
# The plain / attention / residual-attention U-Net family (Table 3's baselines)
# --------------------------------------------------------------------------------------------


def _block(kind: str, filters: int, *, activation: str, norm_momentum: float, name: str):
    if kind == "residual":
        # Post-activation residual block (conv → BN → act → conv → BN, + shortcut, act), as the
        # residual attention U-Nets of the literature (e.g. Maji et al. 2022) use.
        return ResidualBlock(filters, activation=activation, preactivation=False, norm_momentum=norm_momentum,
                             name=name)
    return ConvBlock(filters, norm="batch", activation=activation, norm_momentum=norm_momentum, name=name)


def _unet_family(input_shape, num_classes, filters, depth, activation, output_activation, name, *, block: str,
                 attention: bool, pool_size: int, dropout: float, norm_momentum: float) -> keras.Model:
    """One builder for the three baselines: ``block`` is ``"plain"`` or ``"residual"``; ``attention``
    gates every skip with the coarser decoder level (Oktay et al. 2018).

    Encoder level i (0..depth−1) is a block of ``filters·2^i`` channels followed by a max-pool
    (``pool_size``, stride 2, ``same`` padding); the bridge has ``filters·2^depth`` channels and
    ``Dropout(dropout)`` after it (Ronneberger et al.'s place for dropout, "at the end of the
    contracting path"); decoder j (deepest first) is a 2×2 transposed convolution with stride 2,
    the (gated) skip concatenated, and a block of the level's channels.
    """
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name)
    pool_size = _check_pool(pool_size)
    dropout = check_dropout(dropout)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x, skips = inputs, []
    for i in range(depth):
        x = _block(block, _level_filters(filters, i), activation=activation, norm_momentum=norm_momentum,
                   name=f"{name}_enc{i + 1}")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(pool_size, strides=2, padding="same", name=f"{name}_enc{i + 1}_pool")(x)
    x = _block(block, _level_filters(filters, depth), activation=activation, norm_momentum=norm_momentum,
               name=f"{name}_bridge")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_bridge_dropout")(x)
    for j in range(1, depth + 1):
        level = depth - j
        skip = skips[level]
        if attention:
            skip = AttentionGate(max(_level_filters(filters, level) // 2, 1), name=f"{name}_dec{j}_attention")([skip, x])
        x = keras.layers.Conv2DTranspose(_level_filters(filters, level), 2, strides=2, name=f"{name}_dec{j}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"{name}_dec{j}_concat")([x, skip])
        x = _block(block, _level_filters(filters, level), activation=activation, norm_momentum=norm_momentum,
                   name=f"{name}_dec{j}")(x)
    outputs = keras.layers.Conv2D(num_classes, 1, activation=output_activation, name=f"{name}_head")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("unet2d_binary")
def unet2d_binary(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"], depth=TABLE1["depth"],
                  activation=TABLE1["activation"], pool_size=TABLE1["pool_size"], dropout=TABLE1["dropout"],
                  output_activation="softmax", norm_momentum=0.99, name="unet2d_binary") -> keras.Model:
    """Table 3's U-Net with Table 1's settings: ``(B, 256, 256, 1) → (B, 256, 256, 2)``.

    Two 3×3 convolutions + batch norm + Leaky-ReLU per level, channels ``24·(1, 2, 4, 8 | 16)``,
    3×3 max-pool with stride 2, dropout 0.5 after the bridge, a 1×1 softmax head.
    """
    return _unet_family(input_shape, num_classes, filters, depth, activation, output_activation, name,
                        block="plain", attention=False, pool_size=pool_size, dropout=dropout,
                        norm_momentum=norm_momentum)


@register_model("attention_unet2d")
def attention_unet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"], depth=TABLE1["depth"],
                     activation=TABLE1["activation"], pool_size=TABLE1["pool_size"], dropout=TABLE1["dropout"],
                     output_activation="softmax", norm_momentum=0.99, name="attention_unet2d") -> keras.Model:
    """Table 3's Attention U-Net: :func:`unet2d_binary` with an additive attention gate on every
    skip, gated by the coarser decoder level (``AttentionGate``, intermediate channels = half the
    skip's)."""
    return _unet_family(input_shape, num_classes, filters, depth, activation, output_activation, name,
                        block="plain", attention=True, pool_size=pool_size, dropout=dropout,
                        norm_momentum=norm_momentum)


@register_model("res_attention_unet2d")
def res_attention_unet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"],
                         depth=TABLE1["depth"], activation=TABLE1["activation"], pool_size=TABLE1["pool_size"],
                         dropout=TABLE1["dropout"], output_activation="softmax", norm_momentum=0.99,
                         name="res_attention_unet2d") -> keras.Model:
    """Table 3's Res Attention U-Net: :func:`attention_unet2d` with residual blocks (two 3×3
    convolutions + batch norm, Leaky-ReLU, identity or 1×1 projection shortcut) at every level."""
    return _unet_family(input_shape, num_classes, filters, depth, activation, output_activation, name,
                        block="residual", attention=True, pool_size=pool_size, dropout=dropout,
                        norm_momentum=norm_momentum)


# --------------------------------------------------------------------------------------------
# EfficientNetB0 encoder
# --------------------------------------------------------------------------------------------


def efficientnet_weights_file() -> Path:
    """Where Keras keeps the EfficientNetB0 ImageNet weights once downloaded
    (``$KERAS_HOME/models/efficientnetb0_notop.h5``, default ``~/.keras/models``)."""
    return imagenet_weights_file("b0")


def resolve_encoder_weights(weights) -> str | None:
    """:func:`brats_keras.models.common.resolve_imagenet_weights` for EfficientNetB0."""
    return resolve_imagenet_weights(weights, "b0")


def _efficientnet_encoder(spatial: tuple[int, int], weights: str | None, name: str,
                          norm_momentum: float = 0.99) -> keras.Model:
    """EfficientNetB0 without its top as one nested model: ``(B, H, W, 3)`` in [0, 255] →
    the four skips (strides 2, 4, 8, 16) and the bottom (stride 32, 1280 channels). Its batch
    normalisations get ``norm_momentum`` (Keras' EfficientNet uses 0.99, the default here too)."""
    base = keras.applications.EfficientNetB0(include_top=False, weights=weights, input_shape=(*spatial, 3))
    set_batch_norm_momentum(base, norm_momentum)
    outputs = [base.get_layer(layer).output for layer in EFFICIENTNET_SKIPS] + [base.get_layer("top_activation").output]
    return keras.Model(base.input, outputs, name=name)


@register_model("efficientnet_attention_unet")
def efficientnet_attention_unet(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"],
                                activation=TABLE1["activation"], dropout=TABLE1["dropout"], weights="auto",
                                output_activation="softmax", norm_momentum=0.99,
                                name="efficientnet_attention_unet") -> keras.Model:
    """The paper's fine-tuned U-Net: EfficientNetB0 encoder, attention-gated Leaky-ReLU decoder.

    ``(B, H, W, C) → (B, H, W, num_classes)`` with ``H``, ``W`` divisible by 32; the image is
    expected in [0, 1] (the figshare index's min–max normalisation). A grey image (``C = 1``) is
    repeated to three channels and scaled to [0, 255], the range EfficientNet's built-in
    rescaling and normalisation expect, so ImageNet weights apply when present.

    Decoder: dropout ``dropout`` on the encoder's bottom (stride 32), then four levels — one per
    skip at strides 16, 8, 4, 2 — each a 2×2 transposed convolution, an additive attention gate on
    the skip (gated by the coarser decoder map), concatenation and a ConvBlock (two 3×3 conv + batch
    norm + Leaky-ReLU) of ``filters · (16, 8, 4, 2)`` channels; a fifth up-sampling level without
    skip (EfficientNet has no full-resolution features) with ``filters`` channels — the paper's 24 —
    and the 1×1 softmax head.

    Args:
        weights: ``"auto"`` (ImageNet if ``~/.keras/models/efficientnetb0_notop.h5`` exists, else
            random with a warning), ``"imagenet"`` (error if absent) or ``None`` (random).
        filters: channels of the full-resolution decoder level (Table 1: 24).
        norm_momentum: momentum of every batch normalisation, the EfficientNet encoder's included
            (Keras' default 0.99; the quick profile's short runs use 0.9, docs/paper4.md).
    """
    input_shape, num_classes, filters, activation, output_activation, name, dropout, encoder_weights = _effunet_args(
        input_shape, num_classes, filters, activation, output_activation, name, dropout, weights)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    return keras.Model(inputs, _effunet_body(inputs, num_classes=num_classes, filters=filters, activation=activation,
                                             dropout=dropout, encoder_weights=encoder_weights,
                                             output_activation=output_activation, norm_momentum=norm_momentum,
                                             prefix=name), name=name)


def _effunet_args(input_shape, num_classes, filters, activation, output_activation, name, dropout, weights):
    """The EfficientNet U-Nets' arguments, checked (``H``, ``W`` divisible by 32; 1 or 3 channels), and
    the encoder weights resolved (:func:`resolve_encoder_weights`)."""
    input_shape, num_classes, filters, _, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, 5, activation, output_activation, name)
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape {input_shape!r}: EfficientNet takes 1 (grey, repeated) or 3 channels")
    return (input_shape, num_classes, filters, activation, output_activation, name, check_dropout(dropout),
            resolve_encoder_weights(weights))


def _effunet_body(x, *, num_classes, filters, activation, dropout, encoder_weights, output_activation,
                  norm_momentum, prefix):
    """``(B, H, W, 1|3)`` in [0, 1] → ``(B, H, W, num_classes)``; see :func:`efficientnet_attention_unet`."""
    if x.shape[-1] == 1:
        x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_to_rgb")([x, x, x])
    x = keras.layers.Rescaling(255.0, name=f"{prefix}_to_255")(x)
    encoder = _efficientnet_encoder(tuple(x.shape[1:3]), encoder_weights, f"{prefix}_encoder", norm_momentum)
    *skips, x = encoder(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{prefix}_bridge_dropout")(x)
    depth = len(skips)
    for j in range(1, depth + 1):
        level = depth - j + 1  # skips[level - 1] is at stride 2**level
        level_filters = _level_filters(filters, level)
        skip = AttentionGate(max(level_filters // 2, 1), name=f"{prefix}_dec{j}_attention")([skips[level - 1], x])
        x = keras.layers.Conv2DTranspose(level_filters, 2, strides=2, name=f"{prefix}_dec{j}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_dec{j}_concat")([x, skip])
        x = _block("plain", level_filters, activation=activation, norm_momentum=norm_momentum, name=f"{prefix}_dec{j}")(x)
    x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"{prefix}_dec{depth + 1}_up")(x)
    x = _block("plain", filters, activation=activation, norm_momentum=norm_momentum, name=f"{prefix}_dec{depth + 1}")(x)
    return keras.layers.Conv2D(num_classes, 1, activation=output_activation, name=f"{prefix}_head")(x)


@register_model("lstm_effunet")
def lstm_effunet(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"],
                 activation=TABLE1["activation"], dropout=TABLE1["dropout"], weights="auto", enhancer_units=16,
                 output_activation="softmax", norm_momentum=0.99, name="lstm_effunet") -> keras.Model:
    """The proposed method: ``LSTMEnhancer`` (bidirectional LSTMs over rows then columns adding a
    residual correction; identity at initialisation) followed by :func:`efficientnet_attention_unet`'s
    network, one model trained end to end. Under the same ``keras.utils.set_random_seed`` the network
    behind the enhancer is initialised exactly as :func:`efficientnet_attention_unet` (the enhancer
    does not advance the seed stream), and the untrained enhancer is the identity, so the two models
    start as the same function. Copy a pre-trained ``lstm_enhancer``'s weights into the
    layer ``{name}_enhancer`` before fine-tuning (``experiments/paper4_lstm_effunet.py`` does);
    :func:`enhancer_of` gives the enhanced image.
    """
    input_shape, num_classes, filters, activation, output_activation, name, dropout, encoder_weights = _effunet_args(
        input_shape, num_classes, filters, activation, output_activation, name, dropout, weights)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    # The enhancer's initialisers take their seeds without advancing Keras' global seed stream (Python's
    # `random`), so under the same seed the network behind it starts with exactly the weights of
    # efficientnet_attention_unet: the ablation compares one initial network with and without the LSTM.
    state = random.getstate()
    enhancer = LSTMEnhancer(units=enhancer_units, spatial_dims=2, name=f"{name}_enhancer")
    random.setstate(state)
    enhanced = enhancer(inputs)
    outputs = _effunet_body(enhanced, num_classes=num_classes, filters=filters, activation=activation,
                            dropout=dropout, encoder_weights=encoder_weights, output_activation=output_activation,
                            norm_momentum=norm_momentum, prefix=name)
    return keras.Model(inputs, outputs, name=name)


def enhancer_of(model: keras.Model) -> keras.Model:
    """The sub-network ``input → {name}_enhancer`` of an :func:`lstm_effunet` model (the enhanced
    image), sharing its weights; for the before/after figures."""
    layer = model.get_layer(f"{model.name}_enhancer")
    return keras.Model(model.input, layer.output, name=f"{model.name}_enhanced_image")
