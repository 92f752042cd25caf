"""Stage ``ensemble``: train N members (nested train runs) and average them, under one parent MLflow run.

Reads: MNIST (see ``prepare``); optionally finished train runs to reuse (``ensemble.members[i].run_id``).
A member whose FINISHED train run already exists (same resolved config, data, version and code:
tag ``mnist99.cache_key``, see :mod:`mnist99.tracking.keys`) is reused, not retrained, so rerunning an
interrupted ensemble trains only the members it had not finished; ``--force`` retrains them all.
Writes: one nested train run per trained member, and a parent run with ``test_accuracy`` and
``val_accuracy`` (the ensemble's), ``member_<i>_{test,val}_accuracy``, ``best_member_test_accuracy``,
``ensemble_gain``, ``disagreement``, the tag ``mnist99.member_run_ids`` and the combined model as
``model/model.keras`` (uint8 digits in, probabilities out).
With ``--budget`` (the whole job, evaluation and export as ``run`` does them included): each member's
epochs, planned once and kept on the parent run (``budget.*`` params, tag ``mnist99.budget_plan``)
so a rerun trains and reuses the same members; ``budget_used`` at the end.
"""
from __future__ import annotations

import argparse
import time
from contextlib import AbstractContextManager

from mnist99 import tracking
from mnist99.config import Config, MemberConfig
from mnist99.data import Splits, make_splits
from mnist99.reports.metrics import accuracy
from mnist99.training.budget import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mnist99.cli import add_budget

    parser.add_argument("--force", action="store_true",
                        help="retrain every member, even those with a FINISHED train run of the same config "
                             "(and with --budget, time and plan again)")
    add_budget(parser, "the whole job: members, evaluation and export")


def run_name(cfg: Config) -> str:
    return f"ensemble-{cfg.ensemble.size}x-{cfg.model.name}"


def plan_budget(cfg: Config, splits: Splits, started: float, force: bool = False) -> tuple[Config, tuple[Plan, str] | None]:
    """``cfg`` with the epochs ``train.budget`` buys each member to train (``ensemble.members`` overrides,
    no budget left), and the plan with its key (None without a budget); see :func:`mnist99.stages.train.plan_budget`."""
    from mnist99.delivery.ensemble import member_plan
    from mnist99.stages.train import plan_budget as plan_job

    members = member_plan(cfg)
    budgeted = plan_job(cfg, [m for m, run_id in members if run_id is None], splits, started,
                        ensemble_size=len(members), force=force)
    if budgeted is None:
        return cfg, None
    epochs = iter(budgeted[0].epochs)
    planned = cfg.model_copy(deep=True)
    planned.train.budget = None
    planned.ensemble.members = [
        spec if spec.run_id else MemberConfig(seed=spec.seed, overrides={**spec.overrides, "train.epochs": next(epochs)})
        for spec in cfg.ensemble.members or [MemberConfig() for _ in members]]
    return planned, budgeted


def fit_members(cfg: Config, splits: Splits, force: bool = False, budgeted: Plan | None = None) -> tuple[list, list[str]]:
    """Train (each in a nested run) or reuse every member; returns the models and their run ids.

    Reused: the run ids the config names, and (unless ``force``) FINISHED train runs of the same
    member key, e.g. the members an interrupted ensemble had already finished. ``budgeted``: the plan
    the epochs come from, so each member stops at its deadline and says when it or early stopping
    ended it sooner; else the first member trained says when the job will end.
    """
    from mnist99.delivery.ensemble import member_plan
    from mnist99.delivery.loading import load_run_model
    from mnist99.stages.train import budget_note, deadline, finish_timer, train_in_run

    models, run_ids = [], []
    plan = member_plan(cfg)
    timed = budgeted is not None
    planned = 0  # the plan's epochs are for the members the config does not name by run id, in order
    for i, (member_cfg, run_id) in enumerate(plan, start=1):
        share, planned = planned, planned + (run_id is None)
        found = None if force or run_id else tracking.cached_run("train", tracking.cache_key("train", member_cfg, splits.digest))
        if found is not None:
            run_id = found.info.run_id
            print(f"ensemble: member {i}/{len(plan)} reuses FINISHED train run {run_id} (same config, data and code)")
        if run_id is None:
            print(f"ensemble: member {i}/{len(plan)}: training {member_cfg.model.name}, seed {member_cfg.seed}, "
                  f"{member_cfg.train.epochs} epoch(s) of {len(splits.y_train):,} images", flush=True)
            name = f"member-{i}-{member_cfg.model.name}-s{member_cfg.seed}"
            timer = deadline(budgeted, share) if timed else [
                finish_timer(member_cfg, splits, f"ensemble: member {i}/{len(plan)}",
                             members_after=len(plan) - i, ensemble_size=len(plan))]
            timed = True
            out = train_in_run(member_cfg, splits, nested=True, name=name, callbacks=timer)
            note = budget_note(timer, out["epochs_run"], member_cfg.train.epochs) if budgeted else None
            if note:
                print(f"ensemble: member {i}/{len(plan)}: {note}")
            models.append(out["model"])
            run_ids.append(out["run_id"])
        else:
            models.append(load_run_model(run_id))
            run_ids.append(run_id)
    return models, run_ids


def parent_run(cfg: Config) -> AbstractContextManager:
    """The ensemble's parent MLflow run, a context manager (the ``run`` stage evaluates inside it too)."""
    tags = {"mnist99.model": cfg.model.name, "mnist99.ensemble_size": str(cfg.ensemble.size)}
    return tracking.stage_run(cfg, "ensemble", run_name(cfg), tags=tags)


def build_in_run(cfg: Config, splits: Splits, force: bool = False, budgeted: tuple[Plan, str] | None = None) -> dict:
    """Inside the active parent run: fit the members, combine them, score and log everything.

    ``budgeted``: the plan and key that ``cfg``'s epochs come from, recorded first on the parent run.
    Returns the metrics, ``member_run_ids``, ``weights``, ``seconds``, the combined ``model`` and the
    ``members`` (Keras models).
    """
    from mnist99.delivery.ensemble import combine, member_weights, predict_members, score, shift_averaged

    start = time.perf_counter()
    tracking.log_config(cfg)
    tracking.log_dataset(splits)
    if budgeted is not None:
        tracking.record_plan(budgeted[1], budgeted[0].to_dict(), budgeted[0].params())
    models, run_ids = fit_members(cfg, splits, force, budgeted=budgeted[0] if budgeted else None)
    models = [shift_averaged(m, cfg.ensemble.tta_shifts) for m in models]  # scored as they are exported
    probs = {"val": predict_members(models, splits.x_val), "test": predict_members(models, splits.x_test)}
    labels = {"val": splits.y_val, "test": splits.y_test}
    member_val = [accuracy(p, splits.y_val) for p in probs["val"]]
    weights = member_weights(len(models), member_val if cfg.ensemble.weighting == "val_accuracy" else None)
    metrics = score(probs, labels, weights)
    metrics.update({f"member_{i}_weight": w for i, w in enumerate(weights, start=1)})
    model = combine(models, weights)
    metrics["ensemble_seconds"] = time.perf_counter() - start
    tracking.log_metrics(metrics)
    tracking.set_tag("mnist99.member_run_ids", ",".join(run_ids))
    tracking.log_model_file(model)
    return {**metrics, "member_run_ids": run_ids, "weights": weights, "model": model, "members": models}


def format_table(out: dict) -> str:
    """Members and the ensemble, one line each: run id, validation and test accuracy, weight."""
    lines = [f"{'':10} {'run id':34} {'val_acc':>8} {'test_acc':>8} {'weight':>7}"]
    for i, run_id in enumerate(out["member_run_ids"], start=1):
        lines.append(f"member {i:<3} {run_id:34} {out[f'member_{i}_val_accuracy']:8.4f} "
                     f"{out[f'member_{i}_test_accuracy']:8.4f} {out['weights'][i - 1]:7.3f}")
    lines.append(f"{'ensemble':10} {out['run_id']:34} {out['val_accuracy']:8.4f} {out['test_accuracy']:8.4f}")
    lines.append(f"gain over the best member: {out['ensemble_gain']:+.4f} (test); "
                 f"members disagree on {out['disagreement']:.2%} of test digits")
    return "\n".join(lines)


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Train and combine the ensemble, in ``train.budget`` if set; returns its metrics, run id and member
    run ids (no models)."""
    from mnist99.stages.train import report_budget

    started = getattr(args, "started", None) or time.time()
    force = bool(getattr(args, "force", False))
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    cfg, budgeted = plan_budget(cfg, splits, started, force)
    with parent_run(cfg) as active:
        out = build_in_run(cfg, splits, force, budgeted)
    out["run_id"] = active.info.run_id
    print(format_table(out))
    if budgeted is not None:
        report_budget("ensemble", budgeted[0], started, out["run_id"])
    print(f"MLflow UI: {tracking.ui_command(cfg)}")
    out.pop("model")
    out.pop("members")
    return out
