"""MNIST: finding, verifying, caching and splitting the real dataset."""
from mnist99.data.splits import Splits, make_splits

__all__ = ["Splits", "make_splits"]
