"""Placing a 3D crop's prediction back into the original grid (paper 2's whole-volume scoring)."""

from __future__ import annotations

import numpy as np
import pytest

from brats_keras.inference import to_brats_labels, uncrop_labels


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
