"""Forward passes batch by batch through ``predict_on_batch``, the one call every model here offers.

Keras' ``model.predict`` runs the same compiled predict step behind its data iterator; on a 2-core TensorFlow CPU
4 of its 20 timed calls ran on one core at half the speed, a loop of ``predict_on_batch`` over the same batches
none of 20 (benchmarks/results/cpu-2core/2026-12-06-predict-on-batch.md). ONNX Runtime and LiteRT models
(:class:`~mnist99.delivery.runtimes.ExportedModel`) answer the same call, so stages need not know the runtime.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnist99.constants import EVAL_BATCH


def predict_probs(model, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """``model``'s outputs on ``images`` (N >= 1 of its inputs), ``batch_size`` at a time, as one float32 array
    (for the package's models: (N, 10) probabilities)."""
    return in_batches(model.predict_on_batch, images, batch_size)


def in_batches(forward: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
               batch_size: int = EVAL_BATCH) -> np.ndarray:
    """``forward`` applied to ``images`` ``batch_size`` at a time, as one float32 array: the loop behind
    :func:`predict_probs`, for callers that hold a bare call (benchmarks/inference.py's runtime paths)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    chunks = [np.asarray(forward(images[start: start + batch_size])) for start in range(0, len(images), batch_size)]
    return np.concatenate(chunks).astype(np.float32, copy=False)
