"""``resmlp``: the course notes' recipe, residual Dense blocks with He init, BatchNorm and Dropout.

depth 10, width 2048, dropout 0.1, L2 1e-6 by default in configs/mlp.yaml; the notes claim about
98.5% for one model and 99.2%+ for the average of three.
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE
from mnist99.models.layers import activation, batch_norm, classifier_head, dropout, initializer, regularizer, widening


def dense_block(x, cfg: ModelConfig, name: str):
    """Dense -> BatchNorm -> activation -> Dropout, added back to its input.

    The Dense produces ``width * widening(cfg)`` units, so the activation always hands back ``width``.
    """
    y = keras.layers.Dense(cfg.width * widening(cfg), use_bias=False, kernel_initializer=initializer(cfg),
                           kernel_regularizer=regularizer(cfg), name=f"{name}_dense")(x)
    y = batch_norm(cfg, f"{name}_bn")(y)
    y = activation(cfg, name=f"{name}_act")(y)
    y = dropout(cfg)(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def build(cfg: ModelConfig) -> keras.Model:
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(cfg.width * widening(cfg), use_bias=False, kernel_initializer=initializer(cfg),
                           kernel_regularizer=regularizer(cfg), name="stem")(x)
    x = batch_norm(cfg, "stem_bn")(x)
    x = activation(cfg, name="stem_act")(x)
    for i in range(cfg.depth):
        x = dense_block(x, cfg, f"block{i + 1}")
    return keras.Model(inputs, classifier_head(x, cfg), name="resmlp")
