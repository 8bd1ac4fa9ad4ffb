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
Every network is a spec of the one U-Net builder (:mod:`brats_keras.models.unet`): :data:`UNET`
changed as :data:`TABLE3` says.
"""

from __future__ import annotations

import random
from pathlib import Path

import keras

from brats_keras.layers import LSTMEnhancer
from brats_keras.layers.conv import check_dropout
from brats_keras.models.common import check_model_args, imagenet_weights_file, resolve_imagenet_weights
from brats_keras.models.registry import register_model
from brats_keras.models.unet import ApplicationEncoder, UNetSpec, doubling_filters, unet, unet_body

__all__ = [
    "EFFICIENTNET_SKIPS",
    "PAPER_INPUT_SHAPE",
    "TABLE1",
    "TABLE3",
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

UNET = UNetSpec(filters=doubling_filters(TABLE1["filters"], TABLE1["depth"]), block="plain", norm="batch",
                activation=TABLE1["activation"], pool_size=TABLE1["pool_size"], pool_padding="same",
                pool_position="level_end", bridge_dropout=TABLE1["dropout"], up="transpose", num_classes=2)
"""Table 1's U-Net, shared by the four models where it applies: encoder level i a ``ConvBlock`` (two
3×3 convolutions + batch norm + Leaky-ReLU) of ``filters·2^i`` channels closed by a max-pool (kernel 3,
stride 2, ``same`` padding); the bridge ``filters·2^depth`` channels with ``Dropout`` after it
(Ronneberger et al.'s place for dropout, "at the end of the contracting path"); decoder j (deepest
first) a 2×2 transposed convolution with stride 2, the (gated) skip concatenated, a block of the
level's channels; a 1×1 softmax head over background and tumour."""

TABLE3 = {
    "unet2d_binary": {"block": "plain", "skip_gate": "none"},
    "attention_unet2d": {"block": "plain", "skip_gate": "attention"},
    # post-activation residual blocks (conv → BN → act → conv → BN, + shortcut, act), as the residual
    # attention U-Nets of the literature (e.g. Maji et al. 2022) use
    "res_attention_unet2d": {"block": "residual_post", "skip_gate": "attention"},
    "efficientnet_attention_unet": {"block": "plain", "skip_gate": "attention"},
}
"""Paper 4, Table 3's models: what each changes in :data:`UNET` (the EfficientNet one also its encoder)."""

EFFICIENTNET_ENCODER = {"application": keras.applications.EfficientNetB0, "skip_layers": (None, *EFFICIENTNET_SKIPS),
                        "bottom_layer": "top_activation"}
"""The fine-tuned U-Net's encoder (:class:`~brats_keras.models.unet.ApplicationEncoder`): EfficientNetB0
without its top, no skip at full resolution, :data:`EFFICIENTNET_SKIPS` at strides 2..16, the bottom at 32."""


def _table3(model, input_shape, num_classes, filters, depth, activation, output_activation, name, *, pool_size,
            dropout, norm_momentum) -> keras.Model:
    """One of Table 3's baselines (:data:`TABLE3`): :data:`UNET` with the builder's arguments."""
    input_shape, num_classes, filters, depth, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, depth, activation, output_activation, name)
    spec = UNET.replace(filters=doubling_filters(filters, depth), activation=activation, pool_size=pool_size,
                        bridge_dropout=check_dropout(dropout), norm_momentum=norm_momentum, num_classes=num_classes,
                        output_activation=output_activation, **TABLE3[model])
    return unet(spec, input_shape, name=name)


@register_model("unet2d_binary")
def unet2d_binary(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"], depth=TABLE1["depth"],
                  activation=TABLE1["activation"], pool_size=TABLE1["pool_size"], dropout=TABLE1["dropout"],
                  output_activation="softmax", norm_momentum=0.99, name="unet2d_binary") -> keras.Model:
    """Table 3's U-Net with Table 1's settings: ``(B, 256, 256, 1) → (B, 256, 256, 2)``.

    Two 3×3 convolutions + batch norm + Leaky-ReLU per level, channels ``24·(1, 2, 4, 8 | 16)``,
    3×3 max-pool with stride 2, dropout 0.5 after the bridge, a 1×1 softmax head.
    """
    return _table3("unet2d_binary", input_shape, num_classes, filters, depth, activation, output_activation,
                   name, pool_size=pool_size, dropout=dropout, norm_momentum=norm_momentum)


@register_model("attention_unet2d")
def attention_unet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"], depth=TABLE1["depth"],
                     activation=TABLE1["activation"], pool_size=TABLE1["pool_size"], dropout=TABLE1["dropout"],
                     output_activation="softmax", norm_momentum=0.99, name="attention_unet2d") -> keras.Model:
    """Table 3's Attention U-Net: :func:`unet2d_binary` with an additive attention gate on every
    skip, gated by the coarser decoder level (``AttentionGate``, intermediate channels = half the
    skip's)."""
    return _table3("attention_unet2d", input_shape, num_classes, filters, depth, activation, output_activation,
                   name, pool_size=pool_size, dropout=dropout, norm_momentum=norm_momentum)


@register_model("res_attention_unet2d")
def res_attention_unet2d(input_shape=PAPER_INPUT_SHAPE, num_classes=2, filters=TABLE1["filters"],
                         depth=TABLE1["depth"], activation=TABLE1["activation"], pool_size=TABLE1["pool_size"],
                         dropout=TABLE1["dropout"], output_activation="softmax", norm_momentum=0.99,
                         name="res_attention_unet2d") -> keras.Model:
    """Table 3's Res Attention U-Net: :func:`attention_unet2d` with residual blocks (two 3×3
    convolutions + batch norm, Leaky-ReLU, identity or 1×1 projection shortcut) at every level."""
    return _table3("res_attention_unet2d", input_shape, num_classes, filters, depth, activation, output_activation,
                   name, pool_size=pool_size, dropout=dropout, norm_momentum=norm_momentum)


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
    input_shape, name, spec = _effunet(input_shape, num_classes, filters, activation, output_activation, name,
                                       dropout, weights, norm_momentum)
    return unet(spec, input_shape, name=name)


def _effunet(input_shape, num_classes, filters, activation, output_activation, name, dropout, weights,
             norm_momentum):
    """The EfficientNet U-Nets' arguments checked (``H``, ``W`` divisible by 32; 1 or 3 channels), the
    encoder weights resolved (:func:`resolve_encoder_weights`): ``(input_shape, name, spec)``.

    The spec is :data:`UNET` over five levels (strides 1..32, ``filters · 2^l`` decoder channels) with
    the :data:`EFFICIENTNET_ENCODER` (no skip at full resolution; its own channels, so the spec's
    encoder widths are unused) and attention gates on the four skips."""
    input_shape, num_classes, filters, _, activation, output_activation, name = check_model_args(
        input_shape, num_classes, filters, 5, activation, output_activation, name)
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape {input_shape!r}: EfficientNet takes 1 (grey, repeated) or 3 channels")
    dropout = check_dropout(dropout)
    encoder = ApplicationEncoder(weights=resolve_encoder_weights(weights), **EFFICIENTNET_ENCODER)
    spec = UNET.replace(filters=doubling_filters(filters, 5), activation=activation, bridge_dropout=dropout,
                        norm_momentum=norm_momentum, encoder=encoder, num_classes=num_classes,
                        output_activation=output_activation, **TABLE3["efficientnet_attention_unet"])
    return input_shape, name, spec


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
    input_shape, name, spec = _effunet(input_shape, num_classes, filters, activation, output_activation, name,
                                       dropout, weights, norm_momentum)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    # The enhancer's initialisers take their seeds without advancing Keras' global seed stream (Python's
    # `random`), so under the same seed the network behind it starts with exactly the weights of
    # efficientnet_attention_unet: the ablation compares one initial network with and without the LSTM.
    state = random.getstate()
    enhancer = LSTMEnhancer(units=enhancer_units, spatial_dims=2, name=f"{name}_enhancer")
    random.setstate(state)
    return keras.Model(inputs, unet_body(enhancer(inputs), spec, prefix=name), name=name)


def enhancer_of(model: keras.Model) -> keras.Model:
    """The sub-network ``input → {name}_enhancer`` of an :func:`lstm_effunet` model (the enhanced
    image), sharing its weights; for the before/after figures."""
    layer = model.get_layer(f"{model.name}_enhancer")
    return keras.Model(model.input, layer.output, name=f"{model.name}_enhanced_image")
