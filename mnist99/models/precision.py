"""Keras' dtype policies for training: mixed precision is a training speed-up only.

A net built under a mixed policy (``train.mixed_precision``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU
with AVX512-BF16) keeps float32 weights but computes its convolutions in 16 bits; what is scored, saved and
exported is its float32 twin (:func:`mnist99.models.twin.serving_twin`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from mnist99.models.layers import leaf_layers


@contextlib.contextmanager
def global_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy ``name`` for the layers made inside the block; the previous one after.

    Layers take the global policy when they are made, and the setting is process-wide: set outside such a
    block it would reach every later layer of the process.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def mixed_layers(model: keras.Model) -> list[str]:
    """The names of ``model``'s layers (nested models' too) whose dtype policy is a mixed one."""
    return [layer.name for layer in leaf_layers(model) if layer.dtype_policy.name.startswith("mixed_")]
