"""A chief/worker search against the team tracking server that loses a worker: the chief's trial timeout
(unit, with a fake clock) and real processes on PostgreSQL + ``mnist99 server`` (chief + 2 workers, one
SIGKILLed; a worker restarted with its id)."""
from __future__ import annotations

import os
import signal

import keras_tuner
import mlflow
import pytest

from mnist99.tracking.server import free_port
from tests.test_tune import kill_all, logs, search_runs, smoke_search_cfg, start_tune, trial_states, wait_until

IDLE, RUNNING, STOPPED = "IDLE", "RUNNING", "STOPPED"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_oracle(tmp_path, clock, timeouts, max_trials=2):
    from mnist99.tuning.timeouts import with_trial_timeout

    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=max_trials,
                                                    hyperparameters=hp, seed=1)
    oracle._set_project_dir(str(tmp_path), "p")
    return with_trial_timeout(oracle, 10.0, on_timeout=lambda *ids: timeouts.append(ids), clock=clock)


def complete(oracle, trial_id: str) -> None:
    oracle.update_trial(trial_id, {"val_accuracy": 0.5})
    trial = oracle.get_trial(trial_id)
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_a_silent_workers_trial_goes_to_the_next_worker_that_asks(tmp_path):
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    clock, timeouts = Clock(), []
    oracle = timed_oracle(tmp_path, clock, timeouts)
    first = oracle.create_trial("tuner1")
    assert oracle.create_trial("tuner2").trial_id != first.trial_id
    clock.now = 5.0  # tuner1 restarted with the same id: KerasTuner gives it its own trial back
    assert oracle.create_trial("tuner1").trial_id == first.trial_id
    clock.now = 12.0
    complete(oracle, "1")
    clock.now = 14.0  # no trial left to create, tuner1's is 9 s silent: tuner2 and tuner3 wait instead of stopping
    assert oracle.create_trial("tuner2").status == IDLE and oracle.create_trial("tuner3").status == IDLE
    assert timeouts == [] and not exit_chief(oracle)
    clock.now = 15.5  # tuner1 10.5 s silent: let go, its trial handed to the worker that asked
    retry = oracle.create_trial("tuner2")
    assert (retry.trial_id, retry.status) == (first.trial_id, RUNNING)
    assert timeouts == [(first.trial_id, "tuner1")] and oracle.tuner_ids == {"tuner2", "tuner3"}
    assert oracle.ongoing_trials == {"tuner2": retry}
    clock.now = 30.0  # tuner3 died while it waited: 16 s silent, let go too, with no trial to queue
    complete(oracle, first.trial_id)
    assert oracle.create_trial("tuner2").status == STOPPED
    assert exit_chief(oracle), "the chief would wait for the lost workers forever"
    assert timeouts == [(first.trial_id, "tuner1")]
    assert {t.status for t in oracle.trials.values()} == {"COMPLETED"}


def test_an_epoch_heartbeat_keeps_a_long_trial_with_its_worker(tmp_path):
    clock, timeouts = Clock(), []
    oracle = timed_oracle(tmp_path, clock, timeouts, max_trials=1)
    trial = oracle.create_trial("tuner1")
    for clock.now in (8.0, 16.0, 24.0):  # a trial of three 8 s epochs: a GetTrial after each
        oracle.get_trial(trial.trial_id)
        assert oracle.create_trial("tuner2").status == IDLE
    assert timeouts == [] and oracle.ongoing_trials == {"tuner1": trial}
    clock.now = 34.5
    assert oracle.expire_silent_workers() == [trial.trial_id] and timeouts == [(trial.trial_id, "tuner1")]
    assert oracle.expire_silent_workers() == []


def test_a_worker_beats_after_each_epoch_and_pauses_only_between_idle_asks(monkeypatch):
    from types import SimpleNamespace

    from mnist99.tuning import timeouts

    class Tuner:  # the hooks of KerasTuner's BaseTuner/Tuner that the mixin extends
        def pre_create_trial(self): pass
        def on_trial_begin(self, trial): pass
        def on_epoch_end(self, trial, model, epoch, logs=None): pass

    sleeps, asked = [], []
    monkeypatch.setattr(timeouts.time, "sleep", sleeps.append)
    worker = type("Worker", (timeouts.TrialHeartbeat, Tuner), {})()
    worker.oracle = SimpleNamespace(get_trial=asked.append)
    worker.pre_create_trial()  # the first ask
    worker.pre_create_trial()  # the ask before was answered IDLE: pause
    assert sleeps == [timeouts.IDLE_WAIT_SECONDS]
    trial = SimpleNamespace(trial_id="3")
    worker.on_trial_begin(trial)
    worker.on_epoch_end(trial, None, 0)
    worker.on_epoch_end(trial, None, 1)
    worker.pre_create_trial()  # after a trial: at once
    assert sleeps == [timeouts.IDLE_WAIT_SECONDS] and asked == ["3", "3"]


def test_the_chief_marks_a_timed_out_trials_run_killed_and_its_retry_reopens_it(store):
    from mnist99.stages.tune import TIMED_OUT_TAG, TRIAL_TAG, _mark_timed_out

    mlflow.set_experiment("t")
    with mlflow.start_run() as parent:
        trial_run = mlflow.MlflowClient().create_run(parent.info.experiment_id, tags={
            "mlflow.parentRunId": parent.info.run_id, TRIAL_TAG: "3"}).info.run_id
        _mark_timed_out(parent.info.run_id, "7", "tuner9")  # no run for trial 7 yet: nothing to mark
        _mark_timed_out(parent.info.run_id, "3", "tuner1")
    run = mlflow.get_run(trial_run)
    assert run.info.status == "KILLED" and run.data.tags[TIMED_OUT_TAG] == "tuner1"
    with mlflow.start_run(run_id=trial_run):
        pass
    assert mlflow.get_run(trial_run).info.status == "FINISHED"


# --- real processes: a tracking server, a chief and two workers --------------------------------

@pytest.fixture
def tracking_server(team_server, tmp_path, monkeypatch):
    """The session's team server (PostgreSQL + ``mnist99 server``) as MLFLOW_TRACKING_URI, and an
    experiment of this test's own on it; yields (url, experiment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)
    mlflow.set_tracking_uri(team_server.url)
    yield team_server.url, f"tune-{tmp_path.name}"


def running_trial_of(tuner_id: str, experiment: str) -> str | None:
    """The trial id of ``tuner_id``'s RUNNING trial run on the server, if any."""
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                              filter_string=f"tags.`mnist99.tuner_id` = '{tuner_id}' AND attributes.status = 'RUNNING'")
    return runs[0].data.tags["mnist99.trial_id"] if runs else None


def kill_mid_trial(procs: dict, experiment: str) -> str:
    """SIGKILL ``worker1`` once its trial's run is RUNNING on the server; returns that trial's id."""
    wait_until(lambda: running_trial_of("tuner1", experiment) is not None, 180, procs, "tuner1's trial")
    killed = running_trial_of("tuner1", experiment)
    os.killpg(procs["worker1"].pid, signal.SIGKILL)
    procs.pop("worker1").wait(timeout=30)
    return killed


def search_losing_worker1(tmp_path, experiment: str, overrides: list[str], workers: dict[str, str],
                          restarted: dict[str, str] | None = None) -> tuple[str, dict[str, int]]:
    """A chief and ``workers`` (process name -> ``--worker-id``) on one oracle; ``worker1`` SIGKILLed once its
    trial runs, then ``restarted`` started the same way; waits for the search to end. Returns the killed trial's
    id and the exit code of every process but the killed one, for the caller to check by name."""
    oracle = f"127.0.0.1:{free_port()}"

    def worker(name: str, worker_id: str):
        return start_tune(tmp_path, name, overrides, "--role", "worker", "--oracle", oracle,
                          "--worker-id", worker_id, "--parent-wait", "120")

    procs = {"chief": start_tune(tmp_path, "chief", overrides, "--role", "chief", "--oracle", oracle)}
    try:
        procs.update({name: worker(name, worker_id) for name, worker_id in workers.items()})
        killed = kill_mid_trial(procs, experiment)
        procs.update({name: worker(name, worker_id) for name, worker_id in (restarted or {}).items()})
        wait_until(lambda: all(p.poll() is not None for p in procs.values()), 240, procs, "the search to end")
    finally:
        kill_all(procs)
    return killed, {n: p.returncode for n, p in procs.items()}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.scaling
def test_a_search_on_a_server_outlives_a_worker_killed_mid_trial(tmp_path, tracking_server):
    from mnist99.stages.tune import TIMED_OUT_TAG

    url, experiment = tracking_server
    overrides = smoke_search_cfg(tmp_path, "tune.max_trials=3", "tune.trial_timeout=10", f"tune.experiment={experiment}")
    killed, exits = search_losing_worker1(tmp_path, experiment, overrides, {"worker1": "1", "worker2": "2"})
    assert exits == {"chief": 0, "worker2": 0}, logs(tmp_path)
    parents, trials = search_runs(url, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", logs(tmp_path)
    by_trial = {r.data.tags["mnist99.trial_id"]: r for r in trials}
    assert sorted(by_trial) == ["0", "1", "2"] and len(trials) == 3, "a trial has more than one run"
    assert {r.info.status for r in trials} == {"FINISHED"}, logs(tmp_path)
    assert {r.data.tags["mnist99.trial_status"] for r in trials} == {"COMPLETED"}
    retried = by_trial[killed]
    assert retried.data.tags[TIMED_OUT_TAG] == "tuner1" and retried.data.tags["mnist99.tuner_id"] == "tuner2"
    assert set(trial_states(tmp_path / "tuning").values()) == {"COMPLETED"}
    assert parents[0].data.metrics["trials_completed"] == 3
    assert "Worker tuner1 silent for over 10 s: let go, trial" in (tmp_path / "chief.log").read_text()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.scaling
def test_a_worker_restarted_with_its_id_gets_its_trial_and_run_back(tmp_path, tracking_server):
    from mnist99.stages.tune import TIMED_OUT_TAG

    url, experiment = tracking_server
    overrides = smoke_search_cfg(tmp_path, "tune.max_trials=2", "tune.trial_timeout=120", f"tune.experiment={experiment}")
    killed, exits = search_losing_worker1(tmp_path, experiment, overrides, {"worker1": "1"}, restarted={"again": "1"})
    assert exits == {"chief": 0, "again": 0}, logs(tmp_path)
    _, trials = search_runs(url, experiment)
    assert sorted(r.data.tags["mnist99.trial_id"] for r in trials) == ["0", "1"], logs(tmp_path)
    assert {r.info.status for r in trials} == {"FINISHED"}
    resumed = next(r for r in trials if r.data.tags["mnist99.trial_id"] == killed)
    assert TIMED_OUT_TAG not in resumed.data.tags, "the chief timed the trial out instead of giving it back"
    assert resumed.data.tags["mnist99.trial_status"] == "COMPLETED"
    assert "silent" not in (tmp_path / "chief.log").read_text()
