"""The tune stage: search space, HyperModel, and a real smoke search killed and resumed (distributed
searches against a team server: tests/test_tune_server.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import keras_tuner
import mlflow
import pytest

from mnist99.config import Config, load_config, validate_config
from mnist99.errors import ConfigError
from tests.conftest import ROOT, SMOKE, require_real_data


def with_space(space: dict, **tune) -> Config:
    """The smoke config with another search space (a dict of specs) and ``tune`` settings."""
    data = load_config([SMOKE]).model_dump()
    data["tune"].update(space=space, **tune)
    return validate_config(data)


def test_build_model_with_default_hyperparameters_is_the_base_config():
    from mnist99.tuning import ConfigHyperModel

    cfg = with_space({"train.optimizer.lr": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
                      "model.width": {"type": "int", "min": 4, "max": 16, "step": 4},
                      "train.optimizer.name": {"type": "choice", "values": ["sgd", "adamw"]},
                      "augment.elastic.enabled": {"type": "bool"}})
    hp = keras_tuner.HyperParameters()
    model = ConfigHyperModel(cfg, train_size=512).build(hp)
    assert hp.values == {"train.optimizer.lr": cfg.train.optimizer.lr, "model.width": 8,
                         "train.optimizer.name": "adamw", "augment.elastic.enabled": False}
    assert model.output_shape == (None, 10)
    assert model.optimizer.__class__.__name__ == "AdamW" and model.loss is not None
    hp.values["train.optimizer.name"] = "sgd"
    hp.values["model.width"] = 16
    other = ConfigHyperModel(cfg, train_size=512).build(hp)
    assert other.optimizer.__class__.__name__ == "SGD" and other.count_params() > model.count_params()


@pytest.mark.parametrize("space, message", [
    ({"model.width": {"type": "gaussian", "min": 1, "max": 2}}, "tune.space.model.width.type='gaussian'"),
    ({"model.dropout": {"type": "float", "min": 0.3, "max": 0.1}}, "min < max"),
    ({"train.optimizer.lr": {"type": "float", "min": 0, "max": 0.1, "log": True}}, "log range needs min > 0"),
    ({"train.optimizer.name": {"type": "choice", "values": []}}, "non-empty list"),
])
def test_bad_space_specs_are_refused_naming_the_key(space, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_space(space)


@pytest.mark.parametrize("space, message", [
    ({}, "tune.space is empty"),
    ({"model.widht": {"type": "int", "min": 8, "max": 16}}, "tune.space['model.widht']: unknown config key 'model.widht'"),
    ({"model.dropout": {"type": "float", "min": 0.0, "max": 1.5}}, "invalid config value model.dropout=1.5"),
    ({"train.optimizer.name": {"type": "choice", "values": ["adamw", 3]}}, "train.optimizer.name=3"),
    ({"tune.max_epochs": {"type": "int", "min": 1, "max": 3}}, "cannot be searched"),
])
def test_space_keys_and_bounds_are_checked_against_the_schema(space, message):
    from mnist99.tuning import check_space

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_space(with_space(space))


def test_unknown_tuner_lists_the_valid_ones():
    from mnist99.tuning import TUNERS

    with pytest.raises(ConfigError, match=r"unknown tuner 'grid' \(valid: bayesian, hyperband, random\)"):
        TUNERS.get("grid")


def test_distributed_env_sets_kerastuner_variables():
    from mnist99.tuning import distributed_env

    assert distributed_env(None, None) == {}
    assert distributed_env("chief", "10.0.0.1:8000") == {
        "KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distributed_env("worker", "host:8000", worker_id=3)["KERASTUNER_TUNER_ID"] == "tuner3"
    with pytest.raises(ConfigError, match="--oracle 'host' is not HOST:PORT"):
        distributed_env("worker", "host")
    with pytest.raises(ConfigError, match="go together"):
        distributed_env("worker", None)


def test_best_values_become_a_config_that_states_only_differences(tmp_path):
    from mnist99.tuning import best_overrides, overrides_yaml

    cfg = with_space({"model.width": {"type": "int", "min": 4, "max": 16},
                      "model.dropout": {"type": "float", "min": 0.0, "max": 0.5}})
    diff = best_overrides(cfg, {"model.width": 12, "model.dropout": cfg.model.dropout, "tuner/epochs": 3})
    assert diff == {"model.width": 12}
    path = tmp_path / "tuned.yaml"
    path.write_text(overrides_yaml(diff, header="best"))
    assert load_config([SMOKE, path]).model.width == 12


def test_the_project_name_follows_the_search_not_where_it_writes():
    from mnist99.tuning import project_name

    space = {"model.width": {"type": "int", "min": 4, "max": 16}}
    name = project_name(with_space(space))
    assert name.startswith("random-")  # smoke.yaml's tuner
    assert project_name(with_space(space, output="elsewhere.yaml", directory="/tmp/x")) == name
    assert project_name(with_space(space, max_trials=7)) != name
    assert project_name(with_space({"model.width": {"type": "int", "min": 4, "max": 32}})) != name
    assert project_name(with_space(space, project="mine")) == "mine"


# --- real searches at smoke size -------------------------------------------------------------

def smoke_search_cfg(tmp_path: Path, *sets: str):
    require_real_data()
    return [f"data.cache_dir={tmp_path / 'cache'}", f"tune.directory={tmp_path / 'tuning'}",
            f"tune.output={tmp_path / 'tuned.yaml'}", *sets]


def search_runs(store: str, experiment: str = "mnist99-tune") -> tuple[list, list]:
    """(parent runs, trial runs) of the tune experiment."""
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    parents = [r for r in runs if r.data.tags.get("mnist99.stage") == "tune"]
    return parents, [r for r in runs if r.data.tags.get("mnist99.stage") == "tune-trial"]


def check_finished_search(store: str, out: dict, tmp_path: Path, trials_expected: int) -> None:
    """One FINISHED parent with one child run per trial, their metrics and params, the trial reports,
    and a tuned.yaml that loads as the best trial's overrides."""
    parents, trials = search_runs(store)
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]], "a second parent run"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["mnist99.trial_id"] for r in trials) == [str(i) for i in range(trials_expected)], \
        logs(tmp_path)
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["mnist99.trial_status"] == "COMPLETED" and run.info.status == "FINISHED"
        assert {"train.optimizer.lr", "model.dropout"} <= set(run.data.params)
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(history[0].value)
    assert parent.data.metrics["best_val_accuracy"] == max(r.data.metrics["best_val_accuracy"] for r in trials)
    assert set(parent.data.params) >= {"best.train.optimizer.lr", "best.model.dropout"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "trials.html", "trials.png", "tuned.yaml"} <= artifacts
    tuned = load_config([SMOKE, tmp_path / "tuned.yaml"])
    assert tuned.model.dropout == pytest.approx(float(parent.data.params["best.model.dropout"]))


def start_tune(tmp_path: Path, name: str, overrides: list[str], *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mnist99.cli", "tune", "-c", str(SMOKE), *args]
    argv += [item for o in overrides for item in ("--set", o)]
    with open(tmp_path / f"{name}.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(predicate, seconds: float, procs: dict, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        failed = {n: p.returncode for n, p in procs.items() if p.poll() not in (None, 0)}
        assert not failed, f"{failed} exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.5)


def kill_all(procs: dict) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def trial_states(project_root: Path) -> dict[str, str]:
    found = {}
    for path in project_root.glob("*/trial_*/trial.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())["status"]
        except (json.JSONDecodeError, KeyError):  # being written
            pass
    return found


def logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.integration
@pytest.mark.slow
def test_killed_search_resumes_without_duplicate_trial_runs(tmp_path, store):
    from mnist99.stages import tune

    overrides = smoke_search_cfg(tmp_path, "tune.max_trials=3")
    procs = {"first": start_tune(tmp_path, "first", overrides)}
    try:
        wait_until(lambda: "COMPLETED" in trial_states(tmp_path / "tuning").values(), 150, procs, "a finished trial")
        os.killpg(procs["first"].pid, signal.SIGKILL)
        procs["first"].wait(timeout=30)
    finally:
        kill_all(procs)
    states = trial_states(tmp_path / "tuning")
    assert len(states) < 3 or "RUNNING" in states.values(), f"the search had ended before the kill: {states}"
    out = tune.run(load_config([SMOKE], overrides), Namespace(config=[str(SMOKE)]))
    assert len(list((tmp_path / "tuning").iterdir())) == 1, "the rerun started another KerasTuner project"
    check_finished_search(store, out, tmp_path, trials_expected=3)  # as an uninterrupted search leaves it
    assert set(trial_states(tmp_path / "tuning").values()) == {"COMPLETED"}
    assert out["trials"] == 3


def test_a_trial_lost_between_kerastuner_saves_is_run_again(tmp_path):
    from mnist99.tuning.search import requeue_lost_trials

    def oracle():
        hp = keras_tuner.HyperParameters()
        hp.Float("x", 0.0, 1.0)
        made = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=3, hyperparameters=hp)
        made._set_project_dir(str(tmp_path), "p")
        return made

    first = oracle()
    first.create_trial("tuner0")
    first.ongoing_trials = {}  # as if killed after trial_0/trial.json, before oracle.json
    first.save()
    again = oracle()
    again.reload()
    assert requeue_lost_trials(again) == ["0"]
    assert again.create_trial("tuner0").trial_id == "0"
    assert requeue_lost_trials(again) == []


def test_trials_table_ranks_trials_and_counts_epochs_from_the_resumed_one():
    from types import SimpleNamespace

    from mnist99.reports.plots import close
    from mnist99.reports.trials import scores_figure, trials_table

    def trial(tid, score, step, **values):
        hp = SimpleNamespace(values={"model.width": 8, **values})
        return SimpleNamespace(trial_id=tid, status="COMPLETED" if score else "FAILED", score=score, best_step=step,
                               hyperparameters=hp)

    table = trials_table([trial("0", 0.9, 0), trial("1", None, 0), trial("2", 0.95, 0, **{"tuner/initial_epoch": 3}),
                          trial("3", 0.9, 1)], {"2": "run-2"})
    assert list(table.trial_id) == ["2", "0", "3", "1"]
    assert list(table.best_epoch[:3]) == [4, 1, 2] and table.run_id[0] == "run-2"
    assert "initial_epoch" in table.columns and "tuner/initial_epoch" not in table.columns
    fig = scores_figure(table)
    assert len(fig.axes[0].patches) == 4
    close(fig)
