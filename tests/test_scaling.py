"""Beyond one process: members' claims, the team server on PostgreSQL, and workers that meet through it.

The integration test runs real processes on 127.0.0.1: `mnist99 server`, four `ensemble --member`
workers at once (member 1 twice), then `mnist99 run` and a loader in processes of their own.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from mnist99.config import ClaimConfig
from mnist99.errors import InputError
from mnist99.tracking import claims, teamserver
from tests.conftest import SMOKE, require_real_data
from tests.servers import env_for

SETTINGS = ClaimConfig(heartbeat=1.0, stale=5.0)


class FakeClock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


def held_claim(key: str, holder: str = "another-machine:1") -> str:
    """A claim as a holder leaves it, with a RUNNING run tagged with it; returns the run id."""
    client = mlflow.MlflowClient()
    made = client.create_registered_model(claims.PREFIX + key, tags={claims.HEARTBEAT_TAG: "0", claims.HOLDER_TAG: holder})
    run = client.create_run(client.create_experiment(f"exp-{key}"),
                            tags={claims.RUN_CLAIM_TAG: f"{made.name}@{made.creation_timestamp}"})
    return run.info.run_id


def test_a_claim_without_heartbeats_is_broken_after_the_stale_period_and_its_run_killed(store, capsys):
    run_id = held_claim("k1")
    clock = FakeClock()
    with claims.claimed("k1", "member 1/3", SETTINGS, clock=clock, sleep=clock.sleep) as claim:
        assert claim.name == claims.PREFIX + "k1"
    assert SETTINGS.stale <= clock.now <= SETTINGS.stale + 2 * claims.POLL_S  # waited the stale period, no longer
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"
    assert "no heartbeat for 5 s" in capsys.readouterr().err
    assert not mlflow.MlflowClient().search_registered_models(f"name = '{claims.PREFIX}k1'")  # released


def test_a_claim_of_a_dead_process_on_this_machine_is_broken_at_once(store):
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = held_claim("k3", f"{socket.gethostname()}:{dead.pid}")
    clock = FakeClock()
    with claims.claimed("k3", "member 3/3", SETTINGS, clock=clock, sleep=clock.sleep):
        assert clock.now == 0  # no stale period waited
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"


def test_a_claim_whose_heartbeat_moves_is_waited_for_never_broken(store):
    run_id = held_claim("k2")
    client, clock = mlflow.MlflowClient(), FakeClock()

    def beating_holder(seconds: float) -> None:  # the holder beats at every poll, then finishes at 4x stale
        clock.sleep(seconds)
        if clock.now > 4 * SETTINGS.stale:
            client.delete_registered_model(claims.PREFIX + "k2")
        else:
            client.set_registered_model_tag(claims.PREFIX + "k2", claims.HEARTBEAT_TAG, str(clock.sleeps))

    with claims.claimed("k2", "member 2/3", SETTINGS, clock=clock, sleep=beating_holder):
        assert clock.now > 4 * SETTINGS.stale
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_claim_released_while_the_store_checks_a_clash_is_taken_on_the_next_try(released_in_between):
    """The store's answer "not found" to a create whose name was taken means released: the next try takes
    the claim, with no wait."""
    clock = FakeClock()
    with claims.claimed("k4", "member 1/3", SETTINGS, clock=clock, sleep=clock.sleep) as claim:
        assert [m.name for m in mlflow.MlflowClient().search_registered_models()] == [claim.name]
    assert released_in_between == [claims.PREFIX + "k4"] * 2 and clock.sleeps == 0


def test_taking_a_name_raises_what_is_not_a_clash(store, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from mnist99.tracking import mutex

    def refused(self, name, *args, **kwargs):
        raise MlflowException(f"Invalid name {name}", error_code=INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(mlflow.MlflowClient, "create_registered_model", refused)
    with pytest.raises(MlflowException, match="Invalid name x"):
        mutex.take(mlflow.MlflowClient(), "x")


def test_watch_is_stale_only_after_the_same_beat_for_the_whole_period():
    clock = FakeClock()
    watch = claims.Watch(10.0, clock)
    assert not watch.stale("a")
    clock.now = 9.0
    assert not watch.stale("a")
    clock.now = 10.5
    assert watch.stale("a")
    assert not watch.stale("b")  # a new beat starts the period again
    clock.now = 20.0
    assert not watch.stale("b")


def test_a_server_beyond_loopback_needs_credentials_and_keeps_them_out_of_argv(tmp_path):
    with pytest.raises(InputError, match="0.0.0.0.*basic auth"):
        teamserver.auth_for("0.0.0.0", tmp_path, None)
    assert teamserver.auth_for("127.0.0.1", tmp_path, None) is None
    creds = tmp_path / "admin"
    creds.write_text("alice:s3cret-pw\n")
    auth = teamserver.auth_for("0.0.0.0", tmp_path / "srv", teamserver.read_credentials(creds))
    argv = teamserver.server_argv("postgresql://u@127.0.0.1:1/db", "file:///a", "0.0.0.0", 5000, auth, "gpu-box:5000")
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    hosts = argv[argv.index("--allowed-hosts") + 1].split(",")
    assert "gpu-box:5000" in hosts and "localhost" in hosts and "192.168.*" in hosts  # added to MLflow's default
    assert "s3cret-pw" not in " ".join(argv) and auth.env[teamserver.ADMIN_PASSWORD_ENV] == "s3cret-pw"
    creds.write_text("no-colon\n")
    with pytest.raises(InputError, match="user:password"):
        teamserver.read_credentials(creds)


def worker(args: list[str], url: str, log: Path) -> subprocess.Popen:
    """``mnist99 <args>`` against the server at ``url``, its output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mnist99.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env_for(url))


def finished(process: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    code = process.wait(timeout)
    text = log.read_text()
    assert code == 0, f"{process.args} exited {code}:\n{text[-3000:]}"
    return text


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.scaling
def test_members_train_in_separate_processes_once_each_and_run_reuses_them_through_the_server(team_server, tmp_path):
    require_real_data()
    config = ["-c", str(SMOKE)] + [f"--set={o}" for o in (
        "ensemble.size=3", f"data.cache_dir={tmp_path / 'cache'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
        f"export.dir={tmp_path / 'exports'}", "evaluate.robustness=false", "tracking.system_metrics=false",
        "tracking.experiment=scaling")]
    url = team_server.url
    jobs = [(member, tmp_path / f"member-{member}-{n}.log") for member, n in ((1, "a"), (1, "b"), (2, "a"), (3, "a"))]
    started = [worker(["ensemble", "--member", str(m), *config], url, log) for m, log in jobs]
    logs = [finished(p, log) for p, (_, log) in zip(started, jobs)]
    assert sum(": training " in text for text in logs[:2]) == 1  # member 1: one process trains, the other reuses
    assert "reuses FINISHED train run" in logs[0] + logs[1]

    mlflow.set_tracking_uri(url)
    experiment = mlflow.get_experiment_by_name("scaling").experiment_id
    trains = mlflow.search_runs([experiment], "tags.`mnist99.stage` = 'train'", output_format="list")
    assert sorted(r.info.status for r in trains) == ["FINISHED"] * 3
    assert len({r.data.tags["mnist99.cache_key"] for r in trains}) == 3  # one run per member, never two

    log = tmp_path / "run.log"
    text = finished(worker(["run", *config], url, log), log)
    assert text.count("reuses FINISHED train run") == 3 and ": training " not in text
    assert len(mlflow.search_runs([experiment], "tags.`mnist99.stage` = 'train'", output_format="list")) == 3
    version = mlflow.MlflowClient().get_registered_model("mnist99-ensemble").latest_versions[0].version

    loader = (f"import mnist99, numpy as np; m = mnist99.load_ensemble('models:/mnist99-ensemble/{version}'); "
              "print('probs', m.predict(np.zeros((2, 28, 28), 'uint8'), verbose=0).shape)")
    out = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, env=env_for(url), timeout=300)
    assert "probs (2, 10)" in out.stdout, out.stderr[-3000:]

    password = (team_server.folder / "db-password").read_text().strip()
    assert password not in team_server.log.read_text() + "".join(logs) + text
    for run in mlflow.search_runs([experiment], output_format="list"):
        assert password not in str(run.data.params) + str(run.data.tags)


def test_ui_sends_a_tracking_server_user_to_the_server_itself(monkeypatch):
    from argparse import Namespace

    from mnist99.config import load_config
    from mnist99.stages import ui

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    with pytest.raises(InputError, match="serves its own UI: open http://127.0.0.1:1"):
        ui.run(load_config([], []), Namespace(host="127.0.0.1", port=5000))


def test_workers_with_a_budget_use_the_first_workers_plan(store, tiny_splits, monkeypatch, capsys):
    """The first worker times and plans under the plan's claim and records the plan on a ``plan`` run;
    the next one (another process, another machine) plans nothing and gets the same epochs."""
    import time

    from mnist99 import tracking
    from mnist99.config import load_config
    from mnist99.stages import ensemble
    from mnist99.training import probe
    from tests.test_budget import fake_speeds

    cfg = load_config(None, ["ensemble.size=3", "train.budget=2m", "train.budget_max_epochs=1000"])
    monkeypatch.setattr(probe, "measure_speeds", fake_speeds)
    tracking.setup(cfg)
    first, (plan, key) = ensemble.plan_once(cfg, tiny_splits, started=time.time())
    (recorder,) = mlflow.search_runs(filter_string="tags.`mnist99.stage` = 'plan'", output_format="list")
    assert recorder.info.status == "FINISHED" and recorder.data.tags[tracking.PLAN_KEY_TAG] == key
    monkeypatch.setattr(probe, "measure_speeds", lambda *a, **k: pytest.fail("a second worker timed its own plan"))
    second, (again, _) = ensemble.plan_once(cfg, tiny_splits, started=time.time() + 60)
    assert again == plan and second == first
    assert len(mlflow.search_runs(filter_string="tags.`mnist99.stage` = 'plan'", output_format="list")) == 1
    assert not mlflow.MlflowClient().search_registered_models(f"name LIKE '{claims.PREFIX}%'")  # claim released


@pytest.mark.parametrize("index", [0, 4])
def test_a_member_outside_the_ensemble_is_one_line_naming_it(index):
    from mnist99.config import load_config
    from mnist99.errors import ConfigError
    from mnist99.stages import ensemble

    with pytest.raises(ConfigError, match=rf"^--member {index}: the ensemble has members 1\.\.3$"):
        ensemble.run_member(load_config([], ["ensemble.size=3"]), index, started=0)
