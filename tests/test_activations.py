"""Activations by name in every model: maxout's widening, SELU's pairing, saving in safe mode."""
import keras
import numpy as np
import pytest

from mnist99.config import load_config
from mnist99.models import build_model
from mnist99.models.layers import ACTIVATIONS, Maxout, initializer
from tests.conftest import assert_takes_a_training_step

MODELS_WITH_ACTIVATIONS = ("rescnn", "plaincnn", "resmlp")  # convnet is the fixed Keras-example baseline


def tiny(model: str, act: str, *extra: str):
    return load_config([], [f"model.name={model}", f"model.activation={act}", "model.width=4", "model.depth=1",
                            *extra])


@pytest.mark.parametrize("model", MODELS_WITH_ACTIVATIONS)
@pytest.mark.parametrize("act", ACTIVATIONS.names())
def test_every_activation_builds_every_model_and_trains_a_step(model, act):
    from mnist99.training.recipe import compile_model

    net = compile_model(tiny(model, act), steps_per_epoch=1)
    net.run_eagerly = True  # a single step: tracing a tf.function would cost more than the step
    assert_takes_a_training_step(net)


def test_maxout_takes_the_max_of_each_group_of_consecutive_channels():
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 12)).astype("float32")
    out = keras.ops.convert_to_numpy(Maxout(3)(x))
    assert out.shape == (2, 5, 5, 4)
    np.testing.assert_allclose(out, x.reshape(2, 5, 5, 4, 3).max(axis=-1))


def test_maxout_refuses_channels_it_cannot_group():
    with pytest.raises(ValueError, match="divisible by 3"):
        Maxout(3)(np.zeros((2, 10), "float32"))


@pytest.mark.parametrize("model,stem", [("resmlp", "stem"), ("rescnn", None)])
def test_maxout_widens_the_layer_before_it_and_keeps_the_width_after(model, stem):
    net = build_model(tiny(model, "maxout", "model.maxout_pieces=3").model)
    plain = build_model(tiny(model, "relu").model)
    linear = [layer for layer in net.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))][0]
    assert linear.compute_output_shape((1, 28, 28, 1) if model == "rescnn" else (1, 784))[-1] == 4 * 3
    maxouts = [layer for layer in net.layers if isinstance(layer, Maxout)]
    assert maxouts and all(m.output.shape[-1] in (4, 8) for m in maxouts)  # width, or 2*width in rescnn's stage 2
    assert net.output.shape == plain.output.shape == (None, 10)


def test_a_maxout_model_saves_and_loads_as_keras_in_safe_mode(tmp_path):
    net = build_model(tiny("resmlp", "maxout").model)
    x = np.random.default_rng(2).random((4, 28, 28, 1)).astype("float32")
    path = tmp_path / "maxout.keras"
    net.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert any(isinstance(layer, Maxout) for layer in loaded.layers)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act,init,expected", [
    ("selu", "he_normal", keras.initializers.LecunNormal),  # the default pairs with SELU
    ("selu", "glorot_uniform", keras.initializers.GlorotUniform),  # a named initialiser is kept
    ("relu", "he_normal", keras.initializers.HeNormal),
])
def test_selu_gets_lecun_normal_unless_another_initializer_is_named(act, init, expected):
    assert type(initializer(load_config([], [f"model.activation={act}", f"model.initializer={init}"]).model)) is expected


def test_selu_models_use_alpha_dropout():
    net = build_model(tiny("resmlp", "selu").model)
    assert any(isinstance(layer, keras.layers.AlphaDropout) for layer in net.layers)
    assert not any(type(layer) is keras.layers.Dropout for layer in net.layers)
