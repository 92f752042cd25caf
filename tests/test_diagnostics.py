"""Training diagnostics on a tiny model with synthetic data, and the overfitting detector on synthetic histories."""
import keras
import numpy as np
import pytest

from mnist99.config import DiagnosticsConfig, defaults
from mnist99.training.diagnostics import OVERFIT_TAG, TrainingDiagnostics, for_validation, metric_name, overfit_epoch

FALLING = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]


def diagnostics(**changes) -> DiagnosticsConfig:
    """The default ``diagnostics`` section with ``changes``, validated."""
    return DiagnosticsConfig.model_validate({**defaults().diagnostics.model_dump(), **changes})


@pytest.mark.parametrize("train,val,patience,expected", [
    (FALLING, [1.0, 0.8, 0.7, 0.75, 0.8, 0.9], 3, 6),  # rises at epochs 4, 5, 6
    (FALLING, [1.0, 0.8, 0.7, 0.75, 0.8, 0.9], 2, 5),
    (FALLING, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 1, None),  # both falling: learning
    ([1.0, 1.1, 1.2, 1.3, 1.4, 1.5], [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], 2, None),  # both rising: diverging, not overfitting
    (FALLING, [1.0, 1.1, 1.2, 1.1, 1.2, 1.3], 3, None),  # two rises, a dip, two rises: the streak restarts
    (FALLING[:2], [1.0, 1.1], 1, 2),
    ([], [], 1, None),
])
def test_overfit_epoch(train, val, patience, expected):
    assert overfit_epoch(train, val, patience) == expected


def test_metric_names_keep_keras_names_and_replace_what_mlflow_refuses():
    assert metric_name("grad_norm", "block1_dense") == "grad_norm/block1_dense"
    assert metric_name("dead_units", "re_lu(1)#x") == "dead_units/re_lu_1__x"


def tiny_model(hidden_bias: float) -> keras.Model:
    """8 inputs -> Dense(4) -> ReLU -> Dense(10) -> softmax, with the hidden bias forced to ``hidden_bias``."""
    inputs = keras.Input((8,))
    h = keras.layers.Dense(4, name="hidden")(inputs)
    h = keras.layers.ReLU(name="hidden_relu")(h)
    probs = keras.layers.Activation("softmax", name="probs")(keras.layers.Dense(10, name="out")(h))
    model = keras.Model(inputs, probs)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.CategoricalCrossentropy())
    kernel, _ = model.get_layer("hidden").get_weights()
    model.get_layer("hidden").set_weights([kernel, np.full(4, hidden_bias, "float32")])
    out_kernel = np.ones((4, 10), "float32")
    out_kernel[:2] = 0.0  # half the output kernel is exactly zero
    model.get_layer("out").set_weights([out_kernel, np.zeros(10, "float32")])
    return model


def fit_one_epoch(model, log):
    rng = np.random.default_rng(0)
    x = rng.random((32, 8)).astype("float32")
    y = np.eye(10)[rng.integers(0, 10, 32)].astype("float32")
    cb = TrainingDiagnostics(x[:16], y[:16], diagnostics(enabled=True), log_fn=lambda m, s: log.append((s, m)))
    history = model.fit(x, y, validation_data=(x[16:], y[16:]), epochs=1, verbose=0, callbacks=[cb])
    return history.history


@pytest.mark.parametrize("bias,dead,zeros", [(-100.0, 4, 1.0), (100.0, 0, 0.0)])
def test_dead_units_sparsity_and_gradient_norms(bias, dead, zeros):
    log = []
    history = fit_one_epoch(tiny_model(bias), log)
    assert [step for step, _ in log] == [1]
    metrics = log[0][1]
    assert metrics["dead_units/hidden_relu"] == dead == metrics["dead_units_total"]
    assert metrics["act_sparsity/hidden_relu"] == zeros == metrics["act_sparsity_mean"]
    assert metrics["weight_sparsity/out"] == 0.5
    assert metrics["grad_norm/out"] > 0
    # No gradient reaches a layer behind units that are all dead; live units pass it on.
    assert (metrics["grad_norm/hidden"] == 0) == (dead == 4)
    assert metrics["loss_gap"] == pytest.approx(history["val_loss"][0] - history["loss"][0])
    assert set(metrics) >= {"grad_norm/hidden", "weight_sparsity/hidden"}
    watched = {k for k in metrics if k.startswith(("act_sparsity/", "dead_units/"))}
    assert watched == {"act_sparsity/hidden_relu", "dead_units/hidden_relu"}  # the output softmax is not


def test_the_callback_warns_and_tags_once_when_validation_loss_turns_up(capsys):
    model = tiny_model(0.0)
    tags, log = [], []
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    cb = TrainingDiagnostics(x, np.eye(10)[np.arange(16) % 10], diagnostics(overfit_patience=2),
                             log_fn=lambda m, s: log.append(s), tag_fn=lambda k, v: tags.append((k, v)))
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, (loss, val_loss) in enumerate(zip(FALLING, [1.0, 0.8, 0.9, 1.0, 1.1, 1.2])):
        cb.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss})
    assert tags == [(OVERFIT_TAG, "4")]
    assert cb.overfit_epoch == 4
    assert log == [1, 2, 3, 4, 5, 6]
    assert "overfitting at epoch 4" in capsys.readouterr().out


def test_for_validation_uses_a_fixed_prefix_of_the_validation_split(tiny_splits):
    cb = for_validation(diagnostics(batch_size=32), tiny_splits, log_fn=lambda m, s: None)
    assert tuple(cb.images.shape) == (32, 28, 28, 1) and tuple(cb.labels.shape) == (32, 10)
    np.testing.assert_array_equal(np.argmax(cb.labels, axis=1), tiny_splits.y_val[:32])
    np.testing.assert_allclose(cb.images.numpy()[..., 0] * 255, tiny_splits.x_val[:32], atol=1e-3)
    big = for_validation(diagnostics(batch_size=1000), tiny_splits, log_fn=lambda m, s: None)
    assert big.images.shape[0] == len(tiny_splits.y_val)
