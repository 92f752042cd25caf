"""``convnet``: the small Keras example convnet most users start from; the benchmark's baseline.

Conv32 3x3 -> MaxPool -> Conv64 3x3 -> MaxPool -> Flatten -> Dropout -> Dense 10 (35k parameters).
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE, NUM_CLASSES


def build(cfg: ModelConfig) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(MODEL_INPUT_SHAPE, name="image"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(cfg.dropout),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ],
        name="convnet",
    )
