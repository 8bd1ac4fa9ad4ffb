"""3D inference helpers: a crop's prediction back into the original grid (paper 2's whole-volume
scoring) and sliding-window inference over whole volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats_keras.inference import (
    importance_map, sliding_window_inference, to_brats_labels, uncrop_labels, window_starts,
)


def test_uncrop_places_classes_at_the_crop_as_brats_labels():
    classes = np.random.default_rng(0).integers(0, 4, size=(4, 5, 6)).astype(np.uint8)
    crop = ((2, 6), (1, 6), (3, 9))
    full = uncrop_labels(classes, crop, (10, 8, 12))
    assert full.shape == (10, 8, 12) and full.dtype == np.uint8
    inside = full[2:6, 1:6, 3:9]
    np.testing.assert_array_equal(inside, np.where(classes == 3, 4, classes))
    outside = full.copy()
    outside[2:6, 1:6, 3:9] = 0
    assert not outside.any()  # background outside the crop
    assert set(np.unique(full)) <= {0, 1, 2, 4}


def test_uncrop_rejects_a_crop_that_does_not_fit():
    with pytest.raises(ValueError, match="do not fit"):
        uncrop_labels(np.zeros((4, 4, 4), np.uint8), ((0, 4), (0, 4), (0, 5)), (8, 8, 8))
    with pytest.raises(ValueError, match="do not fit"):
        uncrop_labels(np.zeros((4, 4, 4), np.uint8), ((6, 10), (0, 4), (0, 4)), (8, 8, 8))


def test_to_brats_labels_maps_class_3_to_label_4():
    np.testing.assert_array_equal(to_brats_labels(np.array([0, 1, 2, 3])), [0, 1, 2, 4])


# ----------------------------------------------------------------------------------------------
# Sliding-window inference
# ----------------------------------------------------------------------------------------------


def test_window_starts_cover_the_axis_and_end_at_its_last_voxel():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(4, 4, 0.5) == [0] and window_starts(3, 4, 0.9) == [0]
    assert window_starts(9, 4, 0.0) == [0, 4, 5]
    for size, roi, overlap in ((155, 128, 0.5), (240, 128, 0.25), (37, 16, 0.75)):
        starts = window_starts(size, roi, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + roi] = True
        assert covered.all() and starts[-1] + roi == size


def test_gaussian_importance_peaks_in_the_centre_and_stays_positive():
    w = importance_map((9, 7, 5))
    assert w.shape == (9, 7, 5) and w.max() == pytest.approx(1.0) and w.min() > 0
    assert np.unravel_index(np.argmax(w), w.shape) == (4, 3, 2)
    assert w[4, 3, 2] > w[0, 3, 2] > 0 and np.allclose(w, w[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(importance_map((3, 3, 3), "constant"), np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="blending"):
        importance_map((3, 3, 3), "median")


def _voxelwise(batch):
    """A per-voxel "model": softmax of fixed linear maps of the channels (no spatial context)."""
    logits = np.stack([batch[..., 0], batch[..., 1] * 2.0, batch.sum(-1) - 1.0], axis=-1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("blending", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_a_context_free_model_gives_the_same_answer_from_any_windows(blending, overlap):
    volume = np.random.default_rng(1).normal(size=(13, 10, 7, 2)).astype("float32")
    whole = _voxelwise(volume[None])[0]
    tiled = sliding_window_inference(_voxelwise, volume, (6, 4, 8), overlap=overlap, blending=blending,
                                     batch_size=3)
    assert tiled.shape == (13, 10, 7, 3)  # z padded 7 → 8 for the window, then cut back
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_windows_are_blended_with_their_weights():
    volume = np.zeros((6, 1, 1, 1), np.float32)
    calls = []

    def window_index(batch):  # each window predicts its own call number everywhere
        out = np.zeros(batch.shape[:4] + (1,), np.float32)
        for b in range(len(batch)):
            out[b] = len(calls)
            calls.append(b)
        return out

    result = sliding_window_inference(window_index, volume, (4, 1, 1), overlap=0.5, blending="constant")
    # windows [0:4] → 0 and [2:6] → 1: voxels 2, 3 are the mean 0.5
    np.testing.assert_allclose(result[:, 0, 0, 0], [0, 0, 0.5, 0.5, 1, 1])


def test_window_covering_the_volume_equals_one_full_pass_of_a_keras_model():
    import keras

    inputs = keras.Input((8, 8, 8, 2))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv3D(3, 1, activation="softmax")(x))
    volume = np.random.default_rng(2).uniform(size=(8, 8, 8, 2)).astype("float32")
    tiled = sliding_window_inference(model.predict_on_batch, volume, (8, 8, 8), overlap=0.5)
    np.testing.assert_allclose(tiled, np.asarray(model.predict_on_batch(volume[None]))[0], atol=1e-6)


def test_bad_sliding_window_arguments():
    volume = np.zeros((4, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(_voxelwise, volume, (2, 2, 2), overlap=1.0)
    with pytest.raises(ValueError, match="roi"):
        sliding_window_inference(_voxelwise, volume[..., 0], (2, 2, 2))
    with pytest.raises(ValueError, match="predict returned"):
        sliding_window_inference(lambda b: b[:, :1], volume, (2, 2, 2))


def test_a_spec_carries_the_bias_correction_its_model_was_trained_with():
    from brats_keras.data.correction import CorrectionSettings
    from brats_keras.data.slices2d import SliceSettings
    from brats_keras.inference import InferenceSpec

    slices = SliceSettings(modalities=("t1", "t1ce", "t2", "flair"), normalization="none", size=32)
    spec = InferenceSpec.for_slices(slices, model="unet2d_multimodal", correction=CorrectionSettings(shrink_factor=8))
    again = InferenceSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and again.correction.shrink_factor == 8
    assert again.input_modalities == CorrectionSettings().modalities
    assert InferenceSpec.from_json(InferenceSpec.for_slices(slices).to_json()).correction is None
    with pytest.raises(ValueError, match="correction covers"):
        InferenceSpec.for_slices(slices, correction=CorrectionSettings(modalities=("t1",)))
    with pytest.raises(ValueError, match="with and without bias-field correction"):
        InferenceSpec.from_run_config({"name": "paper3_unet_dwell", "data": {"slices": {}, "correction": {}}})
