"""Keras' random geometric layers (rotation, translation, zoom, shear) applied as one affine resampling.

Why: each of Keras' layers resamples the image bilinearly on its own, so the four in a row blur a digit
four times. On MNIST's training digits they leave 9% of the ink pixels above 0.9 (50% before) and spread
the ink over 190 pixels a digit (137 before): the net trains on digits softer and thicker than those it is
tested on. One resampling through the product of the four matrices leaves 30% and 158 pixels, and runs
~1.8x the images/s (benchmarks/results/cpu-2core/2026-12-05-floor-one-resampling.md).

Each layer still draws its own parameters (its own seed and ranges, through its public
``get_random_transformation``); only the resampling is shared. The matrices are Keras' own: each maps an
output pixel (x, y) to the input point it samples, ``[a0, a1, a2, b0, b1, b2, c0, c1]``. A last layer with
a ``displacement`` (:class:`mnist99.data.augment.ElasticDistortion`'s smooth field) moves each output pixel
before the matrices map it: the elastic distortion joins the same resampling instead of adding a fifth.
"""
from __future__ import annotations

import keras
from keras import ops


def _matrix_3x3(params):
    """(B, 8) transform parameters -> (B, 3, 3)."""
    return ops.reshape(ops.concatenate([params, ops.ones_like(params[:, :1])], axis=1), (-1, 3, 3))


def _rows(*columns):
    """(B, 1) columns -> (B, 8) transform parameters."""
    return ops.concatenate([ops.cast(c, "float32") for c in columns], axis=1)


def _translation(layer, t, height, width):
    dx, dy = t["translations"][:, 0:1], t["translations"][:, 1:2]
    zero, one = ops.zeros_like(dx), ops.ones_like(dx)
    return _rows(one, zero, -dx, zero, one, -dy, zero, zero)


def _zoom(layer, t, height, width):
    zx, zy = ops.cast(t["width_zoom"], "float32"), ops.cast(t["height_zoom"], "float32")
    zero = ops.zeros_like(zx)
    return _rows(zx, zero, (width - 1.0) / 2.0 * (1.0 - zx), zero, zy, (height - 1.0) / 2.0 * (1.0 - zy), zero, zero)


def _shear(layer, t, height, width):
    sx, sy = t["shear_factor"][:, 0:1], t["shear_factor"][:, 1:2]
    zero, one = ops.zeros_like(sx), ops.ones_like(sx)
    return _rows(one, sx, zero, sy, one, zero, zero, zero)


def _rotation(layer, t, height, width):
    return ops.cast(t["rotation_matrix"], "float32")


# Keras layer class -> its draw's matrix; the layers these functions read are the ones these keys name
MATRICES = {
    keras.layers.RandomRotation: _rotation,
    keras.layers.RandomTranslation: _translation,
    keras.layers.RandomZoom: _zoom,
    keras.layers.RandomShear: _shear,
}


@keras.saving.register_keras_serializable(package="mnist99")
class ComposedAffine(keras.layers.Layer):
    """``layers`` (any of :data:`MATRICES`' classes, in the order they would run, then optionally one layer
    with a ``displacement``) as one bilinear resampling, black beyond the edge; images pass through at
    inference."""

    def __init__(self, layers: list[keras.layers.Layer], **kwargs) -> None:
        super().__init__(**kwargs)
        for at, layer in enumerate(layers):
            if type(layer) not in MATRICES and not (hasattr(layer, "displacement") and at == len(layers) - 1):
                raise ValueError(f"ComposedAffine cannot compose {type(layer).__name__} there: only "
                                 f"{', '.join(c.__name__ for c in MATRICES)}, then one displacement field")
        self.composed = list(layers)

    def build(self, input_shape):
        for layer in self.composed:
            layer.build(input_shape)

    def call(self, images, training=True):
        if not training:
            return images
        height, width = float(images.shape[1]), float(images.shape[2])
        affine = [layer for layer in self.composed if type(layer) in MATRICES]
        total = ops.eye(3, dtype="float32")[None]
        for layer in affine:  # out(p) = in(M1 M2 ... Mn p): the first layer's matrix on the left
            params = MATRICES[type(layer)](layer, layer.get_random_transformation(images, training=True),
                                           height, width)
            total = ops.matmul(total, _matrix_3x3(params))
        if len(affine) == len(self.composed):
            params = ops.reshape(total, (-1, 9))[:, :8]
            return ops.image.affine_transform(images, params, interpolation="bilinear", fill_mode="constant",
                                              fill_value=0.0)
        return self._warp(images, total, self.composed[-1])

    def _warp(self, images, total, warp):
        """out(p) = in(M (p + d(p))): ``warp``'s field d moves the output grid, the matrices map it into the
        input, and ``warp``'s bilinear sampler reads it there (black beyond the edge)."""
        field = warp.displacement(images, warp.get_random_transformation(images, training=True))
        rows, cols = warp.grid(images)
        x, y = cols + field[..., 1], rows + field[..., 0]
        m = [total[:, i // 3, i % 3][:, None, None] for i in range(8)]
        k = m[6] * x + m[7] * y + 1.0
        source_x, source_y = (m[0] * x + m[1] * y + m[2]) / k, (m[3] * x + m[4] * y + m[5]) / k
        return ops.clip(warp.sample(images[..., 0], source_y, source_x)[..., None], 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layers": [keras.saving.serialize_keras_object(layer) for layer in self.composed]}

    @classmethod
    def from_config(cls, config):
        layers = [keras.saving.deserialize_keras_object(layer) for layer in config.pop("layers")]
        return cls(layers, **config)
