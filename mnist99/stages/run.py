"""Stage ``run``, the main job: prepare -> ensemble -> evaluate -> export, then a summary table.

Reads: MNIST (see ``prepare``). Writes: the prepare run; the ensemble parent run (with its nested
member runs) that also holds the evaluation pack; the export files and an export run registering
a new version of ``export.registered_name``.
"""
from __future__ import annotations

import time

from mnist99 import tracking
from mnist99.config import Config
from mnist99.data import make_splits
from mnist99.stages import ensemble, export, prepare


def evaluate_in_run(cfg: Config, out: dict, splits) -> dict:
    """The evaluation pack of the ensemble, logged to the active (ensemble) run."""
    from mnist99.stages import evaluate

    return evaluate.evaluate_model(cfg, out["model"], splits, out["members"])


def summary(ens: dict, evaluation: dict, exported: dict, seconds: float, cfg: Config) -> str:
    """Members, ensemble, calibration, wall time, where the model is registered and how to open the UI."""
    lines = ["", "mnist99 run: summary", f"{'':12} {'test_acc':>8}"]
    members = range(1, len(ens["member_run_ids"]) + 1)
    lines += [f"member {i:<5} {ens[f'member_{i}_test_accuracy']:8.4f}" for i in members]
    lines += [f"{'ensemble':12} {ens['test_accuracy']:8.4f}  (gain {ens['ensemble_gain']:+.4f} over the best member)",
              (f"calibration  ECE {evaluation.get('eval_ece', float('nan')):.4f}, "
               f"NLL {evaluation.get('eval_test_nll', float('nan')):.4f} (test)"),
              f"wall time    {seconds / 60:.1f} min",
              f"registered   {exported['model_uri']}  -> mnist99.load_ensemble({exported['model_uri']!r})",
              f"files        {exported['keras_file']}  {exported['saved_model'] or ''}",
              f"ensemble run {ens['run_id']}",
              f"MLflow UI    {tracking.ui_command(cfg)}"]
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    """Run the whole job; returns the ensemble's metrics, the evaluation's and the export's (no models)."""
    start = time.perf_counter()
    prepare.run(cfg)
    splits = make_splits(cfg.data, cfg.seed)  # from the cache prepare just filled
    tracking.setup(cfg)
    with ensemble.parent_run(cfg) as active:
        ens = ensemble.build_in_run(cfg, splits)
        evaluation = evaluate_in_run(cfg, ens, splits)
    ens["run_id"] = active.info.run_id
    print(ensemble.format_table(ens))
    exported = export.export_run(cfg, ens["run_id"])
    seconds = time.perf_counter() - start
    print(summary(ens, evaluation, exported, seconds, cfg))
    ens.pop("model")
    ens.pop("members")
    return {**ens, **evaluation, "export": exported, "seconds": seconds}
