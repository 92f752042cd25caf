"""BatchNorm statistics recomputed for the weights a fit keeps, on the digits they will score.

A BatchNorm layer normalises by moving averages of its inputs' mean and variance, gathered during training
from the raw weights' forward passes over augmented digits. The weights a fit keeps are others (the
optimiser's moving average of the weights, ``train.optimizer.ema``, at early stopping's best epoch), and
they score clean digits. ``train.batchnorm_refresh`` batches of clean training digits through the kept
net in training mode make the statistics theirs. Keras has no such pass; PyTorch's
``torch.optim.swa_utils.update_bn`` is the same idea for weight averages: a cumulative mean over the
batches (each layer's momentum set to ``k / (k + 1)`` for the k-th batch), not a moving one, so every
batch counts alike and the old statistics count for nothing.

Measured (benchmarks/results/cpu-2core/2026-12-04-floor-batchnorm-refresh.md): it is the clean digits that
count (the same refresh on augmented digits changed nothing); a member gains about two validation digits of
5,000, its three-member ensembles none, so the default leaves it off.
"""
from __future__ import annotations

import keras
import numpy as np

from mnist99.data.model_input import to_model_input
from mnist99.models.layers import leaf_layers


def batchnorm_layers(net: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers in ``net`` and the models nested in it (fused ones too: a subclass)."""
    return [layer for layer in leaf_layers(net) if isinstance(layer, keras.layers.BatchNormalization)]


def refresh_batches(batches: int, images: int, batch_size: int) -> int:
    """The batches a refresh of ``batches`` runs on ``images`` digits: no more than they fill (a budget prices
    these, :func:`mnist99.training.budget.member_cost`)."""
    return min(batches, images // batch_size)


def refresh_statistics(net: keras.Model, images: np.ndarray, batches: int, batch_size: int, seed: int) -> int:
    """Replace the moving mean and variance of every BatchNorm layer of ``net`` by their mean over
    ``batches`` batches of ``batch_size`` of ``images`` (uint8 digits, drawn without replacement by
    ``seed``; fewer batches if they run out). The weights are untouched; Dropout, active in training
    mode, acts after the last BatchNorm layer of mnist99's nets. Returns the batches run (0: no
    BatchNorm layer, nothing run)."""
    layers = batchnorm_layers(net)
    batches = refresh_batches(batches, len(images), batch_size) if layers else 0
    order = np.random.default_rng(seed).permutation(len(images))[: batches * batch_size]
    momenta = [layer.momentum for layer in layers]
    try:
        for k in range(batches):
            for layer in layers:
                layer.momentum = k / (k + 1.0)  # 0 first: the old statistics are replaced, not blended
            net(to_model_input(images[order[k * batch_size:(k + 1) * batch_size]]), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum  # saved with the model's config
    return batches
