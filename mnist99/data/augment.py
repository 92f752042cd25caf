"""Augmentation ops, each a Keras 3 preprocessing layer chosen by name from the config.

They run per batch inside ``tf.data`` (see :mod:`mnist99.data.batches`), not inside the model:
Keras' random image layers are not XLA-compilable and would turn ``jit_compile`` off.
Images are float32 in [0, 1], shape (B, 28, 28, 1).
"""
from __future__ import annotations

import math

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


@keras.saving.register_keras_serializable(package="mnist99")
class ElasticDistortion(keras.layers.RandomElasticTransform):
    """Simard et al.'s (2003) elastic distortion: per image, a uniform(-1, 1) displacement field for
    each axis, smoothed by a Gaussian of ``sigma`` pixels and scaled by ``alpha`` (theirs for MNIST:
    34 and 4), then a bilinear resampling; applied to a share ``probability`` of the images.

    Keras 3.15's RandomElasticTransform, kept here for its per-image choice, seeding and tf.data
    backend switch, cannot make this distortion on 28x28 images: it ties sigma to 5% of the side
    times its ``scale`` (at most 1.4 px), truncates sigma to an int to size the blur kernel (so a
    1-pixel kernel: no smoothing, the digit breaks into speckle) and draws the x and y fields from
    one seed (every pixel moves along the diagonal). Only the transform is replaced; ``factor`` is
    given as (p, p) because a single ``factor=p`` draws each image's chance from U(0, p): p/2 on average.
    """

    def __init__(self, alpha: float, sigma: float, probability: float, seed: int | None = None, **kwargs):
        super().__init__(factor=(probability, probability), scale=1.0, value_range=(0.0, 1.0), seed=seed, **_FILL, **kwargs)
        self.alpha, self.sigma = float(alpha), float(sigma)

    def transform_images(self, images, transformation, training=True):
        ops = self.backend  # TensorFlow inside tf.data, the Keras backend elsewhere
        images = ops.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        batch, height, width = ops.core.shape(images)[0], images.shape[1], images.shape[2]
        field = ops.random.uniform((batch, height, width, 2), minval=-1.0, maxval=1.0,
                                   dtype=self.compute_dtype, seed=transformation["seed"])
        field = self.alpha * self._smooth(field)
        rows, cols = ops.numpy.meshgrid(ops.numpy.arange(height, dtype=self.compute_dtype),
                                        ops.numpy.arange(width, dtype=self.compute_dtype), indexing="ij")
        warped = self._bilinear(images[..., 0], rows + field[..., 0], cols + field[..., 1])[..., None]
        chosen = transformation["apply_transform"][:, None, None, None]
        return ops.numpy.clip(ops.numpy.where(chosen, warped, images), 0.0, 1.0)

    def _smooth(self, field):
        """Gaussian blur as two 1-d passes: 6x the images/s of ``image.gaussian_blur``'s 2-d kernel."""
        ops, half = self.backend, math.ceil(3 * self.sigma)
        taps = ops.numpy.exp(-ops.numpy.square(ops.numpy.arange(-half, half + 1, dtype=self.compute_dtype))
                             / (2 * self.sigma**2))
        taps = ops.numpy.tile((taps / ops.numpy.sum(taps))[:, None, None, None], (1, 1, 2, 1))
        field = ops.nn.depthwise_conv(field, taps, padding="same")
        return ops.nn.depthwise_conv(field, ops.numpy.transpose(taps, (1, 0, 2, 3)), padding="same")

    def _bilinear(self, images, rows, cols):
        """Sample (B, H, W) images at fractional (rows, cols), black outside: four gathers into the
        flat batch, 3.7x the images/s of ``image.map_coordinates`` over (batch, row, col)."""
        ops = self.backend
        height, width = images.shape[1], images.shape[2]
        flat = ops.numpy.reshape(images, (-1,))
        first = ops.numpy.arange(ops.core.shape(images)[0], dtype="int32")[:, None, None] * (height * width)
        top, left = ops.numpy.floor(rows), ops.numpy.floor(cols)
        out = ops.numpy.zeros_like(rows)
        for r, row_weight in ((top, 1 - (rows - top)), (top + 1, rows - top)):
            for c, col_weight in ((left, 1 - (cols - left)), (left + 1, cols - left)):
                inside = (r >= 0) & (r <= height - 1) & (c >= 0) & (c <= width - 1)
                at = first + ops.cast(ops.numpy.clip(r, 0, height - 1), "int32") * width \
                    + ops.cast(ops.numpy.clip(c, 0, width - 1), "int32")
                out += ops.numpy.where(inside, ops.numpy.take(flat, at), 0.0) * row_weight * col_weight
        return out

    def get_config(self):
        config = super().get_config()
        for inherited in ("factor", "scale", "value_range", "fill_mode", "fill_value"):
            config.pop(inherited, None)
        return {**config, "alpha": self.alpha, "sigma": self.sigma, "probability": self.factor[1]}


@AUGMENT_OPS.register("elastic")
def _elastic(cfg, seed: int) -> keras.layers.Layer:
    return ElasticDistortion(cfg.alpha, cfg.sigma, cfg.probability, seed=seed)


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
