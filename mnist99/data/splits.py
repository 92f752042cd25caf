"""Train/validation/test splits: stratified and seeded, with optional smoke-size subsets.

The test set is only ever read for final reporting; early stopping, tuning and model choice
use the validation split carved out of the training set here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from mnist99.config import DataConfig
from mnist99.data.idx import sha256_bytes
from mnist99.data.sources import load_mnist


@dataclass(frozen=True)
class Splits:
    """uint8 images (N, 28, 28) and int labels for each split, plus where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    digest: str  # sha256 over the full 70,000 images and labels, before any split

    def parts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each split by name (train, val, test): its images and labels."""
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)}

    def counts(self) -> dict[str, int]:
        return {name: len(y) for name, (_, y) in self.parts().items()}


def stratified_subset(x: np.ndarray, y: np.ndarray, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced subset of ``size`` samples (all of them when size is None or too big)."""
    if size is None or size >= len(y):
        return x, y
    _, x_sub, _, y_sub = train_test_split(x, y, test_size=size, stratify=y, random_state=seed)
    return x_sub, y_sub


def digest_of(arrays: dict[str, np.ndarray]) -> str:
    """A content hash of the raw arrays: the data part of every cache key."""
    return sha256_bytes(b"".join(arrays[k].tobytes() for k in ("x_train", "y_train", "x_test", "y_test")))


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load MNIST and split it: ``cfg.val_size`` stratified validation images held out of train."""
    arrays, source = load_mnist(cfg.path, cfg.cache_dir)
    x_train, x_val, y_train, y_val = train_test_split(
        arrays["x_train"], arrays["y_train"], test_size=cfg.val_size,
        stratify=arrays["y_train"], random_state=seed,
    )
    x_train, y_train = stratified_subset(x_train, y_train, cfg.train_limit, seed)
    x_test, y_test = stratified_subset(arrays["x_test"], arrays["y_test"], cfg.test_limit, seed)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, source, digest_of(arrays))
