"""What ``fit`` trains when the work moves onto the accelerator: the net behind its augmentation and,
optionally, behind the whole training set held in device memory.

Why: on a GPU the per-batch host work -- the copy, the uint8 -> float cast and above all the
augmentation, which ``tf.data`` runs on the host's cores -- can bound the step time, not the model.
A :class:`AugmentedNet` takes batches of *indices*, gathers the uint8 images from one device-resident
variable, casts and augments them and calls the net, all in the compiled train step. The net's
weights are the wrapped model's weights, so the net that is evaluated, logged and exported is the same
plain net as without it (images in, probabilities out): the wrapped model is thrown away after ``fit``.

Written with ``keras.ops`` only, so the TensorFlow path (:mod:`mnist99.training.fit`) and the JAX
GPU benchmark (``benchmarks/gpu.py``) train the same thing.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mnist99.config import Config
from mnist99.data.augment import build_augmenter
from mnist99.data.model_input import to_model_input
from mnist99.models.precision import global_policy


class DeviceImages(keras.layers.Layer):
    """All the images as one non-trainable uint8 variable; maps a batch of indices to float32 (B, 28, 28, 1)
    in [0, 1] with :func:`mnist99.data.model_input.to_model_input`, as the host pipeline does."""

    def __init__(self, images: np.ndarray, **kwargs) -> None:
        super().__init__(dtype="float32", **kwargs)
        self.images = self.add_weight(shape=images.shape, dtype="uint8", trainable=False, name="images",
                                      initializer=lambda shape, dtype: images)

    # The images are data, not training state: weight files (BackupAndRestore's per-epoch backup
    # above all) leave them out rather than write them again every epoch; a restore keeps them.
    def save_own_variables(self, store) -> None:
        pass

    def load_own_variables(self, store) -> None:
        pass

    def call(self, indices):
        batch = ops.take(self.images, ops.cast(indices, "int32"), axis=0)
        return to_model_input(batch)


class AugmentedNet(keras.Model):
    """``net(augmenter(images))``, where the images come as they are or, with ``images``, as indices into them.

    The augmentation is active in training only (Keras' random layers pass images through at
    inference), so validating the wrapped model validates the net. Float32 itself, so a mixed-precision
    policy does not cast the images before the augmentation resamples them.
    """

    def __init__(self, net: keras.Model, augmenter: keras.Model | None = None,
                 images: np.ndarray | None = None, **kwargs) -> None:
        super().__init__(name="augmented_net", dtype="float32", **kwargs)
        self.net = net
        self.augmenter = augmenter
        self.images = DeviceImages(images, name="device_images") if images is not None else None

    def call(self, inputs, training=False):
        x = self.images(inputs) if self.images is not None else inputs
        if self.augmenter is not None:
            x = self.augmenter(x, training=training)
        return self.net(x, training=training)


def build_augmented_net(cfg: Config, net: keras.Model, images: np.ndarray | None = None) -> AugmentedNet:
    """The configured augmentation (built in float32, whatever the policy) in front of ``net``.

    Keras 3.15 marks its random affine layers un-jittable for TensorFlow's sake (no XLA kernel for
    ImageProjectiveTransform), which makes a JAX model containing them run eagerly, ~30x slower;
    their JAX ops do compile, so under JAX they are marked jittable. Under TensorFlow Keras then
    trains the wrapped model without XLA (it says so).
    """
    with global_policy("float32"):
        augmenter = build_augmenter(cfg.augment, cfg.seed)
    if augmenter is not None and keras.config.backend() == "jax":
        # the Sequential's layers and those a ComposedAffine (augment.compose) draws from
        for layer in augmenter.layers + [inner for outer in augmenter.layers for inner in getattr(outer, "composed", [])]:
            layer.supports_jit = True
    wrapped = AugmentedNet(net, augmenter, images)
    # Built now, on one index or image, so that BackupAndRestore can restore into it before fit starts.
    wrapped(np.zeros((1,), "int32") if images is not None else np.zeros((1, *net.input_shape[1:]), "float32"))
    return wrapped


def net_of(model: keras.Model) -> keras.Model:
    """The net a callback should look at: the wrapped model's net while an :class:`AugmentedNet` fits, else ``model``."""
    return model.net if isinstance(model, AugmentedNet) else model
