"""Figures logged to MLflow: learning curves and grids of digits (matplotlib, no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display: servers, CI, jobs started over ssh
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnist99.constants import IMAGE_SHAPE  # noqa: E402


def learning_curves(history: dict[str, list[float]], title: str = "") -> plt.Figure:
    """Loss and accuracy per epoch, train against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def digit_grid(images: np.ndarray, captions: list[str] | None = None, cols: int = 8, title: str = "",
               value_range: tuple[float, float] | None = None) -> plt.Figure:
    """A grid of (N, 28, 28[, 1]) digits with an optional caption under each; each digit's grey scale spans
    its own min to max unless ``value_range`` fixes it (to show brightness and contrast as they are).

    The digits are tiled into one image on one axes: an axes per digit (with its ticks and a tight
    layout over them all) took ~1 s a figure, paid by every evaluation and every prepare.
    """
    images = np.asarray(images, dtype=np.float32).reshape(len(images), *IMAGE_SHAPE)
    if value_range is None:
        low = images.min(axis=(1, 2), keepdims=True)
        span = images.max(axis=(1, 2), keepdims=True) - low
    else:
        low, span = np.float32(value_range[0]), np.float32(value_range[1] - value_range[0])
    scaled = np.clip((images - low) / np.where(span > 0, span, 1), 0, 1)
    rows = max(1, int(np.ceil(len(images) / cols)))
    gap, below = 4, 12 if captions else 4  # pixels between digits, and under each for its caption
    height, width = IMAGE_SHAPE
    canvas = np.ones((rows * (height + below), cols * (width + gap)), np.float32)  # white between digits
    for i, digit in enumerate(scaled):
        top, left = (i // cols) * (height + below), (i % cols) * (width + gap) + gap // 2
        canvas[top:top + height, left:left + width] = digit
    fig, ax = plt.subplots(figsize=(cols * 1.3, rows * 1.5))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for i, caption in enumerate(captions or []):
        ax.text((i % cols) * (width + gap) + gap // 2 + width / 2, (i // cols) * (height + below) + height + 1,
                caption, ha="center", va="top", fontsize=7)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92 if title else 0.99)
    return fig


def close(fig: plt.Figure) -> None:
    plt.close(fig)
