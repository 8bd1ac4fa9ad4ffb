"""Paper 5's models: the EfficientNetB1 4-class classifier and the residual U-Net segmenter.

Paper: "Brain tumor multi classification and segmentation in MRI images using deep learning"
(``shared/papers/004_91819a1a59d0cf73.txt``), §3.1–3.2 and §4.2; the project's reading is
``shared/REPLICATION.md``, "Paper 5"; choices in ``docs/paper5.md``.

- ``efficientnet_b1_classifier``: ``(B, H, W, 3)`` in [0, 1] → ``(B, 4)`` softmax. A
  ``keras.applications.EfficientNetB1`` base without its top (frozen when its ImageNet weights are
  used, §3.1: "The base model is frozen"), global average pooling, Dense 512 + ReLU, dropout 0.4,
  Dense 4 + softmax (§3.1, Table 2).
- ``residual_unet2d_binary``: ``(B, H, W, C)`` → ``(B, H, W, 1)`` sigmoid. Residual blocks (two 3×3
  convolutions, each followed by batch norm, ReLU; identity / 1×1 projection shortcut) at every level,
  64 → 512 channels over four levels, a 1024-channel bottleneck (§4.2), 2×2 transposed convolutions
  and skip concatenation in the decoder, a 1-filter sigmoid head.

Layer names: ``{name}_rescale``, ``{name}_base``, ``{name}_gap``, ``{name}_dense``, ``{name}_dropout``,
``{name}_head`` (classifier); ``{name}_enc{i}[_pool]``, ``{name}_bridge``, ``{name}_dec{j}[_up, _concat]``,
``{name}_head`` (segmenter).
"""

from __future__ import annotations

import keras

from brats_keras.layers import ResidualBlock
from brats_keras.layers.conv import check_dropout, check_positive_int
from brats_keras.models.common import check_model_args, resolve_imagenet_weights, set_batch_norm_momentum
from brats_keras.models.registry import register_model
from brats_keras.models.unet import UNetSpec, doubling_filters, unet

__all__ = ["CLASSIFIER_INPUT_SHAPE", "SEGMENTER", "SEGMENTER_INPUT_SHAPE", "conv_layer_counts",
           "efficientnet_b1_classifier", "residual_unet2d_binary"]

CLASSIFIER_INPUT_SHAPE = (240, 240, 3)
"""EfficientNetB1's native resolution (Keras' default for B1); the paper states none."""
SEGMENTER_INPUT_SHAPE = (256, 256, 3)
"""The LGG slices as released: 256 × 256, three channels (pre-contrast, FLAIR, post-contrast)."""
TABLE2 = {"dense": 512, "dropout": 0.4}
"""Paper 5, §3.1 / Table 2: the head's Dense 512 and dropout 0.4."""
SEGMENTER = UNetSpec(filters=doubling_filters(64, 4), block="residual_post", norm="batch", pool_position="level_end",
                     up="transpose", num_classes=1, output_activation="sigmoid")
"""Paper 5, §4.2: post-activation residual blocks at every level, 64 → 512 channels over four levels
closed by 2×2 max-pools, a 1024-channel bottleneck, 2×2 transposed convolutions and skip
concatenation, a 1-filter sigmoid head."""


@register_model("efficientnet_b1_classifier")
def efficientnet_b1_classifier(input_shape=CLASSIFIER_INPUT_SHAPE, num_classes=4, dense=TABLE2["dense"],
                               dropout=TABLE2["dropout"], weights="auto", freeze_base=None, norm_momentum=0.99,
                               name="efficientnet_b1_classifier") -> keras.Model:
    """Paper 5's classifier: ``(B, H, W, 3)`` images in [0, 1] → ``(B, num_classes)`` probabilities.

    The paper normalises its images to [0, 1]; Keras' EfficientNet rescales its input by 1/255 and
    normalises with the ImageNet statistics inside the model, so it expects [0, 255]. The layer
    ``{name}_rescale`` multiplies by 255 first, so a [0, 1] image reaches the base's own
    normalisation exactly as the ImageNet weights were trained (tested).

    Args:
        weights: ``"auto"`` (ImageNet if ``~/.keras/models/efficientnetb1_notop.h5`` exists, else
            random with a warning; never downloads), ``"imagenet"`` (error if absent) or ``None``.
        freeze_base: ``None`` freezes the base exactly when ImageNet weights are used (the paper's
            frozen base; a random base must be trained); ``True`` / ``False`` force it.
        dense, dropout: the head (Table 2: 512 units, dropout 0.4).
        norm_momentum: momentum of the base's batch normalisations (Keras' 0.99; the quick profile's
            short runs of a randomly initialised base use 0.9).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"input_shape must be (H, W, 3) with H, W ≥ 32, got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    dense = check_positive_int(dense, "dense")
    dropout = check_dropout(dropout)
    if freeze_base not in (None, True, False):
        raise ValueError(f"freeze_base must be None, True or False, got {freeze_base!r}")
    resolved = resolve_imagenet_weights(weights, "b1")
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = keras.layers.Rescaling(255.0, name=f"{name}_rescale")(inputs)
    base = keras.applications.EfficientNetB1(include_top=False, weights=resolved, input_shape=input_shape,
                                             name=f"{name}_base")
    set_batch_norm_momentum(base, norm_momentum)
    base.trainable = not (resolved == "imagenet" if freeze_base is None else freeze_base)
    # training=False keeps a frozen base's batch norms in inference mode (Keras' transfer-learning rule)
    x = base(x, training=False) if not base.trainable else base(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    x = keras.layers.Dense(dense, activation="relu", name=f"{name}_dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=f"{name}_head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("residual_unet2d_binary")
def residual_unet2d_binary(input_shape=SEGMENTER_INPUT_SHAPE, filters=64, depth=4, activation="relu",
                           norm_momentum=0.99, name="residual_unet2d_binary") -> keras.Model:
    """Paper 5's residual U-Net: ``(B, H, W, C)`` → ``(B, H, W, 1)`` tumour probability.

    Encoder level ``i`` (1…depth): a post-activation residual block of ``filters · 2^(i−1)``
    channels (3×3 conv → BN → ReLU → 3×3 conv → BN, + shortcut, ReLU; the shortcut a 1×1 conv + BN
    where the channels change), then 2×2 max-pooling. Bottleneck: a residual block of
    ``filters · 2^depth`` channels (1024 with the defaults, §4.2). Decoder level ``j``: a 2×2
    transposed convolution with stride 2, concatenation with the skip, a residual block. Head: a
    1×1 convolution with one filter and a sigmoid (§4.2). :func:`conv_layer_counts` counts its
    layers against the paper's "23 convolutional layers, 10 residual blocks".
    """
    input_shape, _, filters, depth, activation, _, name = check_model_args(
        input_shape, 2, filters, depth, activation, "sigmoid", name)
    spec = SEGMENTER.replace(filters=doubling_filters(filters, depth), activation=activation,
                             norm_momentum=norm_momentum)
    return unet(spec, input_shape, name=name)


def conv_layer_counts(model: keras.Model) -> dict[str, int]:
    """Convolutions of a model by kind, residual blocks included (their sub-layers counted):
    ``conv3x3``, ``conv1x1_shortcut`` (projection shortcuts), ``transposed``, ``head`` (other 1×1),
    ``residual_blocks``, and ``total`` (every convolution)."""
    counts = {"conv3x3": 0, "conv1x1_shortcut": 0, "transposed": 0, "head": 0, "residual_blocks": 0}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ResidualBlock):
            counts["residual_blocks"] += 1
        if isinstance(layer, keras.layers.Conv2DTranspose):
            counts["transposed"] += 1
        elif isinstance(layer, keras.layers.Conv2D):
            size = tuple(layer.kernel_size)
            if size == (3, 3):
                counts["conv3x3"] += 1
            elif "shortcut" in layer.name or "proj" in layer.name:
                counts["conv1x1_shortcut"] += 1
            else:
                counts["head"] += 1
    counts["total"] = counts["conv3x3"] + counts["conv1x1_shortcut"] + counts["transposed"] + counts["head"]
    return counts
