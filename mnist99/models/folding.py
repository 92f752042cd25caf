"""Serving nets with each BatchNorm folded into the convolution or Dense layer that feeds it.

At inference a BatchNorm layer is a fixed per-channel affine map, y = s * x + (beta - s * mean) with
s = gamma / sqrt(variance + epsilon). After a linear layer without an activation it can be multiplied into that
layer's kernel and added to its bias: the net computes the same function with one layer fewer. Keras' layer
runs it as separate multiply and add passes over every activation map, and TensorFlow fuses a convolution with
its bias and ReLU only when nothing stands between them. The folded net is what an ensemble is scored, logged and
exported as; trained members keep their BatchNorm layers (a net fine-tuned later needs them).

Only what computes the same function is folded: a ``Conv2D`` or ``Dense`` with a linear activation, channels
last, called once, whose output goes to that BatchNorm alone (not to a shortcut as well). The graph is read from
the model's own config (``inbound_nodes``), Keras' saving format, and the folded net is Keras' clone of the
model with the BatchNorm calls skipped: stock layers, so it loads in safe mode and converts to ONNX and LiteRT.
"""
from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

FOLDABLE = (keras.layers.Conv2D, keras.layers.Dense)


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """``model`` with every foldable BatchNorm folded into the layer before it (nested models' too), uncompiled;
    ``model`` itself when it has none. Its outputs equal ``model``'s in inference up to float rounding."""
    feeds = _folds(model)
    if not feeds:
        return model
    folded_bns = {id(bn) for bn in feeds.values()}
    skipped: set[int] = set()  # the copies of those BatchNorm layers, whose calls the clone skips

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if id(layer) in feeds:
            config["use_bias"] = True
        copy = layer.__class__.from_config(config)
        if id(layer) in folded_bns:
            skipped.add(id(copy))
        return copy

    def call(layer: keras.layers.Layer, *args, **kwargs):
        return args[0] if id(layer) in skipped else layer(*args, **kwargs)

    graph = keras.Model(model.input, model.output, name=model.name)  # uncompiled: no compile config to copy
    folded = keras.models.clone_model(graph, clone_function=clone, call_function=call, recursive=True)
    _copy_weights(model, folded, feeds)
    return folded


def _folds(model: keras.Model) -> dict[int, keras.layers.BatchNormalization]:
    """id(layer) -> the BatchNorm folded into it, for ``model`` and every functional model nested in it."""
    feeds: dict[int, keras.layers.BatchNormalization] = {}
    for net in _functional(model):
        config = net.get_config()
        calls = {entry["name"]: entry["inbound_nodes"] for entry in config["layers"]}
        uses: dict[str, int] = {}
        for nodes in calls.values():
            for name in _sources(nodes):
                uses[name] = uses.get(name, 0) + 1
        for name in _sources(config["output_layers"]):
            uses[name] = uses.get(name, 0) + 1
        for name, nodes in calls.items():
            sources = list(_sources(nodes))
            if len(nodes) != 1 or len(sources) != 1 or sources[0] not in calls:  # called once, on a layer's output
                continue
            bn, before = net.get_layer(name), net.get_layer(sources[0])
            if _foldable(bn, before, len(calls[sources[0]]), uses[sources[0]]):
                feeds[id(before)] = bn
    return feeds


def _foldable(bn, before, calls: int, uses: int) -> bool:
    return (type(bn) is keras.layers.BatchNormalization and bn.axis in (-1, len(bn.input.shape) - 1)
            and type(before) in FOLDABLE and calls == 1 and uses == 1
            and before.activation is keras.activations.linear
            and getattr(before, "data_format", "channels_last") == "channels_last")


def _functional(model: keras.Model) -> Iterator[keras.Model]:
    """``model`` and the functional models nested in it (Sequential ones are left as they are)."""
    if isinstance(model, keras.Sequential) or not isinstance(model, keras.Model):
        return
    yield model
    for layer in model.layers:
        yield from _functional(layer)


def _sources(value) -> Iterator[str]:
    """The names of the layers whose outputs a serialized call (or a model's ``output_layers``) reads."""
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
        if history is not None:
            yield history[0]
            return
        for item in value.values():
            yield from _sources(item)
    elif isinstance(value, list | tuple):
        if len(value) == 3 and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:]):
            yield value[0]  # output_layers: [name, node index, tensor index]
            return
        for item in value:
            yield from _sources(item)


def _copy_weights(model: keras.Model, folded: keras.Model, feeds: dict[int, keras.layers.BatchNormalization]) -> None:
    """``model``'s weights into ``folded``, layer by layer of the same name (within each nested model), with the
    folded layers' kernel and bias computed from their BatchNorm."""
    for layer in folded.layers:
        if not layer.weights:  # inputs (a clone's may be named anew), activations, Add
            continue
        source = model.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(source, layer, feeds)
        elif id(source) in feeds:
            layer.set_weights(_folded_weights(source, feeds[id(source)]))
        else:
            layer.set_weights(source.get_weights())


def _folded_weights(layer, bn) -> list[np.ndarray]:
    """The kernel and bias of ``layer`` followed by ``bn`` in inference, as one layer."""
    value = keras.ops.convert_to_numpy
    scale = (value(bn.gamma) if bn.scale else 1.0) / np.sqrt(value(bn.moving_variance) + bn.epsilon)
    shift = value(bn.beta) if bn.center else 0.0
    bias = value(layer.bias) if layer.use_bias else 0.0
    return [value(layer.kernel) * scale, (bias - value(bn.moving_mean)) * scale + shift]
