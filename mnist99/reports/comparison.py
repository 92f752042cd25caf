"""A study's comparison of its arms: the table (CSV and Markdown) and the figures for the parent run.

Pure functions of :class:`ArmResult` records; the ``study`` stage fills them from MLflow and logs
what these return, so the report can be tested without a tracking store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mnist99.reports.plots import plt

# Column -> how the Markdown table prints it; the CSV keeps full precision.
COLUMNS = {"arm": "{}", "val_accuracy": "{:.4f}", "test_accuracy": "{:.4f}", "best_epoch": "{:.0f}",
           "epochs_run": "{:.0f}", "train_seconds": "{:.1f}", "dead_units": "{:.0f}", "overfit_epoch": "{:.0f}",
           "run_id": "{}"}


@dataclass
class ArmResult:
    """What one arm's run left behind, as the comparison needs it."""

    name: str
    run_id: str
    metrics: dict[str, float | None]  # the COLUMNS: val_accuracy, test_accuracy, ..., overfit_epoch
    curves: dict[str, list[float]] = field(default_factory=dict)  # val_accuracy, val_loss: one value per epoch
    grad_norms: list[tuple[str, float]] = field(default_factory=list)  # (layer, norm), input to output


def table(arms: list[ArmResult]) -> pd.DataFrame:
    """One row per arm, in the study's order, with the :data:`COLUMNS`."""
    rows = [{**{k: a.metrics.get(k) for k in COLUMNS}, "arm": a.name, "run_id": a.run_id} for a in arms]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs ``tabulate``, which we do not depend on)."""
    def cell(column: str, value) -> str:
        return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else COLUMNS[column].format(value)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in df.columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def _lines_per_arm(ax, xlabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def curves_figure(arms: list[ArmResult], title: str = "") -> plt.Figure:
    """Validation accuracy and loss per epoch, one line per arm."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("val_accuracy", "val_loss")):
        for arm in arms:
            values = arm.curves.get(key, [])
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=arm.name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _lines_per_arm(ax, "epoch", key)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grad_norms_figure(arms: list[ArmResult], title: str = "") -> plt.Figure:
    """Last epoch's gradient norm of each Dense/Conv layer by depth (log scale), one line per arm."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in arms:
        norms = [max(norm, 1e-12) for _, norm in arm.grad_norms]  # a log axis cannot show 0
        ax.plot(np.arange(len(norms)), norms, marker="o", label=arm.name)
    if arms and arms[0].grad_norms:
        labels = [layer for layer, _ in arms[0].grad_norms]
        ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("gradient L2 norm")
    _lines_per_arm(ax, "layer (input -> output)", title)
    fig.tight_layout()
    return fig


def dead_units_figure(arms: list[ArmResult], title: str = "") -> plt.Figure:
    """Units never active on the diagnostics batch at the last epoch, summed over layers, per arm."""
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(arms) + 2), 4))
    counts = [arm.metrics.get("dead_units") or 0 for arm in arms]
    bars = ax.bar([arm.name for arm in arms], counts)
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("dead units (never > 0 on the batch)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
