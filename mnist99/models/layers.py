"""Building blocks shared by the models: activations, initialisers and dropout chosen by name."""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.registry import Registry

ACTIVATIONS: Registry = Registry("activation")
INITIALIZERS = ("he_normal", "glorot_uniform", "orthogonal", "lecun_normal")


@ACTIVATIONS.register("relu")
def _relu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.ReLU()


@ACTIVATIONS.register("leaky_relu")
def _leaky_relu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=cfg.leaky_alpha)


@ACTIVATIONS.register("prelu")
def _prelu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.PReLU(shared_axes=None)


@ACTIVATIONS.register("elu")
def _elu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.ELU()


@ACTIVATIONS.register("selu")
def _selu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.Activation("selu")


@ACTIVATIONS.register("gelu")
def _gelu(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.Activation("gelu")


@ACTIVATIONS.register("swish")
def _swish(cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.Activation("swish")


def activation(cfg: ModelConfig) -> keras.layers.Layer:
    """A fresh activation layer named by ``cfg.activation``."""
    return ACTIVATIONS.get(cfg.activation)(cfg)


def initializer(cfg: ModelConfig) -> keras.initializers.Initializer:
    """The kernel initialiser named by ``cfg.initializer`` (SELU wants lecun_normal)."""
    if cfg.initializer not in INITIALIZERS:
        from mnist99.errors import ConfigError

        raise ConfigError(f"unknown initializer '{cfg.initializer}' (valid: {', '.join(INITIALIZERS)})")
    return keras.initializers.get(cfg.initializer)


def dropout(cfg: ModelConfig) -> keras.layers.Layer:
    """Dropout, or AlphaDropout for SELU (plain dropout would break its self-normalisation)."""
    if cfg.activation == "selu":
        return keras.layers.AlphaDropout(cfg.dropout)
    return keras.layers.Dropout(cfg.dropout)


def regularizer(cfg: ModelConfig) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None


def classifier_head(x, cfg: ModelConfig):
    """Dropout then a float32 softmax over the 10 digits (float32 even under mixed precision)."""
    x = dropout(cfg)(x)
    x = keras.layers.Dense(10, kernel_regularizer=regularizer(cfg), name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
