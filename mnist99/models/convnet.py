"""``convnet``: the small Keras example convnet most users start from; the benchmark's baseline.

Conv32 3x3 -> MaxPool -> Conv64 3x3 -> MaxPool -> Flatten -> Dropout -> Dense 10 (35k parameters).
Built as a functional model, not keras.io's Sequential: a Keras 3.15 Sequential model has no ``input``
until called as a layer, so the ensemble's ``combine`` could not wrap it.
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE, NUM_CLASSES


def build(cfg: ModelConfig) -> keras.Model:
    image = keras.Input(MODEL_INPUT_SHAPE, name="image")
    x = keras.layers.Conv2D(32, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(cfg.dropout)(keras.layers.Flatten()(x))
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return keras.Model(image, probs, name="convnet")
