"""``keras.utils.PyDataset`` over the same indices as the tf.data pipelines, for the JAX and
PyTorch backends (no TensorFlow in the input path)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np

from brats_keras.data.augment import AugmentSettings, augment_batch_numpy, check_augment

if TYPE_CHECKING:  # data.inputs imports this module
    from brats_keras.data.inputs import ArrayIndex


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(...,)`` integer class indices → ``(..., num_classes)`` float32; with ``num_classes == 1`` the
    binary mask itself as the one channel (as :func:`brats_keras.data.pipeline.make_dataset`)."""
    if num_classes == 1:
        return np.asarray(labels, dtype=np.float32)[..., None]
    return np.eye(num_classes, dtype=np.float32)[labels]


class IndexPyDataset(keras.utils.PyDataset):
    """Batches ``(x, one-hot y)`` from a :class:`SliceIndex` or :class:`VolumeIndex`.

    Shuffles with a seeded generator at the start and after every epoch, like the tf.data
    pipeline (the two orders differ; both are reproducible for a seed).

    ``augment`` (2D indices) applies :func:`brats_keras.data.augment.augment_batch_numpy` (NumPy /
    SciPy, the same transform, interpolation and fill as the tf.data pipeline's, other random numbers)
    before the one-hot encoding; batch ``i`` of epoch ``e`` draws from ``default_rng((seed, e, i))``,
    so batches are reproducible whatever order the workers fetch them in, and differ between epochs.

    ``batch_multiple`` (the devices a ``keras.distribution`` shards each batch over) cuts the last,
    shorter batch to a multiple of it, so every batch divides evenly over the devices: the samples
    from position ``samples_per_epoch`` on in each epoch's order are left out (fewer than
    ``batch_multiple``; other ones each epoch when shuffling). ``batch_size`` must be a multiple
    of it. With 1 (the default) every sample is used.
    """

    def __init__(self, index: ArrayIndex, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 augment: AugmentSettings | None = None, batch_multiple: int = 1, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_multiple < 1 or batch_size % batch_multiple:
            raise ValueError(f"batch_size {batch_size} must be a multiple of batch_multiple {batch_multiple} "
                             "(the devices each batch is split over)")
        augmenting = check_augment(augment, index.x_shape, index.y_shape)
        if augmenting and seed < 0:
            raise ValueError(f"seed: must be >= 0 with augment (numpy SeedSequence), got {seed}")
        self.index = index
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augmenting else None
        self._seed = seed
        self.samples_per_epoch = len(index) - (len(index) % batch_size) % batch_multiple
        self._epoch = 0
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(index))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range [0, {len(self)})")
        stop = min((i + 1) * self.batch_size, self.samples_per_epoch)
        x, y = self.index.gather(self._order[i * self.batch_size : stop])
        if self.augment is not None:
            rng = np.random.default_rng((self._seed, self._epoch, i))
            if y.ndim == 1:  # one label per image: augment the images alone
                x = augment_batch_numpy(x, np.zeros(x.shape[:3], np.uint8), rng, self.augment)[0]
            else:
                x, y = augment_batch_numpy(x, y, rng, self.augment)
        return x, one_hot(y, self.index.num_classes)

    def on_epoch_end(self) -> None:
        self._epoch += 1
        if self.shuffle:
            self._rng.shuffle(self._order)
