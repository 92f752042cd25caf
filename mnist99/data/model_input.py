"""uint8 digits to what every model takes: the one conversion, in Keras ops so that it runs the same in
``tf.data`` (TensorFlow), inside a compiled train step (:mod:`mnist99.training.augmented_net`) and on
JAX (``benchmarks/gpu.py``). The exported ensemble does the same with stock Keras layers
(:func:`mnist99.delivery.ensemble.combine`), so that it loads without mnist99; tests/test_ensemble.py keeps
the two equal.
"""
from __future__ import annotations

from keras import ops


def to_model_input(images):
    """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1]: a backend tensor of the active Keras backend."""
    return ops.expand_dims(ops.cast(images, "float32") / 255.0, -1)
