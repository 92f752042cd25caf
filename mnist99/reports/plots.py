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
    its own min to max unless ``value_range`` fixes it (to show brightness and contrast as they are)."""
    images = np.asarray(images).reshape(len(images), *IMAGE_SHAPE)
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=value_range and value_range[0], vmax=value_range and value_range[1])
            if captions:
                ax.set_title(captions[i], fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: plt.Figure) -> None:
    plt.close(fig)
