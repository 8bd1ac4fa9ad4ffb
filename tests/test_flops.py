"""The analytic FLOP counter (brats_keras.flops) on models small enough to count by hand."""

from __future__ import annotations

import keras
import pytest

from brats_keras.flops import TRAIN_STEP_FACTOR, count_flops
from brats_keras.models import create_model


def _model(input_shape, *layers):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_conv2d_counts_two_flops_per_mac_at_every_output_position():
    same = count_flops(_model((8, 8, 3), keras.layers.Conv2D(4, 3, padding="same")))
    assert same.forward == 2 * (8 * 8) * (3 * 3 * 3) * 4 == 13824 and same.by_type == {"Conv2D": 13824}
    strided = count_flops(_model((9, 9, 3), keras.layers.Conv2D(4, 3, strides=2)))  # 4 × 4 outputs
    assert strided.forward == 2 * (4 * 4) * (3 * 3 * 3) * 4 == 3456
    grouped = count_flops(_model((8, 8, 4), keras.layers.Conv2D(6, 1, groups=2)))  # each output reads 2 channels
    assert grouped.forward == 2 * 64 * 2 * 6 == 1536


def test_conv3d_transpose_scatters_every_input_voxel_through_the_kernel():
    up = count_flops(_model((4, 4, 4, 3), keras.layers.Conv3DTranspose(2, 2, strides=2)))
    assert up.forward == 2 * 4**3 * (2 * 2 * 2) * 3 * 2 == 6144
    # overlapping windows: 8³ outputs, but the work is still per input voxel (not 2 · 8³ · 27 · 3 · 2)
    overlap = count_flops(_model((4, 4, 4, 3), keras.layers.Conv3DTranspose(2, 3, strides=2, padding="same")))
    assert overlap.forward == 2 * 4**3 * 27 * 3 * 2 == 20736


def test_dense_counts_every_row_of_its_input():
    assert count_flops(_model((7,), keras.layers.Dense(5))).forward == 2 * 7 * 5 == 70
    assert count_flops(_model((3, 7), keras.layers.Dense(5))).forward == 2 * 3 * 7 * 5 == 210


def test_recurrent_layers_count_input_and_recurrent_kernels_per_timestep():
    lstm = count_flops(_model((6, 3), keras.layers.LSTM(4)))
    assert lstm.forward == 2 * 6 * (3 * 16 + 4 * 16) == 1344
    both = count_flops(_model((6, 3), keras.layers.Bidirectional(keras.layers.LSTM(4))))
    assert both.forward == 2 * 1344 and both.by_type == {"LSTM": 2688}


class _Wrapper(keras.layers.Layer):
    """A custom layer holding a Conv1D, as the project's ConvBlock / ResidualBlock do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv1D(2, 3, padding="same")

    def call(self, x):
        return self.conv(x)


def test_nested_models_custom_layers_and_shared_layers_are_all_counted():
    inner = keras.Sequential([keras.Input((10, 4)), keras.layers.Dense(3)])  # 2·10·4·3 = 240
    shared = keras.layers.Dense(3)  # on (10, 2), twice: 2 · 2·10·2·3 = 240
    inputs = keras.Input((10, 4))
    x = _Wrapper()(inputs)  # Conv1D 4 → 2, kernel 3, 10 positions: 2·10·3·4·2 = 480
    y = keras.layers.Concatenate()([inner(inputs), shared(x), shared(x)])
    count = count_flops(keras.Model(inputs, y))
    assert count.forward == 240 + 240 + 480 and count.calls == 4
    assert count.by_type == {"Dense": 480, "Conv1D": 480}
    assert count.train_step(5) == TRAIN_STEP_FACTOR * 5 * 960


def test_a_weighted_layer_without_a_rule_is_named_not_silently_free():
    class Matrix(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3))

        def call(self, x):
            return keras.ops.matmul(x, self.w)

    count = count_flops(_model((4,), Matrix(), keras.layers.Dense(2)))
    assert count.forward == 2 * 3 * 2 and count.uncounted == ["Matrix"]


@pytest.mark.parametrize("name, shape, flops", [
    # by hand, docs/performance.md: the encoder/decoder convolutions, the 2×2 transposed up-samplings, the head
    ("unet2d", (128, 128, 2), 6_029_312_000),
    ("u_resunet", (128, 128, 2), 13_746_831_360),
    ("unet3d_modified", (128, 128, 128, 3), 242_564_988_928),
])
def test_paper_models_match_the_hand_count(name, shape, flops):
    count = count_flops(create_model(name, input_shape=shape))
    assert count.forward == flops and count.uncounted == []
