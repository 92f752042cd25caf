"""Model builders by name: ``build_model(cfg.model)`` returns a Keras model taking float (28, 28, 1)."""
from __future__ import annotations

import keras

from mnist99.config import ModelConfig
from mnist99.models import convnet, plaincnn, rescnn, resmlp
from mnist99.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("rescnn")(rescnn.build)
MODELS.register("resmlp")(resmlp.build)
MODELS.register("convnet")(convnet.build)
MODELS.register("plaincnn")(plaincnn.build)


def build_model(cfg: ModelConfig) -> keras.Model:
    """Build the model named by ``cfg.name`` from its config section."""
    return MODELS.get(cfg.name)(cfg)
