"""Stage ``evaluate``: the evaluation pack for an exported model or a finished train/ensemble run.

Reads: the test split and a model: ``--model SOURCE`` (a ``.keras``, ``.onnx`` or ``.tflite`` path, run by
Keras, ONNX Runtime or LiteRT; ``runs:/...`` or ``models:/mnist99-ensemble/<version|latest>``) or
``--run-id RUN`` (that run's ``model/model.keras``).
Writes, into the evaluated run (``--run-id``) or a new run ``evaluate-<name>`` (``--model``):
metrics eval_test_accuracy, eval_test_nll, eval_ece, eval_test_f1_macro, eval_f1_class_<d>
(and eval_member_<i>_test_accuracy/_nll for an ensemble); artifacts under evaluation/:
confusion_matrix.png/.json, misclassified.png, reliability.png, per_class.json/.md and, for an
ensemble, members_vs_ensemble.png/.json. With ``evaluate.robustness`` (docs/ROBUSTNESS.md): metrics
robust/<corruption>, robust/clean, robust/mean, robust/min, robust/seen_mean, robust/unseen_mean,
robust/seconds and artifacts robustness.png/.md/.csv.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnist99 import tracking
from mnist99.config import Config
from mnist99.constants import NUM_CLASSES, RUN_MODEL_ARTIFACT
from mnist99.data import Splits, make_splits
from mnist99.delivery.forward import predict_probs
from mnist99.reports import plots

ARTIFACT_DIR = "evaluation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="SOURCE",
                       help="a .keras, .onnx or .tflite file, runs:/RUN/PATH or models:/NAME/<version|latest>; "
                            "logs to a new run")
    which.add_argument("--run-id", metavar="RUN",
                       help=f"a finished train or ensemble run: evaluates its {RUN_MODEL_ARTIFACT} and logs into it")


def log_robustness(cfg: Config, model, splits: Splits) -> dict:
    """The robustness table of ``model`` on a fixed stratified subset of the test split (``evaluate.robustness_*``),
    logged to the ACTIVE run; ``robust/seconds`` is its whole wall time, so a time budget can count it."""
    from mnist99.data.splits import stratified_subset
    from mnist99.reports import robustness as report

    start = time.perf_counter()
    images, labels = stratified_subset(splits.x_test, splits.y_test, cfg.evaluate.robustness_size,
                                       cfg.evaluate.robustness_seed)
    result = report.robustness(model, images, labels, seed=cfg.evaluate.robustness_seed)
    tracking.log_text(report.markdown({"accuracy": result}), f"{ARTIFACT_DIR}/robustness.md")
    tracking.log_text(report.csv_text({"accuracy": result}), f"{ARTIFACT_DIR}/robustness.csv")
    fig = report.figure(result)
    tracking.log_figure(fig, f"{ARTIFACT_DIR}/robustness.png")
    plots.close(fig)
    metrics = {**result.metrics(), "robust/seconds": time.perf_counter() - start}
    tracking.log_metrics(metrics)
    print(f"evaluate: robustness mean={metrics['robust/mean']:.4f} min={metrics['robust/min']:.4f} ({result.worst()}) "
          f"seen={metrics['robust/seen_mean']:.4f} unseen={metrics['robust/unseen_mean']:.4f} on {result.size} "
          f"test digits x {len(result.rows)} corruptions ({metrics['robust/seconds']:.1f} s)")
    return metrics


def evaluate_model(cfg: Config, model, splits: Splits, member_models: list | None = None) -> dict:
    """Predict the test split, compute the evaluation pack and log it to the ACTIVE MLflow run.

    Args:
        cfg: the resolved config (``evaluate.*``).
        model: takes uint8 (N, 28, 28) digits and returns (N, 10) probabilities.
        splits: only ``x_test``/``y_test`` are read.
        member_models: the ensemble's members (uint8 or float input) for "members vs ensemble".
    Returns:
        The metrics logged (``eval_test_accuracy``, ``eval_ece``, ..., ``robust/*`` with ``evaluate.robustness``).
    """
    from mnist99.delivery.ensemble import as_ensemble
    from mnist99.reports.evaluation import evaluate_predictions, per_class_markdown

    probs = predict_probs(model, splits.x_test)
    member_probs = [predict_probs(as_ensemble(m), splits.x_test) for m in member_models or []]
    result = evaluate_predictions(probs, splits.y_test, splits.x_test, member_probs or None)
    tracking.log_metrics(result.metrics)
    for name, fig in result.figures.items():
        tracking.log_figure(fig, f"{ARTIFACT_DIR}/{name}")
        plots.close(fig)
    tracking.log_dict(result.per_class, f"{ARTIFACT_DIR}/per_class.json")
    tracking.log_text(per_class_markdown(result.per_class), f"{ARTIFACT_DIR}/per_class.md")
    tracking.log_dict({"labels": list(range(NUM_CLASSES)), "rows_true_columns_predicted": result.confusion.tolist()},
                    f"{ARTIFACT_DIR}/confusion_matrix.json")
    if result.members:
        tracking.log_dict({"members": result.members}, f"{ARTIFACT_DIR}/members_vs_ensemble.json")
    if cfg.evaluate.robustness:
        return {**result.metrics, **log_robustness(cfg, model, splits)}
    return result.metrics


def source_name(source: str) -> str:
    """A run-name-friendly name for a model source: the file's name (``.keras`` left out), or the URI's path
    joined with '-'."""
    if ":/" in source:
        return source.split(":/", 1)[1].strip("/").replace("/", "-")
    return Path(source).name.removesuffix(".keras")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Evaluate ``--model`` (new run) or ``--run-id`` (logged into that run); returns the metrics and run id.

    Everything that can fail on bad input (loading the model, the data) happens before a run is
    opened or resumed, so a typo never marks a finished train run FAILED.
    """
    from mnist99.delivery.ensemble import as_ensemble, members_of

    tracking.setup(cfg)
    if args.run_id:
        from mnist99.delivery.loading import load_run_model

        target = tracking.finished_run(args.run_id)
        loaded = load_run_model(args.run_id)
    else:
        from mnist99.delivery.loading import load_ensemble

        loaded = load_ensemble(args.model)  # a keras.Model, or an ONNX/LiteRT file behind the same predict
    model = as_ensemble(loaded)
    runtime = getattr(model, "runtime", "keras")
    members = members_of(model)
    splits = make_splits(cfg.data, cfg.seed)
    if args.run_id:
        # Resuming sets the given tags on the run: keep its own stage name, mark it evaluated.
        tracking.use_experiment_of(target)
        stage = target.data.tags.get("mnist99.stage", "evaluate")
        opened = tracking.stage_run(cfg, stage, target.info.run_name, tags={"mnist99.evaluated": "true"},
                                    run_id=args.run_id)
    else:
        opened = tracking.stage_run(cfg, "evaluate", f"evaluate-{source_name(args.model)}",
                                    tags={"mnist99.model_source": args.model, "mnist99.runtime": runtime})
    with opened as active:
        if not args.run_id:
            tracking.log_config(cfg)
        metrics = evaluate_model(cfg, model, splits, members if len(members) > 1 else None)
    print(f"evaluate: test_accuracy={metrics['eval_test_accuracy']:.4f} nll={metrics['eval_test_nll']:.4f} "
          f"ece={metrics['eval_ece']:.4f} f1_macro={metrics['eval_test_f1_macro']:.4f} on {len(splits.y_test)} "
          f"test digits\nrun id: {active.info.run_id} (artifacts under {ARTIFACT_DIR}/)")
    return {**metrics, "run_id": active.info.run_id}
