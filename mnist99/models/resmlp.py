"""``resmlp``: the course notes' recipe, residual Dense blocks with He init, BatchNorm and Dropout.

depth 10, width 2048, dropout 0.1, L2 1e-6 by default in configs/mlp.yaml; the notes claim about
98.5% for one model and 99.2%+ for the average of three. ``model.residual`` and ``model.batchnorm``
switch the shortcuts and the normalisation off, giving the plain deep MLP that the notes say does
not train (configs/studies/depth.yaml puts that to the test).
"""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.constants import MODEL_INPUT_SHAPE
from mnist99.models.layers import activation, batch_norm, classifier_head, dropout, initializer, regularizer, tophat, widening


def dense_layer(x, cfg: ModelConfig, name: str, dense_name: str):
    """Dense -> BatchNorm (if ``cfg.batchnorm``) -> activation: layers ``dense_name``, ``<name>_bn``, ``<name>_act``.

    The Dense produces ``width * widening(cfg)`` units, so the activation always hands back ``width``.
    It has a bias only without BatchNorm, whose shift would cancel it.
    """
    x = keras.layers.Dense(cfg.width * widening(cfg), use_bias=not cfg.batchnorm, kernel_initializer=initializer(cfg),
                           kernel_regularizer=regularizer(cfg), name=dense_name)(x)
    if cfg.batchnorm:
        x = batch_norm(cfg, f"{name}_bn")(x)
    return activation(cfg, name=f"{name}_act")(x)


def dense_block(x, cfg: ModelConfig, name: str):
    """Dense -> BatchNorm -> activation -> Dropout, added back to its input if ``cfg.residual``."""
    y = dropout(cfg)(dense_layer(x, cfg, name, f"{name}_dense"))
    return keras.layers.Add(name=f"{name}_add")([x, y]) if cfg.residual else y


def build(cfg: ModelConfig) -> keras.Model:
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="image")
    x = dense_layer(keras.layers.Flatten()(tophat(inputs, cfg)), cfg, "stem", "stem")
    for i in range(cfg.depth):
        x = dense_block(x, cfg, f"block{i + 1}")
    return keras.Model(inputs, classifier_head(x, cfg), name="resmlp")
