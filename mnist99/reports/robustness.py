"""The robustness report: a model's accuracy on digits corrupted by :mod:`mnist99.data.corruptions`.

Per corruption, plus clean, the mean over corruptions, the worst, and the means over the seen and the
held-out (unseen) families, as rows, a markdown table, a CSV and a bar chart; no MLflow here. The
``evaluate`` stage logs it into the evaluation pack; ``benchmarks/robustness.py`` compares models with it.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from mnist99.data import corruptions
from mnist99.delivery.forward import predict_probs
from mnist99.reports.plots import plt


@dataclass
class Robustness:
    """Accuracy on ``size`` digits, clean and under each corruption (``rows``: name, seen, accuracy)."""

    clean: float
    rows: list[dict]
    size: int

    def _mean(self, seen: bool | None = None) -> float:
        values = [r["accuracy"] for r in self.rows if seen is None or r["seen"] == seen]
        return float(np.mean(values)) if values else float("nan")

    def summary(self) -> dict[str, float]:
        """``clean``, ``mean`` (over corruptions), ``min``, ``seen_mean``, ``unseen_mean``."""
        return {"clean": self.clean, "mean": self._mean(), "min": min(r["accuracy"] for r in self.rows),
                "seen_mean": self._mean(True), "unseen_mean": self._mean(False)}

    def worst(self) -> str:
        """The corruption with the lowest accuracy."""
        return min(self.rows, key=lambda r: r["accuracy"])["corruption"]

    def metrics(self) -> dict[str, float]:
        """MLflow metric keys: ``robust/<corruption>`` and ``robust/<summary key>``."""
        return {f"robust/{r['corruption']}": r["accuracy"] for r in self.rows} | {
            f"robust/{k}": v for k, v in self.summary().items()}


def as_model(source):
    """A model that takes uint8 (N, 28, 28) digits: ``source`` loaded (a ``.keras`` path or MLflow URI,
    as :func:`mnist99.load_ensemble` takes) or a Keras model in memory (a float-input member is wrapped)."""
    from mnist99.delivery.ensemble import as_ensemble
    from mnist99.delivery.loading import load_ensemble

    return as_ensemble(load_ensemble(source) if isinstance(source, str | Path) else source)


def digits_predicted(size: int, names: list[str] | None = None) -> int:
    """The digits :func:`robustness` predicts for ``size`` digits: each clean and under each corruption of
    ``names`` (default: all). A time budget counts them before the table is made."""
    return size * (len(corruptions.names() if names is None else names) + 1)


def robustness(source, images: np.ndarray, labels: np.ndarray, seed: int = 0, names: list[str] | None = None) -> Robustness:
    """Score ``source`` (see :func:`as_model`) on uint8 ``images`` (N, 28, 28), clean and under each corruption.

    Args:
        seed: the corruptions' seed; the same seed scores every model on the same corrupted images.
        names: the corruptions (default: all, in registry order).
    """
    model = as_model(source)
    labels = np.asarray(labels)
    names = corruptions.names() if names is None else names
    sets = [corruptions.check_digits(images)] + [corruptions.corrupt(images, n, seed) for n in names]
    probs = predict_probs(model, np.concatenate(sets))
    accuracy = (probs.argmax(axis=1) == np.tile(labels, len(sets))).reshape(len(sets), -1).mean(axis=1)
    rows = [{"corruption": n, "seen": corruptions.CORRUPTIONS.get(n).seen, "accuracy": float(a)}
            for n, a in zip(names, accuracy[1:])]
    return Robustness(float(accuracy[0]), rows, len(labels))


def table(reports: dict[str, Robustness]) -> list[dict]:
    """One row per corruption, then clean and the summary, one column per model (the dict's keys):
    ``{"row": name, "family": "seen"/"unseen"/"", <model>: accuracy, ...}``."""
    first = next(iter(reports.values()))
    rows = [{"row": r["corruption"], "family": "seen" if r["seen"] else "unseen",
             **{m: rep.rows[i]["accuracy"] for m, rep in reports.items()}} for i, r in enumerate(first.rows)]
    return rows + [{"row": k, "family": "", **{m: rep.summary()[k] for m, rep in reports.items()}}
                   for k in first.summary()]


def markdown(reports: dict[str, Robustness]) -> str:
    """:func:`table` as markdown, accuracies in percent."""
    models = list(reports)
    lines = ["| corruption | family | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for row in table(reports):
        name = f"**{row['row']}**" if not row["family"] else row["row"]
        lines.append(f"| {name} | {row['family']} | " + " | ".join(f"{100 * row[m]:.2f}" for m in models) + " |")
    return "\n".join(lines) + "\n"


def csv_text(reports: dict[str, Robustness]) -> str:
    """:func:`table` as CSV, accuracies as fractions."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["row", "family", *reports], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table(reports))
    return out.getvalue()


def figure(report: Robustness, title: str = ""):
    """One bar per corruption, seen families blue and held-out ones orange, clean and mean as lines."""
    names = [r["corruption"] for r in report.rows]
    colours = ["tab:blue" if r["seen"] else "tab:orange" for r in report.rows]
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(names)) + 3, 4.5))
    bars = ax.bar(names, [r["accuracy"] for r in report.rows], color=colours)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    summary = report.summary()
    ax.axhline(summary["clean"], color="tab:green", linestyle="--", label=f"clean {summary['clean']:.4f}")
    ax.axhline(summary["mean"], color="black", linestyle=":", label=f"mean {summary['mean']:.4f}")
    families = [Patch(color="tab:blue", label=f"seen families (mean {summary['seen_mean']:.4f})"),
                Patch(color="tab:orange", label=f"held out of training (mean {summary['unseen_mean']:.4f})")]
    ax.set(ylim=(0, 1.05), ylabel="accuracy",
           title=title or f"accuracy under corruption ({report.size} test digits; worst: {report.worst()})")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + families, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=8)
    fig.tight_layout()
    return fig
