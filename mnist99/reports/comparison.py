"""A study's comparison of its arms over seeds: the tables (CSV and Markdown) for the parent run.

Pure functions of :class:`ArmResult` records, one per arm and seed; the ``study`` stage fills them
from MLflow and logs what these return, so the report can be tested without a tracking store. The
statistics are :mod:`mnist99.reports.intervals`'; the figures, :mod:`mnist99.reports.comparison_figures`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mnist99.reports import intervals

# What each run reports, one row per (arm, seed) in runs.csv.
RUN_COLUMNS = ("val_accuracy", "test_accuracy", "best_epoch", "epochs_run", "train_seconds", "dead_units",
               "overfit_epoch")
# The metrics summarised over the seeds and compared with the reference arm -> how Markdown prints them.
SUMMARISED = {"val_accuracy": "{:.4f}", "test_accuracy": "{:.4f}", "train_seconds": "{:.1f}", "dead_units": "{:.1f}"}


@dataclass
class ArmResult:
    """What one run of an arm (one seed) left behind, as the comparison needs it."""

    name: str
    seed: int
    run_id: str
    metrics: dict[str, float | None]  # the RUN_COLUMNS: val_accuracy, test_accuracy, ..., overfit_epoch
    curves: dict[str, list[float]] = field(default_factory=dict)  # val_accuracy, val_loss: one value per epoch
    grad_norms: list[tuple[str, float]] = field(default_factory=list)  # (layer, norm), input to output


def arm_names(runs: list[ArmResult]) -> list[str]:
    """The arms in the study's order (the order of their first runs)."""
    return list(dict.fromkeys(run.name for run in runs))


def by_seed(runs: list[ArmResult], arm: str, metric: str) -> dict[int, float]:
    """Seed -> ``metric`` of the arm's runs (NaN where a run did not report it)."""
    return {run.seed: math.nan if run.metrics.get(metric) is None else float(run.metrics[metric])
            for run in runs if run.name == arm}


def runs_table(runs: list[ArmResult]) -> pd.DataFrame:
    """One row per run: arm, seed, the :data:`RUN_COLUMNS` and its run id."""
    rows = [{"arm": r.name, "seed": r.seed, **{k: r.metrics.get(k) for k in RUN_COLUMNS}, "run_id": r.run_id}
            for r in runs]
    return pd.DataFrame(rows, columns=["arm", "seed", *RUN_COLUMNS, "run_id"])


def summary_table(runs: list[ArmResult], confidence: float = intervals.CONFIDENCE) -> pd.DataFrame:
    """One row per arm: its seed count, each :data:`SUMMARISED` metric's mean and Student-t interval
    (``<metric>_mean``, ``_low``, ``_high``) and ``overfit_runs`` (runs the overfitting detector flagged)."""
    rows = []
    for arm in arm_names(runs):
        row: dict = {"arm": arm, "seeds": len(by_seed(runs, arm, "val_accuracy"))}
        for metric in SUMMARISED:
            found = intervals.t_interval(list(by_seed(runs, arm, metric).values()), confidence)
            row.update({f"{metric}_mean": found.mean, f"{metric}_low": found.low, f"{metric}_high": found.high})
        row["overfit_runs"] = sum(r.metrics.get("overfit_epoch") is not None for r in runs if r.name == arm)
        rows.append(row)
    return pd.DataFrame(rows)


def differences_table(runs: list[ArmResult], reference: str, confidence: float = intervals.CONFIDENCE,
                      power: float = intervals.POWER) -> pd.DataFrame:
    """One row per other arm and :data:`SUMMARISED` metric: the arm minus ``reference`` over the seeds
    both ran (``pairs``), its mean ``difference`` with the Student-t interval (``low``, ``high``),
    ``excludes_zero``, and ``detectable``: the smallest true difference found with ``power``."""
    rows = []
    for arm in arm_names(runs):
        if arm == reference:
            continue
        for metric in SUMMARISED:
            mine, theirs = by_seed(runs, arm, metric), by_seed(runs, reference, metric)
            seeds = sorted(mine.keys() & theirs.keys())
            a, b = [mine[s] for s in seeds], [theirs[s] for s in seeds]
            found = intervals.paired_difference(a, b, confidence)
            rows.append({"arm": arm, "metric": metric, "pairs": found.n, "difference": found.mean, "low": found.low,
                         "high": found.high, "excludes_zero": found.excludes_zero,
                         "detectable": intervals.detectable_difference(np.subtract(a, b), confidence, power)})
    return pd.DataFrame(rows, columns=["arm", "metric", "pairs", "difference", "low", "high", "excludes_zero",
                                       "detectable"])


def best_arm(summary: pd.DataFrame) -> str:
    """The arm with the highest mean validation accuracy (never the test set)."""
    return str(summary.loc[summary["val_accuracy_mean"].astype(float).idxmax(), "arm"])


def _number(fmt: str, value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return (fmt.replace("{:", "{:+") if signed else fmt).format(value)


def _with_interval(fmt: str, mean: float, low: float, high: float, signed: bool = False) -> str:
    """``mean [low, high]``, or the mean alone when the interval is undefined (one seed)."""
    if math.isnan(low):
        return _number(fmt, mean, signed)
    return f"{_number(fmt, mean, signed)} [{_number(fmt, low, signed)}, {_number(fmt, high, signed)}]"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """GitHub-flavoured Markdown lines (pandas' own needs ``tabulate``, which we do not depend on)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def to_markdown(summary: pd.DataFrame, differences: pd.DataFrame, reference: str, seeds: list[int],
                confidence: float = intervals.CONFIDENCE, power: float = intervals.POWER) -> str:
    """The per-arm table and the paired differences with ``reference``, each under a line saying what its
    numbers are (``seeds``: the seeds every arm ran)."""
    level = f"{confidence:.0%}"
    lines = [f"Per arm: mean over seeds {', '.join(map(str, seeds))} (the same for every arm) "
             f"[{level} Student-t interval over the seeds].", ""]
    lines += _markdown_table(
        ["arm", "seeds", *SUMMARISED, "overfit runs"],
        [[row["arm"], str(row["seeds"]),
          *[_with_interval(fmt, row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"]) for m, fmt in SUMMARISED.items()],
          str(row["overfit_runs"])] for _, row in summary.iterrows()])
    if not differences.empty:
        lines += ["", f"Arm minus `{reference}` (the reference), seed by seed: mean [{level} Student-t interval of the "
                      f"paired differences]; excludes 0: the seeds tell the two apart; detectable: the smallest true "
                      f"difference found with {power:.0%} power at this spread, (t({(1 + confidence) / 2:g}, n-1) + "
                      f"t({power:g}, n-1)) x sd / sqrt(n) of the differences.", ""]
        lines += _markdown_table(
            ["arm", "metric", "difference", "excludes 0", "detectable"],
            [[row["arm"], row["metric"],
              _with_interval(SUMMARISED[row["metric"]], row["difference"], row["low"], row["high"], signed=True),
              ("yes" if row["excludes_zero"] else "no") if row["pairs"] > 1 else "-",
              _number(SUMMARISED[row["metric"]], row["detectable"])] for _, row in differences.iterrows()])
    return "\n".join(lines) + "\n"
