"""Scores of predicted probabilities, in numpy alone: `benchmarks/gpu.py` runs where only Keras and JAX are installed."""
from __future__ import annotations

import numpy as np


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The share of rows of ``probs`` (N, classes) whose most probable class is the label."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))
