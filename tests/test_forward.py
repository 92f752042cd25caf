"""Forward passes batch by batch (``mnist99.delivery.forward``): every digit once, in order, whatever the runtime."""
from __future__ import annotations

import numpy as np
import pytest

from mnist99.delivery.forward import in_batches, predict_probs
from mnist99.delivery.runtimes import ExportedModel
from mnist99.errors import InputError


class CountingRuntime(ExportedModel):
    """An exported model whose runtime answers each digit's mean ink in every class, and counts its calls."""

    runtime = "counting"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, digits: np.ndarray) -> np.ndarray:
        self.batches.append(len(digits))
        return np.repeat(digits.reshape(len(digits), -1).mean(axis=1, keepdims=True), 10, axis=1)  # float64


def test_a_keras_model_answers_as_its_own_predict_with_a_last_short_batch():
    import keras

    keras.utils.set_random_seed(0)
    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    model = keras.Model(digits, keras.layers.Dense(10, activation="softmax")(x))
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    probs = predict_probs(model, images, batch_size=3)
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, model.predict(images, verbose=0), rtol=1e-6, atol=1e-7)


def test_an_exported_model_runs_each_batch_once_in_order():
    runtime = CountingRuntime()
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28).astype(np.uint8)
    probs = runtime.predict(images, batch_size=2)
    assert runtime.batches == [2, 2, 1]
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs[:, 0], images.reshape(5, -1).mean(axis=1), rtol=1e-6)


def test_an_exported_model_refuses_a_bad_batch_before_running_it():
    runtime = CountingRuntime()
    with pytest.raises(InputError, match=r"shape \(N, 28, 28\)"):
        runtime.predict_on_batch(np.zeros((2, 27, 28), np.uint8))
    assert runtime.batches == []


def test_a_batch_size_below_one_is_named():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        predict_probs(CountingRuntime(), np.zeros((2, 28, 28), np.uint8), batch_size=0)


def test_a_bare_call_runs_over_every_batch_in_order_as_float32():
    seen: list[int] = []

    def forward(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :2].astype(np.float64)

    images = np.arange(5 * 28 * 28).reshape(5, 28, 28).astype(np.uint8)
    out = in_batches(forward, images, batch_size=2)
    assert seen == [2, 2, 1] and out.dtype == np.float32
    np.testing.assert_array_equal(out, images.reshape(5, -1)[:, :2])
