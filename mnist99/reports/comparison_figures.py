"""A study's figures: every seed drawn (points or thin lines) beside the arm's mean, so the spread shows.

Pure functions of :class:`~mnist99.reports.comparison.ArmResult` records; each returns a matplotlib
figure for the ``study`` stage to log.
"""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from mnist99.reports import intervals
from mnist99.reports.comparison import ArmResult, arm_names, by_seed
from mnist99.reports.plots import plt


def _colours(names: list[str]) -> dict[str, tuple]:
    """One colour per arm, the same in every figure of a study (tab20 beyond 10 arms)."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _arms_axis(ax, names: list[str], ylabel: str, title: str) -> None:
    tilted = len(names) > 4
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if tilted else 0, ha="right" if tilted else "center",
                  fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")


def _seed_offsets(count: int) -> np.ndarray:
    """Small horizontal offsets that keep one arm's seed points apart."""
    return np.linspace(-0.15, 0.15, count) if count > 1 else np.zeros(count)


def accuracy_figure(runs: list[ArmResult], title: str = "", confidence: float = intervals.CONFIDENCE) -> plt.Figure:
    """Validation and test accuracy per arm: one point per seed, and the mean with its Student-t interval."""
    names = arm_names(runs)
    colours = _colours(names)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.6 * len(names) + 3), 7.5))
    for ax, metric in zip(axes, ("val_accuracy", "test_accuracy")):
        for x, name in enumerate(names):
            values = list(by_seed(runs, name, metric).values())
            ax.plot(x + _seed_offsets(len(values)), values, "o", color=colours[name], alpha=0.6, markersize=4, zorder=3)
            found = intervals.t_interval(values, confidence)
            spread = [[found.mean - found.low], [found.high - found.mean]] if found.n > 1 else None
            ax.errorbar([x], [found.mean], yerr=spread, fmt="_", color="black", markersize=14, capsize=4)
        _arms_axis(ax, names, metric, metric)
    fig.suptitle(f"{title}: a point per seed; the mean and its {confidence:.0%} Student-t interval")
    fig.tight_layout()
    return fig


def curves_figure(runs: list[ArmResult], title: str = "") -> plt.Figure:
    """Validation accuracy and loss per epoch: a thin line per seed and a bold mean line per arm."""
    names = arm_names(runs)
    colours = _colours(names)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("val_accuracy", "val_loss")):
        for name in names:
            curves = [run.curves.get(key, []) for run in runs if run.name == name]
            for values in curves:
                ax.plot(np.arange(1, len(values) + 1), values, color=colours[name], alpha=0.3, linewidth=0.8)
            epochs = min(len(values) for values in curves)
            mean = np.mean([values[:epochs] for values in curves], axis=0) if epochs else []
            ax.plot(np.arange(1, epochs + 1), mean, color=colours[name], marker="o", markersize=3, label=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(f"{key} (thin: each seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grad_norms_figure(runs: list[ArmResult], title: str = "") -> plt.Figure:
    """Last epoch's gradient norm of each Dense/Conv layer by depth (log scale): a point per seed, the
    mean over seeds as a line per arm. Arms of different depths share the axis from the input on."""
    names = arm_names(runs)
    colours = _colours(names)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    deepest: list[str] = []
    for name in names:
        arm_runs = [run for run in runs if run.name == name]
        norms = np.array([[max(norm, 1e-12) for _, norm in run.grad_norms] for run in arm_runs])  # log axis: no 0
        if norms.size == 0:
            continue
        depth = np.arange(norms.shape[1])
        for row in norms:
            ax.plot(depth, row, "o", color=colours[name], alpha=0.35, markersize=3)
        ax.plot(depth, norms.mean(axis=0), color=colours[name], label=name)
        if len(arm_runs[0].grad_norms) > len(deepest):
            deepest = [layer for layer, _ in arm_runs[0].grad_norms]
    ax.set_xticks(np.arange(len(deepest)), deepest, rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("gradient L2 norm")
    ax.set_xlabel("layer (input -> output)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    fig.tight_layout()
    return fig


def dead_units_figure(runs: list[ArmResult], title: str = "") -> plt.Figure:
    """Units never active on the diagnostics batch at the last epoch, summed over layers: the mean per
    arm as a bar, each seed as a point."""
    names = arm_names(runs)
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names) + 2), 4))
    per_arm = [np.nan_to_num(list(by_seed(runs, name, "dead_units").values())) for name in names]
    bars = ax.bar(np.arange(len(names)), [values.mean() for values in per_arm], color="lightgrey")
    ax.bar_label(bars, fmt="%.1f")
    for x, values in enumerate(per_arm):
        ax.plot(x + _seed_offsets(len(values)), values, "o", color="black", markersize=3)
    ax.set_ylim(bottom=0)
    _arms_axis(ax, names, "dead units (never > 0 on the batch)", title)
    fig.tight_layout()
    return fig


FIGURES = {"accuracy.png": accuracy_figure, "curves.png": curves_figure,
           "grad_norms_by_depth.png": grad_norms_figure, "dead_units.png": dead_units_figure}
