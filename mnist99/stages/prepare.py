"""Stage ``prepare``: find, verify and cache MNIST, split it, and log the dataset to MLflow.

Reads: data.path / $MNIST99_DATA / cache / download. Writes: the npz cache and an MLflow run with
the datasets (digests), class counts and a preview of augmented digits.
"""
from __future__ import annotations

import time

from mnist99 import tracking
from mnist99.config import Config
from mnist99.data import Splits, make_splits
from mnist99.reports import plots


def log_augment_preview(cfg: Config, splits: Splits, n: int = 32) -> None:
    """A PNG grid: the first row real digits, the rest augmented copies."""
    from mnist99.data.augment import build_augmenter
    from mnist99.data.model_input import to_model_input

    augmenter = build_augmenter(cfg.augment, cfg.seed)
    images = to_model_input(splits.x_train[:8])
    rows = [images] + ([augmenter(images, training=True) for _ in range(n // 8 - 1)] if augmenter else [])
    import numpy as np

    grid = np.concatenate([np.asarray(r) for r in rows])
    fig = plots.digit_grid(grid, title="top row: originals; below: augmented")
    tracking.log_figure(fig, "augment_preview.png")
    plots.close(fig)


def run(cfg: Config) -> dict:
    """Load and split MNIST; returns the split sizes, the data digest and the seconds it took.

    The data is read before the store is touched: a missing or corrupt file leaves no run behind.
    """
    start = time.perf_counter()
    splits = make_splits(cfg.data, cfg.seed)
    seconds = time.perf_counter() - start
    tracking.setup(cfg)
    with tracking.stage_run(cfg, "prepare", "prepare") as active:
        tracking.log_config(cfg)
        tracking.log_dataset(splits)
        log_augment_preview(cfg, splits)
        tracking.log_metrics({"prepare_seconds": seconds})
    print(f"prepare: {splits.counts()} from {splits.source} in {seconds:.1f}s (digest {splits.digest[:12]})")
    return {**splits.counts(), "digest": splits.digest, "seconds": seconds, "run_id": active.info.run_id}
