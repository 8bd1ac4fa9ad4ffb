"""``keras.utils.PyDataset`` over the same indices as the tf.data pipelines, for the JAX and
PyTorch backends (no TensorFlow in the input path)."""

from __future__ import annotations

import math

import keras
import numpy as np

from brats_keras.data.pipeline import ArrayIndex


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(...,)`` integer class indices → ``(..., num_classes)`` float32."""
    return np.eye(num_classes, dtype=np.float32)[labels]


class IndexPyDataset(keras.utils.PyDataset):
    """Batches ``(x, one-hot y)`` from a :class:`SliceIndex` or :class:`VolumeIndex`.

    Shuffles with a seeded generator at the start and after every epoch, like the tf.data
    pipeline (the two orders differ; both are reproducible for a seed).
    """

    def __init__(self, index: ArrayIndex, *, batch_size: int, shuffle: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.index = index
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(index))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range [0, {len(self)})")
        x, y = self.index.gather(self._order[i * self.batch_size : (i + 1) * self.batch_size])
        return x, one_hot(y, self.index.num_classes)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)
