"""Augmentation ops, each a Keras 3 preprocessing layer chosen by name from the config.

They run per batch inside ``tf.data`` (see :mod:`mnist99.data.batches`), not inside the model:
Keras' random image layers are not XLA-compilable and would turn ``jit_compile`` off.
Images are float32 in [0, 1], shape (B, 28, 28, 1).

Each op names the corruption families of :mod:`mnist99.data.corruptions` it imitates
(:data:`CORRUPTION_FAMILIES`): only families marked seen there, so the held-out ones measure
robustness to what training never showed (tests/test_corruptions.py compares the two).
"""
from __future__ import annotations

import functools
import math

import keras
from keras import ops

from mnist99.config import AugmentConfig
from mnist99.data.affine import MATRICES, ComposedAffine
from mnist99.registry import Registry

AUGMENT_OPS: Registry = Registry("augment op")
_FILL = dict(fill_mode="constant", fill_value=0.0)  # MNIST background is black
_UNIT = dict(value_range=(0.0, 1.0))  # Keras' colour layers default to (0, 255)

# augment op -> the corruption families (mnist99.data.corruptions) it imitates; every one must be "seen" there
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "rotation": ("rotate",), "shift": ("translate",), "zoom": ("scale",), "shear": ("shear",), "elastic": (),
    "blur": ("gaussian_blur",), "erasing": ("occlusion", "stripe"), "lines": ("dotted_line", "zigzag"),
    "contrast": ("contrast",), "brightness": ("brightness",), "noise": ("gaussian_noise",),
}


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


def gaussian_blur(backend, images, sigma: float, dtype: str = "float32"):
    """A Gaussian of ``sigma`` px over each channel of (B, H, W, C) ``images``, black beyond the edge (MNIST's
    background), as two 1-d passes: 6x the images/s of ``image.gaussian_blur``'s 2-d kernel. ``backend``:
    ``keras.ops``, or a layer's ``self.backend`` (TensorFlow inside ``tf.data``)."""
    half = math.ceil(3 * sigma)
    taps = backend.numpy.exp(-backend.numpy.square(backend.numpy.arange(-half, half + 1, dtype=dtype)) / (2 * sigma**2))
    taps = backend.numpy.tile((taps / backend.numpy.sum(taps))[:, None, None, None], (1, 1, images.shape[-1], 1))
    images = backend.nn.depthwise_conv(images, taps, padding="same")
    return backend.nn.depthwise_conv(images, backend.numpy.transpose(taps, (1, 0, 2, 3)), padding="same")


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
        field = self.displacement(images, transformation)
        rows, cols = self.grid(images)
        # the digits not chosen have a zero field: read at their own pixel centres, they come back unchanged
        warped = self.sample(images[..., 0], rows + field[..., 0], cols + field[..., 1])[..., None]
        return ops.numpy.clip(warped, 0.0, 1.0)

    def displacement(self, images, transformation):
        """(B, H, W, 2): each output pixel's (row, column) offset in px, zero on the images not chosen. Also
        read by :class:`mnist99.data.affine.ComposedAffine`, which folds it into its one resampling."""
        ops = self.backend
        batch, height, width = ops.core.shape(images)[0], images.shape[1], images.shape[2]
        field = ops.random.uniform((batch, height, width, 2), minval=-1.0, maxval=1.0,
                                   dtype=self.compute_dtype, seed=transformation["seed"])
        chosen = ops.cast(transformation["apply_transform"][:, None, None, None], self.compute_dtype)
        return self.alpha * gaussian_blur(self.backend, field, self.sigma, self.compute_dtype) * chosen

    def grid(self, images):
        """(H, W) row and column indices of ``images``' pixels, in the compute dtype."""
        ops = self.backend
        return ops.numpy.meshgrid(ops.numpy.arange(images.shape[1], dtype=self.compute_dtype),
                                  ops.numpy.arange(images.shape[2], dtype=self.compute_dtype), indexing="ij")

    def sample(self, images, rows, cols):
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


class _ShareOfImages(keras.layers.Layer):
    """Base of the ops Keras lacks: ``change`` a random share ``probability`` of the batch's images, in
    training only, with Keras ops (so in ``tf.data`` and inside a compiled JAX step alike)."""

    def __init__(self, probability: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.probability, self.seed = float(probability), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        chosen = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.generator) < self.probability
        return ops.where(chosen, self.change(images), images)

    def change(self, images):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "probability": self.probability, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mnist99")
class RandomGaussianNoise(_ShareOfImages):
    """Additive Gaussian noise, each chosen image at its own standard deviation drawn from U(0, ``max_stddev``),
    clipped to [0, 1]. Keras' GaussianNoise puts one level on every image, so no clean digit would be seen."""

    def __init__(self, probability: float, max_stddev: float, seed: int | None = None, **kwargs):
        super().__init__(probability, seed, **kwargs)
        self.max_stddev = float(max_stddev)

    def change(self, images):
        stddev = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), maxval=self.max_stddev, seed=self.generator)
        return ops.clip(images + keras.random.normal(ops.shape(images), seed=self.generator) * stddev, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "max_stddev": self.max_stddev}


@keras.saving.register_keras_serializable(package="mnist99")
class RandomBlur(_ShareOfImages):
    """Isotropic Gaussian blur, each chosen image at its own sigma: one of ``levels`` steps up to ``max_sigma``
    (max/4, max/2, 3 max/4, max for 4). Keras' RandomGaussianBlur draws one (sigma_y, sigma_x) pair a batch,
    so whole batches blur along one axis: a motion blur, which the corruptions hold out."""

    def __init__(self, probability: float, max_sigma: float, levels: int = 4, seed: int | None = None, **kwargs):
        super().__init__(probability, seed, **kwargs)
        self.max_sigma, self.levels = float(max_sigma), int(levels)

    def change(self, images):
        level = ops.floor(keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.generator) * self.levels)
        out = images
        for k in range(self.levels):
            out = ops.where(level == k, gaussian_blur(ops, images, self.max_sigma * (k + 1) / self.levels), out)
        return out

    def get_config(self):
        return {**super().get_config(), "max_sigma": self.max_sigma, "levels": self.levels}


@keras.saving.register_keras_serializable(package="mnist99")
class RandomLines(_ShareOfImages):
    """A white pen stroke over each chosen image: through a random point of the centre 20x20 at a random
    angle, 10 to 40 px long, 1 to ``max_width`` px wide (anti-aliased), waving sideways by a sine of ``min_wave`` to
    ``max_wave`` px and a 4-12 px period, dashed (2-4 px on and off) for a share ``dashed`` of the strokes; a share
    ``across`` instead spans the whole width within 15 degrees of horizontal, at any height, 1 to
    ``across_width`` px wide (a ruled line or a strike-through may be bolder than the digit's pen). Teaches the
    net that a stroke crossing the digit may not be part of it; drawn with elementwise ops on the pixel
    grid (no scatter), so it runs in ``tf.data`` at the speed of the other ops."""

    def __init__(self, probability: float, min_wave: float, max_wave: float, max_width: float, across_width: float,
                 dashed: float, across: float, seed: int | None = None, **kwargs):
        super().__init__(probability, seed, **kwargs)
        self.min_wave, self.max_wave, self.max_width = float(min_wave), float(max_wave), float(max_width)
        self.across_width = float(across_width)
        self.dashed, self.across = float(dashed), float(across)

    def _uniform(self, batch, low: float, high: float):
        return keras.random.uniform((batch, 1, 1, 1), low, high, seed=self.generator)

    def change(self, images):
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
        draw = functools.partial(self._uniform, batch)
        spans = draw(0.0, 1.0) < self.across  # the whole width, near horizontal, anywhere down the image
        angle = ops.where(spans, draw(-math.pi / 12, math.pi / 12), draw(0.0, math.pi))
        rows = ops.reshape(ops.arange(height, dtype="float32"), (1, height, 1, 1)) - ops.where(
            spans, draw(2.0, height - 2.0), draw(4.0, height - 4.0))
        cols = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, width, 1)) - ops.where(
            spans, (width - 1) / 2, draw(4.0, width - 4.0))
        along = cols * ops.cos(angle) + rows * ops.sin(angle)
        across = rows * ops.cos(angle) - cols * ops.sin(angle)
        wave = draw(self.min_wave, self.max_wave) * ops.sin(2 * math.pi * along / draw(4.0, 12.0) + draw(0.0, 2 * math.pi))
        # full ink within half - 0.5 px of the centre line, none beyond half + 0.5
        half = ops.where(spans, draw(0.5, self.across_width / 2), draw(0.5, self.max_width / 2))
        ink = ops.clip(half + 0.5 - ops.abs(across - wave), 0.0, 1.0)
        ink = ops.where(ops.abs(along) <= ops.where(spans, 20.0, draw(5.0, 20.0)), ink, 0.0)
        gap = ops.sin(math.pi * along / draw(2.0, 4.0) + draw(0.0, 2 * math.pi)) < 0
        ink = ops.where(ops.logical_and(draw(0.0, 1.0) < self.dashed, gap), 0.0, ink)
        return ops.clip(images + ink, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "min_wave": self.min_wave, "max_wave": self.max_wave,
                "max_width": self.max_width, "across_width": self.across_width, "dashed": self.dashed,
                "across": self.across}


@AUGMENT_OPS.register("blur")
def _blur(cfg, seed: int) -> keras.layers.Layer:
    return RandomBlur(cfg.probability, cfg.max_sigma, seed=seed)


@AUGMENT_OPS.register("erasing")
def _erasing(cfg, seed: int) -> keras.layers.Layer:
    # scale bounds each side's share squared, so the box covers 2% to max_area of the image; black hides
    # ink, white is a bright occluder (a sticker, glare, the inverted bands of a scan)
    boxes = [keras.layers.RandomErasing(factor=(cfg.probability * share, cfg.probability * share),
                                        scale=(0.02, cfg.max_area), fill_value=fill, seed=seed + 1000 * int(fill), **_UNIT)
             for fill, share in ((0.0, 1.0 - cfg.white_share), (1.0, cfg.white_share)) if share > 0]
    return boxes[0] if len(boxes) == 1 else keras.Sequential(boxes, name="erasing")


@AUGMENT_OPS.register("lines")
def _lines(cfg, seed: int) -> keras.layers.Layer:
    return RandomLines(cfg.probability, cfg.min_wave, cfg.max_wave, cfg.max_width, cfg.across_width, cfg.dashed,
                       cfg.across, seed=seed)


@AUGMENT_OPS.register("contrast")
def _contrast(cfg, seed: int) -> keras.layers.Layer:
    # (f, f): a factor in [1 - f, 1 + f]; Keras 3.15 turns a single f into [1, 1 + f], never lowering contrast
    return keras.layers.RandomContrast((cfg.factor, cfg.factor), seed=seed, **_UNIT)


@AUGMENT_OPS.register("brightness")
def _brightness(cfg, seed: int) -> keras.layers.Layer:
    return keras.layers.RandomBrightness((-cfg.max_delta, cfg.max_delta), seed=seed, **_UNIT)


@AUGMENT_OPS.register("noise")
def _noise(cfg, seed: int) -> keras.layers.Layer:
    return RandomGaussianNoise(cfg.probability, cfg.max_stddev, seed=seed)


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """The enabled ops in a fixed order (rotation, shift, zoom, shear, elastic, then the robustness ops:
    blur, erasing, lines, contrast, brightness, noise), or None if none are. With ``cfg.compose`` the
    geometric ones (elastic included) are one :class:`mnist99.data.affine.ComposedAffine`: one resampling,
    not one each."""
    if not cfg.enabled:
        return None
    ops = []
    for offset, name in enumerate(AUGMENT_OPS.names()):
        op_cfg = getattr(cfg, name)
        if op_cfg.enabled:
            ops.append(AUGMENT_OPS.get(name)(op_cfg, seed + offset))
    if cfg.compose:
        geometric = [op for op in ops if type(op) in MATRICES or isinstance(op, ElasticDistortion)]
        if len(geometric) > 1:
            at = ops.index(geometric[0])
            ops = [op for op in ops if op not in geometric]
            ops.insert(at, ComposedAffine(geometric, name="geometry"))
    return keras.Sequential(ops, name="augment") if ops else None
