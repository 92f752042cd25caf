"""``plaincnn``: a plain CNN at full resolution, a member that sees digits otherwise than ``rescnn``.

After the members of Chris Deotte's 15-CNN Kaggle ensemble (99.75%): per stage ``depth`` unpadded 3x3
convolutions, then a 5x5 stride-2 one, BatchNorm and Dropout; ``width`` channels at 28x28 -> 12x12,
``2 * width`` at 12x12 -> 4x4; then a dense layer of ``4 * width`` units over the flattened 4x4 map.
Where ``rescnn`` halves the resolution in its first layer, has shortcuts and averages its last map over
all positions, this one convolves the full 28x28 image, has no shortcut and keeps where on the 4x4 map
a feature lies: an ensemble gains from members that err on different digits. With width 32 and depth 2:
~330k parameters, ~15M multiply-adds per image (``rescnn``: ~10M).
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE
from mnist99.errors import ConfigError
from mnist99.models.layers import (
    activation,
    batch_norm,
    classifier_head,
    conv_bn,
    dropout,
    initializer,
    regularizer,
    tophat,
    widening,
)


def stage(x, filters: int, cfg: ModelConfig):
    """``cfg.depth`` unpadded 3x3 convolutions, then a 5x5 stride-2 one, then Dropout."""
    wide = filters * widening(cfg)
    for _ in range(cfg.depth):
        x = activation(cfg)(conv_bn(x, wide, cfg, padding="valid"))
    x = activation(cfg)(conv_bn(x, wide, cfg, kernel=5, strides=2))
    return dropout(cfg)(x)


def build(cfg: ModelConfig) -> keras.Model:
    # each unpadded 3x3 convolution takes 2 px off the map: 28 -> 14 - depth after stage 1, 14 - 3 x depth after stage 2
    deepest = (14 - 1) // 3  # the most that leave stage 2 a map of at least 1 x 1
    if cfg.depth > deepest:
        raise ConfigError(f"model.depth {cfg.depth} is too deep for plaincnn: its unpadded convolutions leave no "
                          f"image after stage 2 (at most {deepest})")
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="image")
    x = stage(stage(tophat(inputs, cfg), cfg.width, cfg), 2 * cfg.width, cfg)
    x = keras.layers.Dense(4 * cfg.width * widening(cfg), use_bias=False, kernel_initializer=initializer(cfg),
                           kernel_regularizer=regularizer(cfg))(keras.layers.Flatten()(x))
    x = activation(cfg)(batch_norm(cfg)(x))
    return keras.Model(inputs, classifier_head(x, cfg), name="plaincnn")
