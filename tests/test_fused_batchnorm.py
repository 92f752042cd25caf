"""The fused BatchNorm trains as Keras' own layer does (outputs, gradients, moving statistics), and what is
scored, saved and exported is Keras' own layer."""
from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist99.config import load_config
from mnist99.models import build_model
from mnist99.models.fused_batchnorm import FusedBatchNormalization
from mnist99.models.twin import fused_layers, serving_twin


def twin_layers(momentum: float = 0.9, **kwargs) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """A fused layer and Keras' own, built alike, with the same (non-trivial) weights and statistics."""
    fused = FusedBatchNormalization(momentum=momentum, **kwargs)
    stock = keras.layers.BatchNormalization(momentum=momentum, **kwargs)
    rng = np.random.default_rng(0)
    for layer in (fused, stock):
        layer.build((None, 5, 5, 3))
    weights = [w + rng.normal(0, 0.3, w.shape).astype("float32") for w in stock.get_weights()]
    weights = [np.abs(w) if v.name == "moving_variance" else w for w, v in zip(weights, stock.weights)]
    for layer in (fused, stock):
        layer.set_weights(weights)
    return fused, stock


@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False}])
def test_the_training_step_matches_keras_batchnorm(kwargs):
    fused, stock = twin_layers(**kwargs)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (8, 5, 5, 3)), dtype="float32")
    upstream = tf.constant(np.random.default_rng(7).normal(0.0, 1.0, (8, 5, 5, 3)), dtype="float32")
    results = []
    for layer in (fused, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)  # a gradient that differs pixel by pixel
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append((y.numpy(), [g.numpy() for g in grads], [w.copy() for w in layer.get_weights()]))
    (y_f, g_f, w_f), (y_s, g_s, w_s) = results
    np.testing.assert_allclose(y_f, y_s, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(g_f, g_s, strict=True):
        assert np.abs(theirs).max() > 0.1  # gradients of some size, not rounding noise around 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(w_f, w_s, strict=True):  # moving mean and (biased) variance updated alike
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    assert not np.allclose(w_f[-1], twin_layers(**kwargs)[0].get_weights()[-1])  # the statistics did move


def test_inference_and_other_inputs_are_keras_own_code():
    fused, stock = twin_layers()
    x = np.random.default_rng(2).normal(0, 1, (4, 5, 5, 3)).astype("float32")
    np.testing.assert_array_equal(fused(x, training=False).numpy(), stock(x, training=False).numpy())
    flat_f, flat_s = FusedBatchNormalization(), keras.layers.BatchNormalization()  # 2-D: resmlp's Dense layers
    v = np.random.default_rng(3).normal(1, 2, (16, 6)).astype("float32")
    np.testing.assert_array_equal(flat_f(v, training=True).numpy(), flat_s(v, training=True).numpy())


def test_a_frozen_layer_normalises_with_its_moving_statistics():
    fused, stock = twin_layers()
    fused.trainable = stock.trainable = False
    x = np.random.default_rng(4).normal(0, 1, (4, 5, 5, 3)).astype("float32")
    before = fused.get_weights()
    np.testing.assert_allclose(fused(x, training=True).numpy(), stock(x, training=True).numpy(), atol=1e-6)
    for ours, theirs in zip(fused.get_weights(), before, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_the_serving_twin_is_keras_own_layers_with_the_same_weights_and_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    net = build_model(load_config([], ["model.width=4", "model.depth=1"]).model)
    assert len(fused_layers(net)) == 4
    twin = serving_twin(net)
    assert fused_layers(twin) == [] and twin.name == net.name
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in twin.layers) == 4
    for ours, theirs in zip(twin.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    images = np.random.default_rng(5).random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(twin.predict(images, verbose=0), net.predict(images, verbose=0), atol=1e-6)
    assert serving_twin(twin) is twin
    twin.save(tmp_path / "member.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "member.keras").read("config.json"))
    assert "mnist99" not in json.dumps(config)  # nothing of mnist99's to register before it loads


def test_a_saved_training_net_loads_in_safe_mode():
    """The net as trained (a per-epoch backup, a tuner's trial) is a registered class: it round-trips."""
    keras.utils.set_random_seed(2)
    net = build_model(load_config([], ["model.width=4", "model.depth=1"]).model)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net), safe_mode=True)
    assert len(fused_layers(again)) == 4


def test_under_a_bfloat16_policy_it_trains_as_keras_batchnorm():
    """train.mixed_precision: bfloat16 feeds 16-bit activations; both layers normalise them in float32."""
    from mnist99.models.precision import global_policy

    with global_policy("mixed_bfloat16"):
        fused, stock = twin_layers()
    x = tf.cast(np.random.default_rng(6).normal(1, 2, (8, 5, 5, 3)), "bfloat16")
    y_f, y_s = fused(x, training=True), stock(x, training=True)
    assert y_f.dtype == y_s.dtype == "bfloat16"
    np.testing.assert_allclose(tf.cast(y_f, "float32").numpy(), tf.cast(y_s, "float32").numpy(), atol=0.02)
    for ours, theirs in zip(fused.get_weights(), stock.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
