"""Keras callbacks of our own: only what Keras' built-in callbacks do not already do."""
from __future__ import annotations

import time

import keras


class TimeToAccuracy(keras.callbacks.Callback):
    """Records the seconds from the start of training until ``val_accuracy`` first reaches ``target``.

    Measured at the end of the epoch's validation pass, so it counts all the work done until then.
    """

    def __init__(self, target: float = 0.99) -> None:
        super().__init__()
        self.target = target
        self.seconds: float | None = None
        self.epoch: int | None = None
        self._start = 0.0

    def on_train_begin(self, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.seconds is None and (logs or {}).get("val_accuracy", 0.0) >= self.target:
            self.seconds = time.perf_counter() - self._start
            self.epoch = epoch + 1
