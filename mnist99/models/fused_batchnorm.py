"""BatchNormalization whose training step runs TensorFlow's fused kernel: the same arithmetic, fewer ops.

Keras 3's BatchNormalization computes a batch's moments and normalises it with separate ops (a mean, a
variance, a subtract, a multiply ...), and its gradient is as many again; tf.keras used TensorFlow's
FusedBatchNormV3, one kernel forward and one backward (keras-team/keras-core#225 reports the slowdown). On 2
Intel Xeon cores the default net trains 1.28x the images/s with the fused kernel, side by side
(benchmarks/results/cpu-2core/2026-12-07-fused-batchnorm-speed.md).

Only a training step (its forward pass and so its gradient) differs: a 4-D channels-last input on the
TensorFlow backend, training, no mask, renorm or synchronised moments. Everything else (inference, other
backends, 2-D inputs) is Keras' own code.
The moving statistics take the batch's biased variance, as Keras' do (the kernel returns the unbiased one).
Nets are scored, saved and exported as their serving twin (:func:`mnist99.models.twin.serving_twin`), made of
stock Keras layers: an exported model loads without mnist99.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mnist99")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` (same arguments, weights and config) with a fused training step."""

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TensorFlow backend only (the JAX path never gets here)

        x = tf.cast(inputs, "float32")  # as Keras does: moments of 16-bit inputs overflow
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
        variance = unbiased * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)

    def _fused(self, inputs, training, mask) -> bool:
        """Whether this call takes the fused kernel (else Keras' own ``call``)."""
        return (bool(training) and self.trainable and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow")
