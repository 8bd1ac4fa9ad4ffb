"""tf.data pipelines over a random-access index (:class:`SliceIndex` or :class:`VolumeIndex`).

``Dataset.range(N) → shuffle (seeded, reshuffled each epoch) → batch → gather → [augment] → one-hot
(parallel) → prefetch``. Shuffling touches only integer indices, so memory is bounded by a few batches
whatever the dataset size; the arrays themselves stay memory-mapped on disk.

The experiments reach it through :func:`brats_keras.data.inputs.input_dataset`, which picks it on the
TensorFlow backend and :class:`~brats_keras.data.pydataset.IndexPyDataset` on the others.
"""

from __future__ import annotations

import tensorflow as tf

from brats_keras.data.augment import AugmentSettings, augment_batch, augment_images, augment_seeds, check_augment
from brats_keras.data.inputs import ArrayIndex  # noqa: F401  (its home before data.inputs; TF-free there)


def make_dataset(
    index: ArrayIndex,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    one_hot: bool = True,
    augment: AugmentSettings | None = None,
) -> tf.data.Dataset:
    """Batches ``(x float32 (B, *x_shape), y float32 (B, *y_shape, num_classes))``.

    With ``one_hot=False`` ``y`` stays uint8 class indices ``(B, *y_shape)``. An index with
    ``num_classes == 1`` (a binary mask for a single sigmoid channel, paper 5's LGG index) gives
    ``y`` float32 ``(B, *y_shape, 1)``: the mask itself as the one channel.

    ``augment`` (2D images: ``x_shape`` ``(H, W, C)``, ``y_shape`` ``(H, W)`` for masks or ``()`` for
    one class per image, whose label is left as it is) applies
    :func:`brats_keras.data.augment.augment_batch` to every batch after the gather and before the
    one-hot encoding: random rotation, zoom, flips and elastic deformation, the image resampled
    bilinearly and the labels with nearest neighbour through the same coordinates. Each sample gets a
    seed from ``Dataset.random(seed)`` (:func:`~brats_keras.data.augment.augment_seeds`), drawn after
    the shuffle: every epoch augments differently, and the same ``seed`` gives the same batches in
    every run. ``None`` or settings that are not ``enabled`` leave the pipeline exactly as without.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    augmenting = check_augment(augment, index.x_shape, index.y_shape)
    n = len(index)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if augmenting:
        ds = tf.data.Dataset.zip((ds, augment_seeds(seed)))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def gather(indices, *seeds):
        x, y = tf.numpy_function(index.gather, [indices], (tf.float32, tf.uint8), stateful=False)
        x.set_shape((None, *index.x_shape))
        y.set_shape((None, *index.y_shape))
        return (x, y, *seeds)

    # The gather runs Python (NumPy copies out of memory maps) and holds the GIL: parallel calls
    # only contend for it (measured 3-4x slower on 2 cores), so it runs sequentially while the
    # augmentation and the one-hot encoding, pure TensorFlow, run in parallel.
    ds = ds.map(gather, num_parallel_calls=1)
    if augmenting:
        per_image = len(index.y_shape) == 0
        ds = ds.map(
            (lambda x, y, seeds: (augment_images(x, seeds, augment), y)) if per_image
            else (lambda x, y, seeds: augment_batch(x, y, seeds, augment)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if one_hot:
        depth = index.num_classes
        ds = ds.map(
            (lambda x, y: (x, tf.cast(y, tf.float32)[..., None])) if depth == 1
            else (lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), depth, dtype=tf.float32))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
