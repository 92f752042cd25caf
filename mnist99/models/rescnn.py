"""``rescnn``: a residual CNN designed for a 2-core CPU, accurate and fast.

CPU time follows multiply-adds, so the stem downsamples at once (5x5, stride 2: 28x28 -> 14x14)
and no layer runs at full resolution; stage 1 keeps ``width`` channels at 14x14, stage 2 doubles
them at 7x7. With width 32 and depth 2: ~150k parameters, ~10M multiply-adds per image,
~2,500 images/s of training on 2 cores.
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE
from mnist99.models.layers import activation, classifier_head, conv_bn, tophat, widening


def residual_block(x, filters: int, cfg: ModelConfig, strides: int = 1):
    """Two 3x3 convs with BatchNorm; a 1x1 projection on the shortcut when the shape changes.

    Each conv produces ``filters * widening(cfg)`` channels and each activation hands back
    ``filters``; for maxout the sum is wider than the block's input, so its shortcut is projected.
    """
    wide = filters * widening(cfg)
    shortcut = x
    y = activation(cfg)(conv_bn(x, wide, cfg, strides=strides))
    y = conv_bn(y, wide, cfg)
    if strides != 1 or x.shape[-1] != wide:
        shortcut = conv_bn(x, wide, cfg, kernel=1, strides=strides)
    return activation(cfg)(keras.layers.Add()([y, shortcut]))


def build(cfg: ModelConfig) -> keras.Model:
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="image")
    x = activation(cfg)(conv_bn(tophat(inputs, cfg), cfg.width * widening(cfg), cfg, kernel=5, strides=2))  # 14x14
    for _ in range(cfg.depth - 1):
        x = residual_block(x, cfg.width, cfg)
    x = residual_block(x, 2 * cfg.width, cfg, strides=2)  # 7x7
    for _ in range(cfg.depth - 1):
        x = residual_block(x, 2 * cfg.width, cfg)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, classifier_head(x, cfg), name="rescnn")
