"""Reliability of stage runs against the outside world: SIGTERM, two stages at once on one SQLite store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from tests.conftest import ROOT, SMOKE, require_real_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stage_command(tmp_path, stage: str, *overrides: str) -> list[str]:
    paths = [f"data.cache_dir={tmp_path / 'cache'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}"]
    return [sys.executable, "-m", "mnist99.cli", stage, "-c", str(SMOKE),
            *[arg for o in (*paths, *overrides) for arg in ("--set", o)]]


def runs_of(store: str, stage: str):
    client = mlflow.MlflowClient(store)
    exps = [e.experiment_id for e in client.search_experiments()] if os.path.exists(store[len("sqlite:///"):]) else []
    return client.search_runs(exps, f"tags.`mnist99.stage` = '{stage}'") if exps else []


def test_sigterm_ends_the_run_killed(tmp_path, store):
    """``kill <pid>`` during training: the run ends KILLED (not RUNNING forever) and the command exits non-zero."""
    require_real_data()
    cmd = stage_command(tmp_path, "train", "train.epochs=30", "train.early_stopping.enabled=false")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient(store)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # terminate once an epoch is logged: training is under way
            runs = runs_of(store, "train")
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                break
            if proc.poll() is not None:
                pytest.fail(f"training ended before it could be terminated: {proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
        else:
            pytest.fail("no epoch was logged within 240 s")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, -signal.SIGTERM)  # handled, not killed by the signal's default action
    assert "mnist99 train: interrupted (SIGTERM)" in err
    run = client.get_run(runs_of(store, "train")[0].info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mnist99.error"] == "interrupted (SIGTERM)"


def test_two_stages_started_at_once_on_a_new_store_both_finish(tmp_path):
    """Two ``prepare`` at once on a store that does not exist yet: both create it (one waits), both FINISHED."""
    require_real_data()
    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    procs = [subprocess.Popen(stage_command(tmp_path / str(i), "prepare", "tracking.system_metrics=false"),
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    runs = runs_of(store, "prepare")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_stage_that_loses_the_race_to_create_its_experiment_uses_the_winners(store, monkeypatch):
    """Processes started at once against a tracking server all find no experiment; the one whose create
    comes second gets RESOURCE_ALREADY_EXISTS and must use the experiment the first one made."""
    from mnist99.config import load_config
    from mnist99.tracking import store as tracking_store

    winner = mlflow.MlflowClient(store).create_experiment("raced")
    real, calls = mlflow.get_experiment_by_name, []

    def not_there_yet(name):  # the first look happens before the other process creates it
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", not_there_yet)
    assert tracking_store.setup(load_config(None, [f"tracking.uri={store}"]), experiment="raced") == winner
    assert len(calls) == 2


@pytest.mark.parametrize("clash", ['duplicate key value violates unique constraint "dataset_pk"',  # PostgreSQL
                                   "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                   "datasets.name, datasets.digest"])  # SQLite: seen in CI, two prepares at once
def test_a_dataset_logged_by_another_process_at_the_same_moment_is_logged_again(monkeypatch, clash):
    """A store rolls back the loser of a race to insert the same dataset; the second try links the winner's."""
    from mlflow.exceptions import MlflowException

    from mnist99.tracking import runs

    calls = []

    def racing(dataset, context):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException(clash)

    monkeypatch.setattr(mlflow, "log_input", racing)
    runs._log_input(object(), context="train")
    assert calls == ["train", "train"]

    def broken(dataset, context):
        raise MlflowException("permission denied")

    monkeypatch.setattr(mlflow, "log_input", broken)
    with pytest.raises(MlflowException, match="permission denied"):
        runs._log_input(object(), context="val")
