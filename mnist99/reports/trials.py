"""A search's trials as one table (for CSV/HTML artifacts) and one figure, read from the oracle."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from mnist99.reports.plots import plt

HYPERBAND_KEYS = {"tuner/bracket": "bracket", "tuner/round": "round", "tuner/epochs": "epochs",
                  "tuner/initial_epoch": "initial_epoch", "tuner/trial_id": "continues_trial"}


def trials_table(trials: Iterable, run_ids: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per KerasTuner trial, best first: id, status, val_accuracy, best epoch, run id, hyperparameters."""
    rows = []
    for trial in trials:
        values = dict(trial.hyperparameters.values)
        # KerasTuner counts the best step from the start of this trial's fit, not from a resumed trial's.
        first = values.get("tuner/initial_epoch", 0)
        row = {"trial_id": trial.trial_id, "status": trial.status, "val_accuracy": trial.score,
               "best_epoch": first + trial.best_step + 1 if trial.score is not None else None,
               "run_id": (run_ids or {}).get(trial.trial_id)}
        row.update({name: values.pop(key) for key, name in HYPERBAND_KEYS.items() if key in values})
        row.update(values)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["val_accuracy", "trial_id"], ascending=[False, True], na_position="last",
                             ignore_index=True)


def scores_figure(table: pd.DataFrame, title: str = ""):
    """val_accuracy per trial in trial order, the best one highlighted."""
    ordered = table.sort_values("trial_id")
    scores = ordered["val_accuracy"].astype(float).fillna(0.0)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(ordered) + 2), 3.5))
    colors = ["tab:orange" if s == scores.max() else "tab:blue" for s in scores]
    ax.bar(ordered["trial_id"].astype(str), scores, color=colors)
    low = scores[scores > 0].min() if (scores > 0).any() else 0.0
    ax.set_ylim(max(0.0, low - 0.02), min(1.0, scores.max() + 0.01) or 1.0)
    ax.set_xlabel("trial")
    ax.set_ylabel("val_accuracy (best epoch)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig

