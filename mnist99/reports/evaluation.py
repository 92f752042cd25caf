"""The evaluation pack: accuracy, NLL, per-class scores, confusion, calibration, mistakes, members vs ensemble.

Pure computation on predicted probabilities plus matplotlib figures; no MLflow here. The
``evaluate`` stage predicts the test set, calls :func:`evaluate_predictions` and logs the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, confusion_matrix, log_loss

from mnist99.constants import NUM_CLASSES
from mnist99.reports import plots
from mnist99.reports.metrics import accuracy
from mnist99.reports.plots import plt

ECE_BINS = 15  # the usual choice since Guo et al. (2017); with ~1% errors, finer bins are mostly empty
CLASSES = list(range(NUM_CLASSES))


@dataclass
class CalibrationBins:
    """Top-label confidence split into equal-width bins: per bin the sample count, mean confidence and accuracy."""

    edges: np.ndarray  # (n_bins + 1,) from 0 to 1
    counts: np.ndarray  # (n_bins,) samples per bin
    confidence: np.ndarray  # (n_bins,) mean confidence in the bin (NaN when empty)
    accuracy: np.ndarray  # (n_bins,) fraction correct in the bin (NaN when empty)


@dataclass
class Evaluation:
    """Everything the evaluate stage logs: metrics, per-class report, confusion counts, tables and figures."""

    metrics: dict[str, float]
    per_class: dict
    confusion: np.ndarray
    calibration: CalibrationBins
    members: list[dict] | None = None
    figures: dict = field(default_factory=dict)  # artifact file name -> matplotlib figure


def check_predictions(probs: np.ndarray, labels: np.ndarray) -> None:
    """Raise ValueError unless ``probs`` is (N, 10) and ``labels`` is (N,) with N >= 1."""
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or len(probs) == 0:
        raise ValueError(f"probabilities must have shape (N >= 1, {NUM_CLASSES}), got {probs.shape}")
    if labels.shape != (len(probs),):
        raise ValueError(f"labels must have shape ({len(probs)},) to match the probabilities, got {labels.shape}")


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (scikit-learn's ``log_loss``, probabilities clipped).

    Rows are renormalised in float64 first: float32 softmax outputs sum to 1 only within ~1e-7,
    which trips scikit-learn's float64 sum-to-one check (a warning per call).
    """
    probs = probs.astype(np.float64)
    return float(log_loss(labels, y_proba=probs / probs.sum(axis=1, keepdims=True), labels=CLASSES))


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> CalibrationBins:
    """Bin the top-label confidence into ``n_bins`` equal-width bins ``(lo, hi]`` over [0, 1]."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
        mean_acc = np.bincount(bins, weights=correct, minlength=n_bins) / counts
    return CalibrationBins(edges, counts, mean_conf, mean_acc)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: how far, on average, confidence is from accuracy.

    ECE = sum over bins b of (n_b / N) * |accuracy_b - confidence_b|, with the top-label
    confidence split into ``n_bins`` equal-width bins (Naeini et al. 2015; Guo et al. 2017).
    0 for a perfectly calibrated model; an over-confident one scores high even when accurate.
    scikit-learn has no multiclass ECE (``calibration_curve`` is binary and drops the counts).
    """
    bins = calibration_bins(probs, labels, n_bins)
    filled = bins.counts > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float((bins.counts[filled] / bins.counts.sum()) @ gaps)


def per_class_report(probs: np.ndarray, labels: np.ndarray) -> dict:
    """scikit-learn's classification report as a dict: per digit ``"0".."9"`` precision/recall/f1-score/support."""
    return classification_report(labels, probs.argmax(axis=1), labels=CLASSES, target_names=[str(c) for c in CLASSES],
                                 output_dict=True, zero_division=0)


def per_class_markdown(report: dict) -> str:
    """The per-class report as a markdown table (one row per digit, then the macro and weighted averages)."""
    lines = ["| class | precision | recall | f1-score | support |", "|---|---:|---:|---:|---:|"]
    for name in [str(c) for c in CLASSES] + ["macro avg", "weighted avg"]:
        row = report[name]
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} "
                     f"| {int(row['support'])} |")
    lines.append(f"\naccuracy: {report['accuracy']:.4f}")
    return "\n".join(lines) + "\n"


def members_table(member_probs: list[np.ndarray], probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Accuracy and NLL of each member (``member_1``...) and of the ensemble (last row)."""
    rows = [{"name": f"member_{i}", "accuracy": accuracy(p, labels), "nll": nll(p, labels)}
            for i, p in enumerate(member_probs, start=1)]
    return rows + [{"name": "ensemble", "accuracy": accuracy(probs, labels), "nll": nll(probs, labels)}]


def confusion_figure(confusion: np.ndarray):
    """The confusion matrix with counts in each cell (rows: true digit, columns: predicted)."""
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay(confusion, display_labels=CLASSES).plot(ax=ax, cmap="Blues", values_format="d",
                                                                   colorbar=False)
    errors = int(confusion.sum() - np.trace(confusion))
    ax.set_title(f"confusion matrix: {errors} errors in {int(confusion.sum())} test digits")
    fig.tight_layout()
    return fig


def reliability_figure(bins: CalibrationBins, ece: float):
    """Reliability diagram (accuracy against confidence per bin) above the bin counts (log scale)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, height_ratios=(3, 1))
    centres, width = (bins.edges[:-1] + bins.edges[1:]) / 2, bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    top.bar(centres[filled], bins.accuracy[filled], width=width, edgecolor="black", label="accuracy")
    top.bar(centres[filled], bins.confidence[filled] - bins.accuracy[filled], bottom=bins.accuracy[filled],
            width=width, color="red", alpha=0.3, label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"reliability (ECE {ece:.4f}, {len(centres)} bins)")
    top.legend(loc="upper left")
    bottom.bar(centres, bins.counts, width=width, edgecolor="black")
    bottom.set(xlabel="confidence (top-label probability)", ylabel="digits", yscale="log")
    fig.tight_layout()
    return fig


def misclassified_figure(images: np.ndarray, probs: np.ndarray, labels: np.ndarray, limit: int = 64):
    """The ``limit`` most confident mistakes, each captioned ``true / predicted / confidence``."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    captions = [f"true {labels[i]} / pred {predicted[i]} / {confidence[i]:.2f}" for i in wrong]
    title = f"{len(wrong)} of {int((predicted != labels).sum())} misclassified test digits, most confident first"
    return plots.digit_grid(images[wrong], captions=captions, cols=8, title=title)


def members_figure(rows: list[dict]):
    """Bar charts of test accuracy and NLL, each member beside the ensemble."""
    names = [r["name"] for r in rows]
    colors = ["tab:gray"] * (len(rows) - 1) + ["tab:green"]
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(rows) * 2), 4))
    for ax, key in zip(axes, ("accuracy", "nll")):
        values = [r[key] for r in rows]
        ax.bar(names, values, color=colors)
        if key == "accuracy":  # everything sits near 0.99: zoom in so differences are visible
            ax.set_ylim(max(0.0, min(values) - 0.005), min(1.0, max(values) + 0.002))
        ax.bar_label(ax.containers[0], fmt="%.4f", fontsize=8)
        ax.set_title(f"test {key}")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def evaluate_predictions(probs: np.ndarray, labels: np.ndarray, images: np.ndarray,
                         member_probs: list[np.ndarray] | None = None) -> Evaluation:
    """Compute the whole pack for test ``probs`` (N, 10), ``labels`` (N,) and uint8 ``images`` (N, 28, 28).

    Metric keys: ``eval_test_accuracy``, ``eval_test_nll``, ``eval_ece``, ``eval_test_f1_macro``,
    ``eval_f1_class_<d>`` and, with members, ``eval_member_<i>_test_accuracy``/``_test_nll``.
    Figures are keyed by artifact file name; the caller closes them (``plots.close``).
    """
    probs, labels = np.asarray(probs), np.asarray(labels).astype(int)
    check_predictions(probs, labels)
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images for {len(labels)} labels")
    report = per_class_report(probs, labels)
    bins = calibration_bins(probs, labels)
    ece = expected_calibration_error(probs, labels)
    metrics = {"eval_test_accuracy": accuracy(probs, labels), "eval_test_nll": nll(probs, labels), "eval_ece": ece,
               "eval_test_f1_macro": report["macro avg"]["f1-score"]}
    metrics.update({f"eval_f1_class_{c}": report[str(c)]["f1-score"] for c in CLASSES})
    confusion = confusion_matrix(labels, probs.argmax(axis=1), labels=CLASSES)
    figures = {"confusion_matrix.png": confusion_figure(confusion), "reliability.png": reliability_figure(bins, ece),
               "misclassified.png": misclassified_figure(np.asarray(images), probs, labels)}
    members = None
    if member_probs:
        for p in member_probs:
            check_predictions(np.asarray(p), labels)
        members = members_table([np.asarray(p) for p in member_probs], probs, labels)
        for row in members[:-1]:
            metrics[f"eval_{row['name']}_test_accuracy"] = row["accuracy"]
            metrics[f"eval_{row['name']}_test_nll"] = row["nll"]
        figures["members_vs_ensemble.png"] = members_figure(members)
    return Evaluation(metrics, report, confusion, bins, members, figures)
