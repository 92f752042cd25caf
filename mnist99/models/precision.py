"""A model's float32 twin: mixed precision is a training speed-up; what is scored, saved and exported is float32.

A net built under a mixed policy (``train.mixed_precision``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU
with AVX512-BF16) keeps float32 weights but computes its convolutions in 16 bits, and its saved config says
so. Every runtime would then serve 16-bit arithmetic, and LiteRT has no builtin bfloat16 Conv2D or ReLU: the
export of such an ensemble fails. The twin has the same weights and computes in float32 on every backend and
runtime.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras


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
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += mixed_layers(layer)
        elif layer.dtype_policy.name.startswith("mixed_"):
            found.append(layer.name)
    return found


def in_float32(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32, else its float32 twin.

    The twin is Keras' clone of the model (nested models cloned too) with each layer rebuilt from its
    config under the float32 policy, the weights copied over; uncompiled.
    """
    if not mixed_layers(model):
        return model
    with global_policy("float32"):  # for the layers Keras makes anew (the inputs)
        # cloned from an uncompiled view of the graph: Keras copies a compiled model's compile config, and a
        # stretchable schedule (benchmarks/gpu.py's budgeted members) has none to copy
        graph = keras.Model(model.input, model.output, name=model.name)
        twin = keras.models.clone_model(graph, clone_function=_float32_copy, recursive=True)
    twin.set_weights(model.get_weights())
    return twin


def _float32_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
