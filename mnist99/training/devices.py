"""What the active Keras backend computes on: the one place that asks whether there is a GPU."""
from __future__ import annotations

import keras


def gpu_names() -> list[str]:
    """The GPUs the active backend sees (TensorFlow or JAX), by device name; empty on a CPU."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices()] if jax.default_backend() == "gpu" else []
    return []


def has_gpu() -> bool:
    """Whether the active Keras backend computes on a GPU."""
    return bool(gpu_names())


def device_name() -> str:
    """``GPU:<name of the first GPU>`` or ``CPU``: the ``mnist99.device`` tag of every run."""
    names = gpu_names()
    return f"GPU:{names[0]}" if names else "CPU"
