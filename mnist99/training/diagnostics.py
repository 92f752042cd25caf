"""Training diagnostics: gradient norms, weight and activation sparsity, dead units, overfitting.

Computed at each epoch's end on one fixed validation batch, in inference mode: Dropout off and
BatchNorm on its moving statistics (a diagnostic must not update them). One forward and one
backward pass per epoch, so it stays cheap. Results go through the ``log_fn``/``tag_fn`` the caller
passes in; this module knows nothing of MLflow.

Metric names (step = epoch, counted from 1; layer names sanitised for MLflow):
  grad_norm/<layer>         L2 norm of the compiled loss' gradient w.r.t. the layer's trainable weights
  weight_sparsity/<layer>   fraction of the layer's kernel entries with |w| < threshold (Dense, Conv)
  act_sparsity/<layer>      fraction of an activation layer's outputs that are exactly 0
  dead_units/<layer>        units (last axis) of an activation layer never > 0 on the batch
  dead_units_total, act_sparsity_mean   the same summed / averaged over the activation layers
  loss_gap                  val_loss - loss (loss is the epoch's mean, with dropout and augmentation)
Run tag ``mnist99.overfit_epoch``: the epoch at which val_loss had risen ``overfit_patience`` epochs
in a row while the training loss fell.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from mnist99.config import DiagnosticsConfig
from mnist99.data import Splits
from mnist99.data.batches import make_dataset
from mnist99.models.layers import Maxout
from mnist99.training.augmented_net import net_of

LogFn = Callable[[dict[str, float], int], None]
TagFn = Callable[[str, str], None]
OVERFIT_TAG = "mnist99.overfit_epoch"
NOT_IN_METRIC_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]")  # MLflow's metric-name alphabet, negated
# Layers whose outputs are activations worth watching (the classifier's softmax is excluded).
ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU,
                     keras.layers.Activation, Maxout)


def metric_name(prefix: str, layer_name: str) -> str:
    """``prefix/layer`` with every character MLflow refuses in a metric name replaced by ``_``."""
    return f"{prefix}/{NOT_IN_METRIC_NAMES.sub('_', layer_name)}"


def gradient_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers with trainable weights, input to output: the depth axis of the gradient plot."""
    return [layer for layer in model.layers if layer.trainable_weights]


def kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers with a kernel (Dense, Conv), input to output: a model's depth, layer by layer."""
    return [layer for layer in model.layers if getattr(layer, "kernel", None) is not None]


def activation_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Hidden activation layers (the model's own outputs, i.e. the softmax, are left out)."""
    outputs = {id(t) for t in model.outputs}
    return [layer for layer in model.layers
            if isinstance(layer, ACTIVATION_LAYERS) and id(layer.output) not in outputs]


def overfit_epoch(train_losses: Sequence[float], val_losses: Sequence[float], patience: int) -> int | None:
    """The first epoch (from 1) that ends ``patience`` epochs in a row of rising val_loss and falling loss.

    Both must move the other way at once: a plateauing training loss with a noisy validation loss
    is not overfitting. Returns None if it never happened.
    """
    streak = 0
    for i in range(1, min(len(train_losses), len(val_losses))):
        diverging = val_losses[i] > val_losses[i - 1] and train_losses[i] < train_losses[i - 1]
        streak = streak + 1 if diverging else 0
        if streak >= patience:
            return i + 1
    return None


def activation_stats(outputs: np.ndarray) -> tuple[float, int]:
    """(share of exact zeros, count of units never > 0) of one layer's outputs; units are the last axis."""
    units = outputs.reshape(-1, outputs.shape[-1])
    return float(np.mean(units == 0)), int(np.sum(~np.any(units > 0, axis=0)))


class TrainingDiagnostics(keras.callbacks.Callback):
    """Logs the module's diagnostics each epoch and warns (once) when training starts to overfit."""

    def __init__(self, images, labels, cfg: DiagnosticsConfig, log_fn: LogFn,
                 tag_fn: TagFn | None = None) -> None:
        super().__init__()
        self.images = tf.convert_to_tensor(images)
        self.labels = tf.convert_to_tensor(labels)
        self.cfg = cfg
        self.log_fn = log_fn
        self.tag_fn = tag_fn
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.overfit_epoch: int | None = None
        self._probe: keras.Model | None = None
        self._activations: list[keras.layers.Layer] = []
        self._net: keras.Model | None = None

    def on_train_begin(self, logs=None) -> None:
        # One model giving the prediction and every hidden activation: a single forward pass serves both.
        self._net = net_of(self.model)  # the net itself, also while an AugmentedNet feeds it indices
        self._activations = activation_layers(self._net)
        self._probe = keras.Model(self._net.inputs,
                                  [*self._net.outputs, *(layer.output for layer in self._activations)])

    def measure(self) -> dict[str, float]:
        """Gradient norms, weight sparsity and activation statistics on the fixed batch, now."""
        weights = self._net.trainable_weights
        with tf.GradientTape() as tape:
            outputs = self._probe(self.images, training=False)
            loss = self._net.compute_loss(x=self.images, y=self.labels, y_pred=outputs[0], training=False)
        grads = {id(v): g for v, g in zip(weights, tape.gradient(loss, weights)) if g is not None}
        metrics: dict[str, float] = {}
        for layer in gradient_layers(self._net):
            layer_grads = [grads[id(v)] for v in layer.trainable_weights if id(v) in grads]
            norm = tf.linalg.global_norm(layer_grads) if layer_grads else 0.0
            metrics[metric_name("grad_norm", layer.name)] = float(norm)
        for layer in kernel_layers(self._net):
            small = np.abs(layer.kernel.numpy()) < self.cfg.sparsity_threshold
            metrics[metric_name("weight_sparsity", layer.name)] = float(np.mean(small))
        zero_shares, dead_counts = [], []
        for layer, out in zip(self._activations, outputs[1:]):
            zero_share, dead = activation_stats(keras.ops.convert_to_numpy(out))
            metrics[metric_name("act_sparsity", layer.name)] = zero_share
            metrics[metric_name("dead_units", layer.name)] = dead
            zero_shares.append(zero_share)
            dead_counts.append(dead)
        if self._activations:
            metrics["dead_units_total"] = sum(dead_counts)
            metrics["act_sparsity_mean"] = float(np.mean(zero_shares))
        return metrics

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        metrics = self.measure()
        if "loss" in logs and "val_loss" in logs:
            metrics["loss_gap"] = float(logs["val_loss"]) - float(logs["loss"])
            self.train_losses.append(float(logs["loss"]))
            self.val_losses.append(float(logs["val_loss"]))
            self._check_overfitting()
        self.log_fn(metrics, epoch + 1)

    def _check_overfitting(self) -> None:
        if self.overfit_epoch is not None:
            return
        self.overfit_epoch = overfit_epoch(self.train_losses, self.val_losses, self.cfg.overfit_patience)
        if self.overfit_epoch is not None:
            print(f"diagnostics: warning: overfitting at epoch {self.overfit_epoch}: val_loss rose for "
                  f"{self.cfg.overfit_patience} epochs in a row while the training loss fell", flush=True)
            if self.tag_fn is not None:
                self.tag_fn(OVERFIT_TAG, str(self.overfit_epoch))


def for_validation(cfg: DiagnosticsConfig, splits: Splits, log_fn: LogFn,
                   tag_fn: TagFn | None = None) -> TrainingDiagnostics:
    """The callback on the first ``cfg.batch_size`` validation images, prepared as training prepares them."""
    n = min(cfg.batch_size, len(splits.y_val))
    images, labels = next(iter(make_dataset(splits.x_val[:n], splits.y_val[:n], n)))
    return TrainingDiagnostics(images, labels, cfg, log_fn, tag_fn)
