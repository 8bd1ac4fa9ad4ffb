"""One U-Net builder, the architecture as data: :class:`UNetSpec` describes a network, :func:`unet`
builds it as a functional ``keras.Model`` and :func:`unet_body` builds it inside a bigger model.

Every U-Net of the suite — papers 1 to 5 — is a :class:`UNetSpec` (``brats_keras.models.paperN``
keep the paper's table and thin registered builders that fill one in). A spec names the levels'
channels, the block of every level (plain ``ConvBlock``, pre-activated ``ResidualBlock`` with an
optional ResUNet stem, post-activation ``ResidualBlock``), the normalisation, the down-sampling
(max-pool or a strided residual block), the up-sampling (transposed convolution or nearest
up-sampling), the skip gate (none or an additive ``AttentionGate``), spatial attention after every
max-pool (and, optionally, after every up-sampling), the dropout of every level and after the
bridge, 2D or 3D, the initializer, the activation, an optional pluggable encoder and the head.

Tensors are channels-last: ``(batch, H, W, C)`` for ``spatial_dims=2``, ``(batch, H, W, D, C)`` for
3. With ``depth = len(filters) - 1`` down-sampling steps of factor ``scale`` the spatial sizes must be
divisible by ``scale ** depth``. Level ``l`` (0 = full resolution) has ``filters[l]`` channels in the
encoder and in the decoder; ``filters[depth]`` is the bridge's.

Layer names (``prefix`` is the model's name in :func:`unet`)::

    {prefix}_input                    (unet only)
    {prefix}_enc{i}[_pool|_attention] encoder level i = 1..depth; the max-pool (then the spatial
                                      attention) opens level i (pool_position="level_start") or
                                      closes it (pool_position="level_end") — names only, the
                                      layers come in the same order either way
    {prefix}_bridge[_pool|_attention] the bottom, H / scale**depth, filters[depth] channels
    {prefix}_bridge_dropout           Dropout(bridge_dropout), when bridge_dropout > 0
    {prefix}_dec{j}_attention         skip gate (skip_gate="attention") or decoder spatial attention
    {prefix}_dec{j}_up / _concat      up-sampling and skip concatenation (j = 1 is the deepest)
    {prefix}_dec{j}                   decoder j's block
    {prefix}_head                     1×1 convolution to num_classes channels (num_classes set)

Keras draws a layer's initial weights from the global seed stream when the layer is created and
built, so the layers are created in one fixed order (encoder, bridge, bridge dropout, decoder level by
level: gate, up-sampling, attention, concatenation, block; head): under one
``keras.utils.set_random_seed`` a spec always starts from the same weights.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras

from brats_keras.layers import AttentionGate, ConvBlock, ResidualBlock, SpatialAttention, conv_class
from brats_keras.layers.attention import SPATIAL_ATTENTION_ACTIVATIONS
from brats_keras.layers.conv import (
    check_activation, check_dropout, check_initializer, check_momentum, check_norm, check_positive_int,
    check_spatial_dims,
)
from brats_keras.models.common import check_input_shape, check_name, set_batch_norm_momentum

__all__ = [
    "ApplicationEncoder", "BLOCKS", "DOWNS", "GATES", "LEVEL_ATTENTIONS", "PADDINGS", "POOL_POSITIONS", "UNetSpec",
    "UPS", "doubling_filters", "level_rates", "unet", "unet_body", "unet_decoder", "unet_encoder", "unet_head",
]

BLOCKS = ("plain", "residual", "residual_post")
"""``"plain"``: ``ConvBlock`` (conv → norm → act) × 2; ``"residual"``: pre-activated ``ResidualBlock``
(He et al. 2016b, the ResUNet's); ``"residual_post"``: post-activation ``ResidualBlock`` (He et al. 2015)."""
DOWNS = ("maxpool", "strided")
"""``"maxpool"``: a max-pool (``pool_size``, stride ``scale``) between levels; ``"strided"``: the
level's residual block carries stride ``scale`` on its first convolution (ResUNet)."""
UPS = ("transpose", "nearest")
"""``"transpose"``: ``scale``-sized transposed convolution with stride ``scale`` to the level's
channels; ``"nearest"``: ``UpSampling`` by ``scale`` (channels unchanged)."""
GATES = ("none", "attention")
"""Skip gate: none, or an additive ``AttentionGate`` (Oktay et al. 2018) gated by the coarser decoder map."""
LEVEL_ATTENTIONS = ("none", "spatial")
"""Attention after every max-pool: none, or ``SpatialAttention`` (CBAM's spatial module, paper 2)."""
PADDINGS = ("valid", "same")
POOL_POSITIONS = ("level_start", "level_end")
"""Which level a max-pool is named after: the level it opens (``enc{i}_pool`` before ``enc{i}``, papers
1 and 2) or the level it closes (``enc{i}_pool`` after ``enc{i}``, papers 4 and 5). Names only."""

Encoder = Callable[..., tuple[list, object]]
"""``encoder(x, spec, prefix) -> (skips, bottom)``: ``skips[l]`` is the skip at level ``l``
(``(batch, *S / scale**l, C_l)``, ``None`` where there is none), ``len(skips) == spec.depth``; ``bottom`` is
the ``(batch, *S / scale**depth, C)`` map the decoder starts from."""


def doubling_filters(filters: int, depth: int) -> tuple[int, ...]:
    """``filters · 2**l`` for the levels ``l = 0..depth`` (the last is the bridge): ``(32, 64, ..., 512)``."""
    filters, depth = check_positive_int(filters, "filters"), check_positive_int(depth, "depth")
    return tuple(filters * 2 ** level for level in range(depth + 1))


def level_rates(dropout, depth: int, name: str = "dropout") -> tuple[float, ...]:
    """One dropout rate per level (``depth`` encoder levels + the bridge) from one rate or ``depth + 1``."""
    if isinstance(dropout, Sequence) and not isinstance(dropout, str):
        rates = tuple(dropout)
        if len(rates) != depth + 1:
            raise ValueError(f"{name} must be one rate or {depth + 1} rates (depth={depth} levels + bridge), "
                             f"got {dropout!r}")
    else:
        rates = (dropout,) * (depth + 1)
    try:
        return tuple(check_dropout(rate) for rate in rates)
    except ValueError:
        raise ValueError(f"{name} must hold rates in [0, 1), got {dropout!r}") from None


def _choice(spec, field: str, choices) -> None:
    value = getattr(spec, field)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"UNetSpec.{field} must be one of {choices}, got {value!r}")


def _checked(field: str, check, value):
    """``check(value)`` with the error message naming ``UNetSpec.<field>``."""
    try:
        return check(value)
    except ValueError as error:
        raise ValueError(f"UNetSpec.{field}: {error}") from None


@dataclass(frozen=True)
class UNetSpec:
    """A U-Net's architecture as data; validated on creation (``ValueError`` naming the field).

    Fields:
        filters: channels per level, encoder levels ``0..depth-1`` then the bridge (≥ 2 positive
            ints; ``depth = len(filters) - 1``). The decoder at level ``l`` has ``filters[l]`` channels.
            :func:`doubling_filters` gives ``base · 2**l``.
        spatial_dims: 2 or 3.
        block: one of :data:`BLOCKS` — the block of every level, encoder, bridge and decoder.
        stem: the first encoder block is the ResUNet stem (``ResidualBlock(stem=True)``: conv → BN →
            act → conv + shortcut); ``block="residual"`` only.
        kernel_size: kernel of the blocks' convolutions (3).
        norm: ``"batch"``, ``"instance"`` or ``"none"`` in every block.
        norm_momentum: batch normalisation's moving-average momentum (also given to an encoder).
        activation: Keras activation name of every block.
        kernel_initializer: initializer of the blocks', up-sampling and attention convolutions (the
            head keeps Keras' default ``glorot_uniform``).
        dropout: one rate per level (``len(filters)`` rates) or one rate for all (kept as one number):
            ``Dropout`` between the two convolutions of that level's encoder and decoder blocks
            (paper 2); :attr:`level_dropout` gives the rates. Default 0.
        bridge_dropout: rate of a ``Dropout`` after the bridge (paper 4; Ronneberger et al.'s place).
        down: one of :data:`DOWNS`; ``"strided"`` needs a residual block.
        pool_size: the max-pool's window (its stride is ``scale``): 2, or paper 4's 3.
        pool_padding: ``"valid"`` or ``"same"`` for the max-pool.
        pool_position: one of :data:`POOL_POSITIONS` (layer names only).
        scale: the factor of every down- and up-sampling step (2).
        up: one of :data:`UPS`.
        up_padding: padding of the transposed convolution (``"valid"`` or ``"same"``; equal outputs).
        skip_gate: one of :data:`GATES`; the gate has ``max(filters[l] // 2, 1)`` intermediate channels.
        level_attention: one of :data:`LEVEL_ATTENTIONS`; needs ``down="maxpool"``.
        attention_in_decoder: also put the spatial attention after every decoder up-sampling (paper 2
            §III: "during encoding and decoding"); needs ``level_attention="spatial"`` and no skip gate
            (both layers would be named ``dec{j}_attention``).
        attention_kernel_size: kernel of the spatial attention's convolution (7, CBAM's).
        attention_activation: ``"sigmoid"`` (CBAM) or ``"softmax"`` (paper 2's text: the identity).
        encoder: ``None`` (the U-Net's own encoder, :func:`unet_encoder`) or a callable
            ``encoder(x, spec, prefix) -> (skips, bottom)`` (:data:`Encoder`, e.g. :class:`ApplicationEncoder`).
        num_classes: channels of the 1×1 head, or ``None`` for no head (the body then ends with the
            last decoder block's ``filters[0]`` channels).
        output_activation: the head's activation.
    """

    filters: tuple[int, ...]
    spatial_dims: int = 2
    block: str = "plain"
    stem: bool = False
    kernel_size: int = 3
    norm: str = "batch"
    norm_momentum: float = 0.99
    activation: str = "relu"
    kernel_initializer: object = "glorot_uniform"
    dropout: tuple[float, ...] | float = 0.0
    bridge_dropout: float = 0.0
    down: str = "maxpool"
    pool_size: int = 2
    pool_padding: str = "valid"
    pool_position: str = "level_start"
    scale: int = 2
    up: str = "transpose"
    up_padding: str = "valid"
    skip_gate: str = "none"
    level_attention: str = "none"
    attention_in_decoder: bool = False
    attention_kernel_size: int = 7
    attention_activation: str = "sigmoid"
    encoder: Encoder | None = None
    num_classes: int | None = None
    output_activation: str = "softmax"

    def __post_init__(self):
        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731  (frozen)
        filters = self.filters
        if (not isinstance(filters, Sequence) or isinstance(filters, str) or len(filters) < 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in filters)):
            raise ValueError("UNetSpec.filters must be a sequence of at least 2 positive integers (the encoder "
                             f"levels, then the bridge), got {filters!r}")
        set_("filters", tuple(filters))
        set_("spatial_dims", _checked("spatial_dims", check_spatial_dims, self.spatial_dims))
        _choice(self, "block", BLOCKS)
        if not isinstance(self.stem, bool):
            raise ValueError(f"UNetSpec.stem must be True or False, got {self.stem!r}")
        if self.stem and self.block != "residual":
            raise ValueError(f"UNetSpec.stem=True needs block='residual' (the ResUNet stem), got block={self.block!r}")
        for field in ("kernel_size", "pool_size", "attention_kernel_size"):
            _checked(field, lambda v, f=field: check_positive_int(v, f), getattr(self, field))
        set_("norm", _checked("norm", check_norm, self.norm))
        set_("norm_momentum", _checked("norm_momentum", check_momentum, self.norm_momentum))
        set_("activation", _checked("activation", check_activation, self.activation))
        set_("output_activation",
             _checked("output_activation", lambda v: check_activation(v, "output_activation"), self.output_activation))
        # keras.initializers.get draws a seed from Python's `random` (Keras' default seeds): checking must not
        # advance that stream, or a model's initial weights would depend on how often its spec was made
        state = random.getstate()
        try:
            set_("kernel_initializer", _checked("kernel_initializer", check_initializer, self.kernel_initializer))
        finally:
            random.setstate(state)
        if isinstance(self.dropout, Sequence) and not isinstance(self.dropout, str):
            if len(self.dropout) != len(self.filters):
                raise ValueError(f"UNetSpec.dropout must hold one rate per level ({len(self.filters)}, as filters) "
                                 f"or be one rate, got {self.dropout!r}")
            set_("dropout", tuple(_checked("dropout", check_dropout, rate) for rate in self.dropout))
        else:  # one rate for every level, kept as one number so that replace(filters=...) may change the depth
            set_("dropout", _checked("dropout", check_dropout, self.dropout))
        set_("bridge_dropout", _checked("bridge_dropout", check_dropout, self.bridge_dropout))
        _choice(self, "down", DOWNS)
        if self.down == "strided" and self.block == "plain":
            raise ValueError("UNetSpec.down='strided' needs a residual block (a ConvBlock has no stride), "
                             f"got block={self.block!r}")
        _choice(self, "pool_padding", PADDINGS)
        _choice(self, "pool_position", POOL_POSITIONS)
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 2:
            raise ValueError(f"UNetSpec.scale must be an integer >= 2, got {self.scale!r}")
        _choice(self, "up", UPS)
        _choice(self, "up_padding", PADDINGS)
        _choice(self, "skip_gate", GATES)
        _choice(self, "level_attention", LEVEL_ATTENTIONS)
        if self.level_attention == "spatial" and self.down != "maxpool":
            raise ValueError("UNetSpec.level_attention='spatial' sits after every max-pool and needs "
                             f"down='maxpool', got down={self.down!r}")
        if not isinstance(self.attention_in_decoder, bool):
            raise ValueError(f"UNetSpec.attention_in_decoder must be True or False, got {self.attention_in_decoder!r}")
        if self.attention_in_decoder and self.level_attention != "spatial":
            raise ValueError("UNetSpec.attention_in_decoder=True needs level_attention='spatial', "
                             f"got level_attention={self.level_attention!r}")
        if self.attention_in_decoder and self.skip_gate != "none":
            raise ValueError("UNetSpec.attention_in_decoder=True cannot be combined with skip_gate="
                             f"{self.skip_gate!r}: both would be the layer dec{{j}}_attention")
        _choice(self, "attention_activation", SPATIAL_ATTENTION_ACTIVATIONS)
        if self.encoder is not None and not callable(self.encoder):
            raise ValueError(f"UNetSpec.encoder must be None or a callable encoder(x, spec, prefix), "
                             f"got {self.encoder!r}")
        if self.num_classes is not None:
            _checked("num_classes", lambda v: check_positive_int(v, "num_classes"), self.num_classes)

    @property
    def level_dropout(self) -> tuple[float, ...]:
        """The dropout rate of every level, ``len(filters)`` rates (``dropout`` repeated if one number)."""
        return self.dropout if isinstance(self.dropout, tuple) else (self.dropout,) * len(self.filters)

    @property
    def depth(self) -> int:
        """The number of down-sampling steps, ``len(filters) - 1``."""
        return len(self.filters) - 1

    def replace(self, **changes) -> UNetSpec:
        """A copy with ``changes`` (``dataclasses.replace``), validated again."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------
# Layer factories (the only places a layer class is chosen from the spec)
# --------------------------------------------------------------------------------------------


def _layer_class(kind: str, spatial_dims: int):
    return getattr(keras.layers, f"{kind}{spatial_dims}D")


def _block(spec: UNetSpec, level: int, name: str, *, strides: int = 1, stem: bool = False):
    """The block of ``level`` (``filters[level]`` channels, ``dropout[level]`` between its convolutions)."""
    common = dict(spatial_dims=spec.spatial_dims, kernel_size=spec.kernel_size, norm=spec.norm,
                  activation=spec.activation, dropout=spec.level_dropout[level],
                  kernel_initializer=spec.kernel_initializer, norm_momentum=spec.norm_momentum, name=name)
    if spec.block == "plain":
        return ConvBlock(spec.filters[level], **common)
    return ResidualBlock(spec.filters[level], strides=strides, preactivation=spec.block == "residual", stem=stem,
                         **common)


def _spatial_attention(spec: UNetSpec, name: str):
    return SpatialAttention(spatial_dims=spec.spatial_dims, kernel_size=spec.attention_kernel_size,
                            activation=spec.attention_activation, kernel_initializer=spec.kernel_initializer,
                            name=name)


def _down(x, spec: UNetSpec, name: str):
    """Max-pool (then spatial attention) named ``{name}_pool`` / ``{name}_attention``."""
    x = _layer_class("MaxPooling", spec.spatial_dims)(spec.pool_size, strides=spec.scale, padding=spec.pool_padding,
                                                      name=f"{name}_pool")(x)
    if spec.level_attention == "spatial":
        x = _spatial_attention(spec, f"{name}_attention")(x)
    return x


def _up(x, spec: UNetSpec, level: int, name: str):
    """Up-sampling by ``scale``: a transposed convolution to ``filters[level]`` channels, or nearest."""
    if spec.up == "nearest":
        return _layer_class("UpSampling", spec.spatial_dims)(spec.scale, name=name)(x)
    transpose = getattr(keras.layers, f"Conv{spec.spatial_dims}DTranspose")
    return transpose(spec.filters[level], spec.scale, strides=spec.scale, padding=spec.up_padding,
                     kernel_initializer=spec.kernel_initializer, name=name)(x)


# --------------------------------------------------------------------------------------------
# Encoder, decoder, head, body, model
# --------------------------------------------------------------------------------------------


def unet_encoder(x, spec: UNetSpec, prefix: str):
    """The U-Net's own encoder: ``(batch, *S, C) → (skips, bottom)``.

    Level ``l = 0..depth-1`` is a block of ``filters[l]`` channels at ``S / scale**l`` (its output is the
    skip); between levels a max-pool (and ``level_attention``) or, with ``down="strided"``, the next
    block's stride. The bridge, ``filters[depth]`` channels at ``S / scale**depth``, is the bottom.
    """
    strided = spec.down == "strided"
    skips = []
    for level in range(spec.depth + 1):
        name = f"{prefix}_enc{level + 1}" if level < spec.depth else f"{prefix}_bridge"
        if level > 0 and not strided and spec.pool_position == "level_start":
            x = _down(x, spec, name)
        x = _block(spec, level, name, strides=spec.scale if strided and level > 0 else 1,
                   stem=spec.stem and level == 0)(x)
        if level < spec.depth:
            skips.append(x)
            if not strided and spec.pool_position == "level_end":
                x = _down(x, spec, name)
    return skips, x


def unet_decoder(x, skips, spec: UNetSpec, prefix: str):
    """``depth`` decoder levels from the bottom ``x``: ``(batch, *S / scale**depth, C) → (batch, *S, filters[0])``.

    Decoder ``j = 1..depth`` (deepest first) works at level ``l = depth - j``: the skip ``skips[l]``
    gated by ``x`` (``skip_gate``), up-sampling (``up``) to ``filters[l]`` channels, spatial attention
    (``attention_in_decoder``), concatenation ``[x, skip]`` and a block of ``filters[l]`` channels. A
    level whose skip is ``None`` (an encoder without full-resolution features) has no gate or concatenation.
    """
    if len(skips) != spec.depth:
        raise ValueError(f"the encoder gave {len(skips)} skips, the spec has depth={spec.depth} levels")
    for j in range(1, spec.depth + 1):
        level = spec.depth - j
        skip = skips[level]
        if skip is not None and spec.skip_gate == "attention":
            skip = AttentionGate(max(spec.filters[level] // 2, 1), spatial_dims=spec.spatial_dims,
                                 kernel_initializer=spec.kernel_initializer,
                                 name=f"{prefix}_dec{j}_attention")([skip, x])
        x = _up(x, spec, level, f"{prefix}_dec{j}_up")
        if spec.attention_in_decoder:
            x = _spatial_attention(spec, f"{prefix}_dec{j}_attention")(x)
        if skip is not None:
            x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_dec{j}_concat")([x, skip])
        x = _block(spec, level, f"{prefix}_dec{j}")(x)
    return x


def unet_head(x, spec: UNetSpec, prefix: str):
    """1×1 convolution to ``num_classes`` channels with ``output_activation``: ``(batch, *S, num_classes)``.
    It computes in float32 under any dtype policy (a softmax / sigmoid in bfloat16 rounds its
    probabilities to 3 significant digits), so the model returns float32 (brats_keras.precision)."""
    return conv_class(spec.spatial_dims)(spec.num_classes, 1, activation=spec.output_activation,
                                         name=f"{prefix}_head", dtype="float32")(x)


def unet_body(x, spec: UNetSpec, *, prefix: str):
    """The network of ``spec`` on the tensor ``x`` (no ``Input`` of its own), for use inside a bigger model.

    ``(batch, *S, C) → (batch, *S, num_classes)`` (``(batch, *S, filters[0])`` when ``num_classes`` is
    ``None``): encoder (``spec.encoder`` or :func:`unet_encoder`), ``Dropout(bridge_dropout)``, decoder
    (:func:`unet_decoder`) and head (:func:`unet_head`); layers named ``{prefix}_...``. ``S`` must be
    divisible by ``scale ** depth``.
    """
    if not isinstance(spec, UNetSpec):
        raise ValueError(f"spec must be a UNetSpec, got {type(spec).__name__}")
    prefix = check_name(prefix, "prefix")
    skips, x = (spec.encoder or unet_encoder)(x, spec, prefix)
    skips = list(skips)
    if spec.bridge_dropout:
        x = keras.layers.Dropout(spec.bridge_dropout, name=f"{prefix}_bridge_dropout")(x)
    x = unet_decoder(x, skips, spec, prefix)
    return x if spec.num_classes is None else unet_head(x, spec, prefix)


def unet(spec: UNetSpec, input_shape, *, name: str = "unet") -> keras.Model:
    """The functional ``keras.Model`` of ``spec``: ``Input(input_shape, name=f"{name}_input")`` → :func:`unet_body`.

    ``input_shape`` is ``(H, W, C)`` (2D) or ``(H, W, D, C)`` (3D), spatial sizes divisible by
    ``scale ** depth``; ``name`` is the model's name and the layers' prefix. Raises ``ValueError`` naming
    ``spec``, ``input_shape`` or ``name``.
    """
    if not isinstance(spec, UNetSpec):
        raise ValueError(f"spec must be a UNetSpec, got {type(spec).__name__}")
    input_shape = check_input_shape(input_shape, spec.spatial_dims, spec.depth, spec.scale)
    name = check_name(name)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    return keras.Model(inputs, unet_body(inputs, spec, prefix=name), name=name)


# --------------------------------------------------------------------------------------------
# A keras.applications backbone as the encoder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationEncoder:
    """A ``keras.applications`` backbone (2D) as a U-Net encoder (:data:`Encoder`), e.g. paper 4's EfficientNetB0.

    Called as ``encoder(x, spec, prefix)`` on ``(batch, H, W, 1|3)`` images in [0, 1]: a grey image is
    repeated to three channels (``{prefix}_to_rgb``) and every image scaled by ``input_scale``
    (``{prefix}_to_255``: the applications normalise [0, 255] inside), then the backbone without its top,
    ``application(include_top=False, weights=weights, input_shape=(H, W, 3))`` with its batch
    normalisations given ``spec.norm_momentum``, runs as one nested model ``{prefix}_encoder`` whose
    outputs are the ``skip_layers`` (one per level ``0..depth-1``, ``None`` where the backbone has no
    feature map at that stride; those levels get no skip) and ``bottom_layer``.

    Fields:
        application: the ``keras.applications`` constructor, e.g. ``keras.applications.EfficientNetB0``.
        skip_layers: backbone layer names, one per level (``len == spec.depth``), ``None`` allowed.
        bottom_layer: the backbone layer at stride ``scale ** depth`` the decoder starts from.
        weights: ``"imagenet"`` or ``None`` (resolve ``"auto"`` first:
            :func:`~brats_keras.models.common.resolve_imagenet_weights`).
        input_scale: factor from the input's range to the backbone's (255).
    """

    application: Callable[..., keras.Model]
    skip_layers: tuple[str | None, ...]
    bottom_layer: str
    weights: str | None = None
    input_scale: float = 255.0

    def __post_init__(self):
        if not callable(self.application):
            raise ValueError(f"ApplicationEncoder.application must be a keras.applications constructor, "
                             f"got {self.application!r}")
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        if any(s is not None and not isinstance(s, str) for s in self.skip_layers):
            raise ValueError(f"ApplicationEncoder.skip_layers must be layer names or None, got {self.skip_layers!r}")
        if self.weights not in ("imagenet", None):
            raise ValueError(f"ApplicationEncoder.weights must be 'imagenet' or None, got {self.weights!r}")

    def __call__(self, x, spec: UNetSpec, prefix: str):
        """``(batch, H, W, 1|3)`` → ``(skips, bottom)``; see the class docstring."""
        if spec.spatial_dims != 2:
            raise ValueError(f"ApplicationEncoder is 2D; the spec has spatial_dims={spec.spatial_dims}")
        if len(self.skip_layers) != spec.depth:
            raise ValueError(f"ApplicationEncoder.skip_layers has {len(self.skip_layers)} levels, the spec "
                             f"depth={spec.depth}")
        if x.shape[-1] == 1:
            x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_to_rgb")([x, x, x])
        x = keras.layers.Rescaling(self.input_scale, name=f"{prefix}_to_255")(x)
        base = self.application(include_top=False, weights=self.weights, input_shape=(*x.shape[1:3], 3))
        set_batch_norm_momentum(base, spec.norm_momentum)
        names = [layer for layer in self.skip_layers if layer is not None] + [self.bottom_layer]
        encoder = keras.Model(base.input, [base.get_layer(layer).output for layer in names], name=f"{prefix}_encoder")
        *found, bottom = encoder(x)
        found = iter(found)
        return [None if layer is None else next(found) for layer in self.skip_layers], bottom
