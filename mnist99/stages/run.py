"""Stage ``run``, the main job: prepare -> ensemble -> evaluate -> export, then a summary table.

Reads: MNIST (see ``prepare``). Writes: the prepare run; the ensemble parent run (with its nested
member runs) that also holds the evaluation pack; the export files and an export run registering
a new version of ``export.registered_name``, which becomes ``@champion`` if it passes the promotion
gate (``--promote``/``--no-promote`` as for ``export``).

A stage whose inputs are unchanged is skipped: each stage run carries the tag ``mnist99.cache_key``
(a hash of the config sections it reads, the data's sha256, the mnist99 version and a digest of its
source files, and for export the ensemble run it exports: :mod:`mnist99.tracking.keys`), and a
FINISHED run with the same key is reused.
``--force`` reruns every stage.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist99 import tracking
from mnist99.config import Config
from mnist99.data import make_splits
from mnist99.stages import ensemble, export, prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mnist99.cli import add_budget

    parser.add_argument("--force", action="store_true",
                        help="rerun every stage, even those with a FINISHED run of the same cache key "
                             "(and with --budget, time and plan again)")
    add_budget(parser, "the whole job: members, evaluation and export")
    export.add_promote_arguments(parser)


def reusable(stage: str, key: str, force: bool, usable: Callable[[Any], bool] = lambda found: True):
    """The FINISHED run of ``stage`` with cache key ``key`` (None when forced, none or not ``usable``); says so."""
    found = None if force else tracking.cached_run(stage, key)
    if found is not None and not usable(found):
        return None
    if found is not None:
        print(f"run: {stage} skipped: reusing FINISHED run {found.info.run_id} (cache key {key})")
    return found


def from_ensemble_run(found) -> tuple[dict, dict]:
    """The ensemble's and the evaluation's metrics as the stage returned them, read back from its run."""
    metrics = found.data.metrics
    member_ids = found.data.tags["mnist99.member_run_ids"].split(",")
    evaluation = {key: value for key, value in metrics.items() if key.startswith(("eval_", "robust/"))}
    ens = {key: value for key, value in metrics.items() if key not in evaluation}
    ens.update(member_run_ids=member_ids, run_id=found.info.run_id,
               weights=[metrics[f"member_{i}_weight"] for i in range(1, len(member_ids) + 1)])
    return ens, evaluation


def export_files_exist(found) -> bool:
    """Whether the files an export run wrote are still there (a user may have deleted them); says when not."""
    missing = [f for f in exported_files(found).values() if not Path(f).exists()]
    if missing:
        print(f"run: export rerun: the files of run {found.info.run_id} are gone ({', '.join(missing)})")
    return not missing


def from_export_run(found) -> dict:
    """What ``export.export_run`` returned, read back from its run."""
    tags = found.data.tags
    return export.result(found.info.run_id, tags["mnist99.source_run_id"], tags["mnist99.member_run_ids"],
                         tags["mnist99.registered_model"], exported_files(found))


def exported_files(found) -> dict[str, str]:
    """Format -> path of each file an export run wrote (its ``mnist99.file.<format>`` tags)."""
    return {tag.removeprefix(export.FILE_TAG): path for tag, path in found.data.tags.items()
            if tag.startswith(export.FILE_TAG)}


def evaluate_in_run(cfg: Config, out: dict, splits) -> dict:
    """The evaluation pack of the ensemble, logged to the active (ensemble) run."""
    from mnist99.stages import evaluate

    return evaluate.evaluate_model(cfg, out["model"], splits, out["members"])


def summary(ens: dict, evaluation: dict, exported: dict, seconds: float, cfg: Config) -> str:
    """Members, ensemble, calibration, robustness, wall time and the machine it took (a figure to quote beside its
    CPU), where the model is registered and how to open the UI."""
    from mnist99.training.devices import cpu_description, device_name

    device = device_name()
    machine = cpu_description() if device == "CPU" else f"{device}; host {cpu_description()}"
    lines = ["", "mnist99 run: summary", f"{'':12} {'test_acc':>8}"]
    robustness = [f"robustness   mean {evaluation['robust/mean']:.4f}, min {evaluation['robust/min']:.4f}, held-out families "
                  f"{evaluation['robust/unseen_mean']:.4f} (corrupted test digits)"] if "robust/mean" in evaluation else []
    members = range(1, len(ens["member_run_ids"]) + 1)
    lines += [f"member {i:<5} {ens[f'member_{i}_test_accuracy']:8.4f}" for i in members]
    lines += [f"{'ensemble':12} {ens['test_accuracy']:8.4f}  (gain {ens['ensemble_gain']:+.4f} over the best member)",
              (f"calibration  ECE {evaluation.get('eval_ece', float('nan')):.4f}, "
               f"NLL {evaluation.get('eval_test_nll', float('nan')):.4f} (test)"),
              *robustness,
              f"wall time    {seconds / 60:.1f} min",
              f"machine      {machine}",
              f"registered   {exported['model_uri']}  -> mnist99.load_ensemble({exported['serve_uri']!r})",
              f"alias        {exported['promotion']}",
              f"files        {'  '.join(exported['files'].values())}",
              f"ensemble run {ens['run_id']}",
              f"MLflow UI    {tracking.ui_command(cfg)}"]
    return "\n".join(lines)


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Run the whole job, skipping stages already done; returns the ensemble's, evaluation's and export's results.

    The members' configs are checked and the data is loaded first, so a bad member override or data
    path fails before any run is opened.
    """
    from mnist99.delivery.ensemble import member_plan
    from mnist99.stages.train import report_budget

    force = bool(getattr(args, "force", False))
    start = time.perf_counter()
    started = getattr(args, "started", None) or time.time()
    member_plan(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    tracking.setup(cfg)
    key = tracking.cache_key("prepare", cfg, splits.digest)
    if reusable("prepare", key, force) is None:
        tracking.update_run(prepare.run(cfg)["run_id"], tags={tracking.CACHE_KEY_TAG: key})

    cfg, budgeted = ensemble.plan_budget(cfg, splits, started, force)  # the planned epochs are in the key
    key = tracking.cache_key("ensemble", cfg, splits.digest)
    found = reusable("ensemble", key, force)
    built = found is None
    if not built:
        ens, evaluation = from_ensemble_run(found)
    else:
        with ensemble.parent_run(cfg) as active:
            tracking.set_tag(tracking.CACHE_KEY_TAG, key)
            ens = ensemble.build_in_run(cfg, splits, force, budgeted)
            evaluation = evaluate_in_run(cfg, ens, splits)
        ens["run_id"] = active.info.run_id
    print(ensemble.format_table(ens))

    key = tracking.cache_key("export", cfg, splits.digest, upstream=ens["run_id"])
    found = reusable("export", key, force, usable=export_files_exist)
    if found is not None:
        exported = from_export_run(found)
        exported.update(export.promote(exported["registered_name"], exported["version"], export.promote_choice(args)))
    else:
        exported = export.export_run(cfg, ens["run_id"], export.promote_choice(args))
        tracking.update_run(exported["run_id"], tags={tracking.CACHE_KEY_TAG: key})
    seconds = time.perf_counter() - start
    print(summary(ens, evaluation, exported, seconds, cfg))
    if budgeted is not None and built:
        report_budget("run", budgeted[0], started, ens["run_id"])
    ens.pop("model", None)
    ens.pop("members", None)
    return {**ens, **evaluation, "export": exported, "seconds": seconds}
