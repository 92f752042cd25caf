"""Stage ``tune``: a KerasTuner search over ``tune.space``, one MLflow parent run and a nested run per trial.

Reads: MNIST (see ``prepare``) and ``tune.*`` (the space, e.g. configs/tune.yaml). Writes: the KerasTuner
project ``tune.directory/<project>`` (rerun the same command to resume it after a crash), a parent run
in experiment ``tune.experiment`` with ``best.<key>`` params, ``best_val_accuracy`` and trials.csv/.html/.png,
one child run per trial (params, per-epoch metrics, tags mnist99.trial_id/trial_status, tuner_bracket/round),
and ``tune.output``: the best values as a config file for ``train -c`` and ``ensemble -c``.

Several processes or machines: one ``--role chief --oracle HOST:PORT`` and workers ``--role worker
--oracle HOST:PORT --worker-id N`` sharing the project folder and tracking store (docs/TUNING.md); the
chief hands a trial whose worker went silent for ``tune.trial_timeout`` seconds to another worker.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

from mnist99 import tracking, tuning
from mnist99.config import Config
from mnist99.data import make_splits
from mnist99.errors import ConfigError
from mnist99.files import write_atomic
from mnist99.reports import plots, trials

PARENT_FILE = "mlflow_parent_run.json"  # in the project folder: the search's parent run, for resume and workers
TRIAL_TAG = "mnist99.trial_id"
TIMED_OUT_TAG = "mnist99.timed_out_worker"  # on a trial's run: the worker the chief last took it from
DESCRIPTION = "mnist99 tune: one parent run per KerasTuner search, one nested run per trial."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=["chief", "worker"], default=None,
                        help="distributed search: the chief serves the oracle (runs no trials), workers run trials")
    parser.add_argument("--oracle", metavar="HOST:PORT", default=None, help="the chief's address (with --role)")
    parser.add_argument("--worker-id", type=int, default=0, help="unique per worker: its tuner id is tuner<N>")
    parser.add_argument("--parent-wait", type=float, default=600.0, metavar="SECONDS",
                        help="worker: how long to wait for the chief's parent run to appear")


class TrialRuns:
    """Tuner mixin: every trial runs inside a nested MLflow run, found again by trial id when a trial is retried.

    One child run per trial, kept by reuse: every attempt at a trial (a search rerun after a crash, a
    worker restarted with the same id, the retry of a trial the chief timed out) reopens the run
    tagged with its trial id, so the attempt that completes ends that one run FINISHED. A timed-out
    attempt's run is KILLED in between (:func:`_mark_timed_out`), never left RUNNING.
    """

    def __init__(self, *args, run_cfg: Config, parent_run_id: str, **kwargs) -> None:
        self.run_cfg = run_cfg
        self.parent_run_id = parent_run_id
        super().__init__(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        tags = {TRIAL_TAG: trial.trial_id, "mnist99.trial_status": "RUNNING", "mnist99.tuner_id": self.tuner_id}
        tags.update({f"tuner_{k}": str(values[f"tuner/{k}"]) for k in ("bracket", "round") if f"tuner/{k}" in values})
        existing = tracking.child_runs(self.parent_run_id, TRIAL_TAG).get(trial.trial_id)
        with tracking.stage_run(self.run_cfg, "tune-trial", f"trial-{trial.trial_id}", tags=tags, nested=True,
                                run_id=existing, parent_run_id=self.parent_run_id):
            tracking.log_params(values)
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), tracking.MlflowEpochLogger()]
            return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial) -> None:
        """After the oracle has scored the trial: its final status and score on its run."""
        super().on_trial_end(trial)
        run_id = tracking.child_runs(self.parent_run_id, TRIAL_TAG).get(trial.trial_id)
        if run_id is None:
            return
        ended = self.oracle.get_trial(trial.trial_id)
        score = {} if ended.score is None else {"best_val_accuracy": ended.score}
        tracking.update_run(run_id, tags={"mnist99.trial_status": ended.status}, metrics=score)


def _mark_timed_out(parent_run_id: str, trial_id: str, tuner_id: str) -> None:
    """The chief's answer to a silent worker: its trial's run KILLED and tagged, until a retry reopens it."""
    run_id = tracking.child_runs(parent_run_id, TRIAL_TAG).get(trial_id)
    if run_id is not None:  # none if the worker died before its trial's run began
        tracking.update_run(run_id, tags={"mnist99.trial_status": "TIMED_OUT", TIMED_OUT_TAG: tuner_id},
                            status="KILLED")


def _parent_file(cfg: Config) -> Path:
    return Path(cfg.tune.directory) / tuning.project_name(cfg) / PARENT_FILE


def _read_parent(path: Path) -> str | None:
    return json.loads(path.read_text())["run_id"] if path.is_file() else None


def _write_parent(path: Path, run_id: str) -> None:
    """Atomically, so a worker never reads half a file."""
    write_atomic(path, json.dumps({"run_id": run_id, "tracking_uri": tracking.current_uri()}))


def _wait_for_parent(path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (run_id := _read_parent(path)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(f"no parent run in {path} after {seconds:.0f}s: start the chief first, "
                              "with the same config and tune.directory")
        time.sleep(0.5)
    return run_id


def _search(cfg: Config, splits, parent_run_id: str, verbose: int):
    tuner = tuning.make_tuner(cfg, tuning.ConfigHyperModel(cfg, len(splits.y_train)), hooks=TrialRuns,
                              on_trial_timeout=partial(_mark_timed_out, parent_run_id),
                              run_cfg=cfg, parent_run_id=parent_run_id)
    tuner.search(splits, epochs=cfg.tune.max_epochs, verbose=verbose)
    return tuner


def _summarise(cfg: Config, tuner, parent_run_id: str) -> dict:
    """Log the trials table, figure and best values on the parent; write ``tune.output``."""
    run_ids = tracking.child_runs(parent_run_id, TRIAL_TAG)
    for trial in tuner.oracle.trials.values():  # the oracle has the last word, e.g. after a kill in on_trial_end
        if trial.trial_id in run_ids:
            score = {} if trial.score is None else {"best_val_accuracy": trial.score}
            tracking.update_run(run_ids[trial.trial_id], tags={"mnist99.trial_status": trial.status}, metrics=score)
    table = trials.trials_table(tuner.oracle.trials.values(), run_ids)
    tracking.log_text(table.to_csv(index=False), "trials.csv")
    tracking.log_text(table.to_html(index=False, na_rep=""), "trials.html")
    fig = trials.scores_figure(table, title=f"{cfg.tune.tuner}: val_accuracy per trial")
    tracking.log_figure(fig, "trials.png")
    plots.close(fig)
    completed = table[table.status == "COMPLETED"]
    if completed.empty:
        raise ConfigError(f"no trial of the search completed (see {tuning.project_name(cfg)} in the MLflow UI)")
    # The table's order (score, then trial id) breaks ties the same way on every rerun; the oracle's does not.
    best = [tuner.oracle.trials[completed.trial_id.iloc[0]]]
    values = best[0].hyperparameters.values
    tracking.log_params({f"best.{key}": values[key] for key in cfg.tune.space if key in values})
    tracking.log_metrics({"best_val_accuracy": best[0].score, "trials_completed": int((table.status == "COMPLETED").sum()),
                          "trials": len(table)})
    tracking.set_tags({"mnist99.best_trial_id": best[0].trial_id, "mnist99.best_run_id": run_ids.get(best[0].trial_id, "")})
    overrides = tuning.best_overrides(cfg, values)
    header = (f"Best of KerasTuner search {tuning.project_name(cfg)} (val_accuracy {best[0].score:.4f}, "
              f"trial {best[0].trial_id}, MLflow run {parent_run_id}).\nStates only what differs from the searched config.")
    out = Path(cfg.tune.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tuning.overrides_yaml(overrides, header))
    tracking.log_text(out.read_text(), "tuned.yaml")
    return {"best_val_accuracy": best[0].score, "best_trial_id": best[0].trial_id, "best": overrides,
            "trials": len(table), "output": str(out), "table": table}


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Run (or resume, or join) the search; returns the best val_accuracy, values, output path and run ids."""
    role, worker_id = getattr(args, "role", None), getattr(args, "worker_id", 0)
    env = tuning.distributed_env(role, getattr(args, "oracle", None), worker_id)
    tuning.check_space(cfg)
    tuning.TUNERS.get(cfg.tune.tuner)
    os.environ.update(env)  # read by KerasTuner when the tuner is created
    parent_file = _parent_file(cfg)
    if role == "worker":  # first: the chief creates the store, and processes migrating a new SQLite store at once collide
        parent_run_id = _wait_for_parent(parent_file, getattr(args, "parent_wait", 600.0))
    tracking.setup(cfg, experiment=cfg.tune.experiment, description=DESCRIPTION)
    verbose = 1 if cfg.train.verbose else 0
    splits = make_splits(cfg.data, cfg.seed)
    if role == "worker":
        tuner = _search(cfg, splits, parent_run_id, verbose)
        print(f"tune: worker {tuner.tuner_id} done; the chief logs the summary")
        return {"parent_run_id": parent_run_id, "tuner_id": tuner.tuner_id}
    resumed = _read_parent(parent_file)
    tags = {"mnist99.tuner": cfg.tune.tuner, "mnist99.project": tuning.project_name(cfg)}
    with tracking.stage_run(cfg, "tune", f"tune-{tuning.project_name(cfg)}-{cfg.model.name}", tags=tags,
                            run_id=resumed) as parent:
        parent_run_id = parent.info.run_id
        _write_parent(parent_file, parent_run_id)
        if not tracking.run_params(parent_run_id):  # a resumed run has them (and params cannot change)
            tracking.log_config(cfg)
            tracking.log_dataset(splits)
        tuner = _search(cfg, splits, parent_run_id, verbose)
        summary = _summarise(cfg, tuner, parent_run_id)
    table = summary.pop("table")
    next_command = " ".join(["mnist99 train", *(f"-c {f}" for f in getattr(args, "config", None) or []),
                             f"-c {summary['output']}", *(f"--set {o}" for o in getattr(args, "overrides", None) or [])])
    print(f"tune: {summary['trials']} trials, best val_accuracy={summary['best_val_accuracy']:.4f} "
          f"(trial {summary['best_trial_id']}) in {parent_file.parent}\n"
          f"{table.drop(columns=['run_id']).head(5).to_string(index=False)}\n"
          f"best values -> {summary['output']}: {summary['best'] or 'the searched config itself'}\n"
          f"parent run id: {parent_run_id}\nMLflow UI: {tracking.ui_command(cfg)}\nnext: {next_command}")
    return {**summary, "parent_run_id": parent_run_id}
