"""A model's serving twin: what makes training fast stays in training; what is scored, saved and exported is
float32 arithmetic in stock Keras layers.

Two training speed-ups change a net's layers, not its weights. A net built under a mixed policy
(``train.mixed_precision``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AVX512-BF16) computes its
convolutions in 16 bits, and its saved config says so: every runtime would then serve 16-bit arithmetic, and
LiteRT has no builtin bfloat16 Conv2D or ReLU, so the export of such an ensemble fails. Its BatchNorm layers
train with TensorFlow's fused kernel (:mod:`mnist99.models.fused_batchnorm`), a class of mnist99's that a model
saved with it would need mnist99 to load. The twin has the same weights, computes in float32 on every backend
and runtime, and is made of Keras' own layers.
"""
from __future__ import annotations

import keras

from mnist99.models.fused_batchnorm import FusedBatchNormalization
from mnist99.models.layers import leaf_layers
from mnist99.models.precision import global_policy, mixed_layers


def serving_twin(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32 and none is a fused BatchNorm, else its twin.

    The twin is Keras' clone of the model (nested models cloned too) with each layer rebuilt from its
    config under the float32 policy (a fused BatchNorm as Keras' own, which names it anew), the weights
    copied over; uncompiled.
    """
    if not mixed_layers(model) and not fused_layers(model):
        return model
    with global_policy("float32"):  # for the layers Keras makes anew (the inputs)
        # cloned from an uncompiled view of the graph: Keras copies a compiled model's compile config, and a
        # stretchable schedule (benchmarks/gpu.py's budgeted members) has none to copy
        graph = keras.Model(model.input, model.output, name=model.name)
        twin = keras.models.clone_model(graph, clone_function=_stock_float32_copy, recursive=True)
    twin.set_weights(model.get_weights())
    return twin


def fused_layers(model: keras.Model) -> list[str]:
    """The names of ``model``'s fused BatchNorm layers (nested models' too)."""
    return [layer.name for layer in leaf_layers(model) if isinstance(layer, FusedBatchNormalization)]


def _stock_float32_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = {**layer.get_config(), "dtype": "float32"}
    if isinstance(layer, FusedBatchNormalization):
        config.pop("name")  # "fused_batch_normalization_3" would misname Keras' own layer
        return keras.layers.BatchNormalization.from_config(config)
    return layer.__class__.from_config(config)
