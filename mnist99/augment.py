"""Augmentation ops, each a Keras 3 preprocessing layer chosen by name from the config.

They run per batch inside ``tf.data`` (see :mod:`mnist99.pipeline`), not inside the model:
Keras' random image layers are not XLA-compilable and would turn ``jit_compile`` off.
Images are float32 in [0, 1], shape (B, 28, 28, 1).
"""
from __future__ import annotations

import keras

from mnist99.config import AugmentConfig
from mnist99.registry import Registry

AUGMENT_OPS: Registry = Registry("augment op")
_FILL = dict(fill_mode="constant", fill_value=0.0)  # MNIST background is black


@AUGMENT_OPS.register("rotation")
def _rotation(cfg, seed: int) -> keras.layers.Layer:
    return keras.layers.RandomRotation(cfg.degrees / 360.0, seed=seed, **_FILL)


@AUGMENT_OPS.register("shift")
def _shift(cfg, seed: int) -> keras.layers.Layer:
    return keras.layers.RandomTranslation(cfg.fraction, cfg.fraction, seed=seed, **_FILL)


@AUGMENT_OPS.register("zoom")
def _zoom(cfg, seed: int) -> keras.layers.Layer:
    return keras.layers.RandomZoom(cfg.fraction, cfg.fraction, seed=seed, **_FILL)


@AUGMENT_OPS.register("shear")
def _shear(cfg, seed: int) -> keras.layers.Layer:
    return keras.layers.RandomShear(x_factor=cfg.factor, y_factor=cfg.factor, seed=seed, **_FILL)


@AUGMENT_OPS.register("elastic")
def _elastic(cfg, seed: int) -> keras.layers.Layer:
    # value_range defaults to (0, 255); our images are in [0, 1].
    return keras.layers.RandomElasticTransform(
        factor=cfg.probability, scale=cfg.scale, value_range=(0.0, 1.0), seed=seed, **_FILL
    )


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """The enabled ops in a fixed order (rotation, shift, zoom, shear, elastic), or None if none are."""
    if not cfg.enabled:
        return None
    ops = []
    for offset, name in enumerate(AUGMENT_OPS.names()):
        op_cfg = getattr(cfg, name)
        if op_cfg.enabled:
            ops.append(AUGMENT_OPS.get(name)(op_cfg, seed + offset))
    return keras.Sequential(ops, name="augment") if ops else None
