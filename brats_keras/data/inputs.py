"""The experiments' input data for the Keras backend in use, chosen once here (no TensorFlow import).

:func:`input_dataset` is what every ``experiments/paperN_*.py`` batches an index with:

* TensorFlow backend: the tf.data pipeline, :func:`brats_keras.data.pipeline.make_dataset` (unchanged:
  the same batches, shuffles and augmentation as before this module existed);
* JAX (or PyTorch): :class:`brats_keras.data.pydataset.IndexPyDataset` over the same index and caches,
  with the same arguments; TensorFlow is never imported, so it runs where TensorFlow is not installed.

The PyDataset fetches with :data:`PYDATASET_WORKERS` threads (``use_multiprocessing=False``): one batch
is gathered (NumPy copies out of memory maps, SciPy augmentation) while the device runs the step on the
previous one. Processes are not used: the index holds memory maps and caches that every worker would
get a pickled copy of, and forking a process that runs JAX's threads can deadlock.

Under a ``keras.distribution`` distribution (``DataParallel`` over several devices,
:func:`brats_keras.training.select_strategy`) JAX shards every batch over the devices, and a batch
that does not divide evenly fails. The global batch is a multiple of the devices
(:func:`~brats_keras.training.global_batch_size`); only an epoch's last, shorter batch can be uneven,
and it is cut to a multiple of the devices: at most ``devices - 1`` samples per epoch are left out
(other ones every epoch when shuffled), and one line says so. tf.distribute splits such a batch
unevenly instead, so on TensorFlow nothing is left out.
"""

from __future__ import annotations

from typing import Protocol

import keras
import numpy as np

from brats_keras.data.pydataset import IndexPyDataset
from brats_keras.errors import BratsKerasError

PYDATASET_WORKERS = 2
"""Threads fetching batches of the PyDataset (the next batch is read while the current one trains)."""


class ArrayIndex(Protocol):
    """Random access to prepared samples: what both pipelines batch (``SliceIndex``, ``VolumeIndex``, ...)."""

    num_classes: int
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def uses_tf_data() -> bool:
    """Whether :func:`input_dataset` builds tf.data pipelines (the TensorFlow backend)."""
    return keras.backend.backend() == "tensorflow"


def batch_divisor() -> int:
    """Devices the active ``keras.distribution`` splits the batch over (1 without a distribution)."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])


def input_dataset(index: ArrayIndex, *, batch_size: int, shuffle: bool = False, seed: int = 0, augment=None):
    """Batches ``(x float32 (B, *x_shape), one-hot y float32)`` of ``index`` for ``fit`` / ``evaluate`` /
    ``predict`` on the current backend (module docstring). ``batch_size`` is the global batch
    (:meth:`brats_keras.runner.Context.batch`); ``shuffle`` reshuffles every epoch, seeded by ``seed``;
    ``augment`` (:class:`~brats_keras.data.augment.AugmentSettings`, 2D indices) augments each batch."""
    if uses_tf_data():
        from brats_keras.data.pipeline import make_dataset  # imports TensorFlow: only on its backend

        return make_dataset(index, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment)
    divisor = batch_divisor()
    dataset = IndexPyDataset(index, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment,
                             batch_multiple=divisor, workers=PYDATASET_WORKERS, use_multiprocessing=False)
    left_out = len(index) - dataset.samples_per_epoch
    if left_out and not dataset.samples_per_epoch:
        raise BratsKerasError(f"data: {len(index)} sample(s) cannot be split over {divisor} devices; use fewer "
                              "devices (--strategy one) or more data")
    if left_out:
        print(f"data: {len(index)} samples in batches of {batch_size} over {divisor} devices: the last batch is "
              f"cut to a multiple of {divisor}, {left_out} sample(s) left out per epoch", flush=True)
    return dataset
