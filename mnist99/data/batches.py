"""The ``tf.data`` input pipeline: uint8 arrays in memory, cast and augmented per batch.

Keeping the data as uint8 and converting per batch in a parallel ``map`` keeps memory small and
the input off the critical path (the model, not the input, bounds the step time).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mnist99.constants import NUM_CLASSES
from mnist99.data.model_input import to_model_input


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, training: bool, seed: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # Training drops the last partial batch (reshuffled each epoch, so no image is left out for
    # good): one static batch shape for every step. (It also kept Keras 3.15's RandomElasticTransform
    # working, which with an unknown batch size pasted one distorted image over the batch; our
    # augment.ElasticDistortion has no such limit.)
    return _without_autotuner(ds.batch(batch_size, drop_remainder=training and len(x) >= batch_size))


def _without_autotuner(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The same batches with tf.data's autotuning thread turned off, for every stage built on them
    (options set here carry through the map and prefetch added after).

    Keras makes a new iterator over the dataset every epoch. Deleting one waits for the autotuning
    thread to wake from its timed wait, and in TensorFlow 2.21 that wait left both cores idle for 2-17 s
    at some epoch ends: an unpredictable loss a time budget cannot plan for
    (benchmarks/results/cpu-2core/2026-12-04-epoch-stalls.md). Without the thread, ``AUTOTUNE`` still
    means: map with as many calls as cores, prefetch with a buffer that grows on demand.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    training: bool = False,
    augmenter=None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (images, one-hot labels); shuffled and augmented when ``training``.

    Labels are one-hot so that CategoricalCrossentropy can apply label smoothing (Keras 3.15's
    sparse loss has none).

    Augmenting batches are mapped one at a time. Keras 3.15's SeedGenerator reads its state and then
    bumps it, so map calls running in parallel can draw the same seeds (up to 29 of 100 batch pairs
    with identical rotations). One at a time, every batch gets its own draws and the same seed
    gives the same batches bit for bit; on 2 cores this pipeline still makes ~30,000 images/s,
    about 9x what the default model takes (the GPU path augments on the device instead).
    """
    ds = _batches(x, y, batch_size, training, seed)

    def prepare(images, labels):
        images = to_model_input(images)
        if training and augmenter is not None:
            images = augmenter(images, training=True)
        return images, tf.one_hot(labels, NUM_CLASSES)

    parallel = None if training and augmenter is not None else tf.data.AUTOTUNE
    return ds.map(prepare, num_parallel_calls=parallel).prefetch(tf.data.AUTOTUNE)


def make_index_dataset(start: int, y: np.ndarray, batch_size: int, training: bool = False,
                       seed: int = 0) -> tf.data.Dataset:
    """Batches of (indices ``start .. start + len(y)``, one-hot labels), shuffled when ``training``:
    the input of a :class:`mnist99.training.augmented_net.AugmentedNet` that holds the images on the device."""
    indices = np.arange(start, start + len(y), dtype=np.int32)
    ds = _batches(indices, y, batch_size, training, seed)
    return ds.map(lambda i, labels: (i, tf.one_hot(labels, NUM_CLASSES)),
                  num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
