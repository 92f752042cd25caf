"""Members trained at once in worker processes (``ensemble.workers``)."""
import re
import sys
import time

import pytest

from mnist99.training.workers import WorkerError, run_workers, thread_environment, worker_count


@pytest.mark.parametrize("setting, to_train, cores, gpu, expected", [
    ("auto", 3, 2, False, 3),   # every member at once on 2 cores
    ("auto", 9, 2, False, 3),   # up to cores + 1
    ("auto", 3, 16, False, 3),
    ("auto", 1, 8, False, 1),   # one member: nothing to share
    ("auto", 3, 1, False, 1),   # one core
    ("auto", 3, 8, True, 1),    # a GPU is one device
    (2, 3, 2, False, 2),
    (5, 3, 2, False, 3),        # never more than the members to train
    (2, 3, 8, True, 2),         # as the user set it
])
def test_how_many_members_train_at_once(setting, to_train, cores, gpu, expected):
    assert worker_count(setting, to_train, cores, gpu) == expected


def test_each_worker_gets_its_share_of_the_cores_unless_the_user_set_the_threads():
    assert thread_environment(3, 2, {}) == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                                            "PYTHONUNBUFFERED": "1"}
    shared = thread_environment(2, 8, {"PATH": "/bin"})
    assert shared["TF_NUM_INTRAOP_THREADS"] == "4" and shared["TF_NUM_INTEROP_THREADS"] == "1" and shared["PATH"] == "/bin"
    assert thread_environment(2, 8, {"TF_NUM_INTRAOP_THREADS": "2"})["TF_NUM_INTRAOP_THREADS"] == "2"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_workers_run_a_few_at_a_time_and_their_epoch_lines_say_whose_they_are():
    lines = []
    jobs = [(f"member {i}", python(f"print('  epoch 1/1  loss 0.{i}'); print('done {i}')")) for i in (1, 2, 3)]
    run_workers(jobs, 2, {}, show=lines.append)
    assert sorted(lines) == sorted([f"  member {i}: epoch 1/1  loss 0.{i}" for i in (1, 2, 3)] + [f"done {i}" for i in (1, 2, 3)])


def test_a_failing_worker_stops_the_others_and_names_its_member_and_its_error():
    jobs = [("member 1", python("import time; time.sleep(60)")),
            ("member 2", python("import sys, time; time.sleep(1); print('mnist99 ensemble: error: bad thing', file=sys.stderr);"
                                " sys.exit(2)"))]
    began = time.monotonic()
    with pytest.raises(WorkerError, match=r"^member 2: its worker exited with status 2: mnist99 ensemble: error: bad thing$"):
        run_workers(jobs, 2, {}, show=lambda line: None)
    assert time.monotonic() - began < 30  # member 1 was stopped, not waited for


@pytest.mark.integration
def test_an_ensemble_trains_its_members_at_once_and_combines_their_runs(smoke_cfg, store, capsys):
    import mlflow

    from mnist99.config import with_overrides
    from mnist99.stages import ensemble

    cfg = with_overrides(smoke_cfg, {"ensemble.workers": 2, "tracking.system_metrics": False})
    out = ensemble.run(cfg)
    printed = capsys.readouterr().out
    assert re.search(r"^ensemble: members 1, 2 of 2 train at once, 2 processes of \d+ thread\(s\) on \d+ cores", printed, re.M)
    runs = [mlflow.get_run(run_id) for run_id in out["member_run_ids"]]
    assert [r.data.tags["mnist99.stage"] for r in runs] == ["train", "train"]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == out["run_id"] for r in runs)
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    again = ensemble.run(cfg)  # nothing left to train: no worker starts
    assert again["member_run_ids"] == out["member_run_ids"]
    assert "train at once" not in capsys.readouterr().out


def test_worker_commands_keep_their_working_folder_off_the_import_path_and_carry_the_plan():
    from mnist99.training.workers import member_command

    command = member_command("cfg.yaml", 2, force=True, parent_run_id="abc", after=1, plan_file="plan.json")
    assert command[:4] == [sys.executable, "-P", "-m", "mnist99.cli"]  # -P: a ./mnist99 folder shadows nothing
    assert command[4:] == ["ensemble", "-c", "cfg.yaml", "--member", "2", "--worker", "1", "--parent-run", "abc",
                           "--plan", "plan.json", "--force"]
    alone = member_command("cfg.yaml", 2, force=False)  # no ensemble run open: the member's run nests under none
    assert "--plan" not in alone and "--parent-run" not in alone


def test_a_budget_with_workers_times_them_together_and_plans_them_in_lanes(store, tiny_splits, monkeypatch, capsys):
    """Members are timed in this process, then, with members at once, in as many worker processes of their threads;
    what follows the members is priced at this process's rate, and the plan with more member-epochs has a lane per
    worker."""
    from mnist99 import tracking
    from mnist99.config import load_config
    from mnist99.stages import ensemble
    from mnist99.training import concurrent_probe, probe, workers
    from mnist99.training.budget import Speed

    cfg = load_config(None, ["ensemble.size=3", "train.budget=10m", "evaluate.robustness=false", "train.budget_min_epochs=6"])
    steps = max(len(tiny_splits.y_train) // cfg.train.batch_size, 1)  # as budget.member_cost counts them
    seen = {}

    def speeds(at_once: float, alone: float) -> None:  # seconds an epoch's steps take
        def together(cfg, count, env, clock, limit=None):
            seen.update(count=count, threads=env["TF_NUM_INTRAOP_THREADS"], limit=limit)
            if at_once is None:  # the probe processes gave no speed in time
                raise concurrent_probe.ProbeTimeout(f"timing the members at once: gave no speed within {limit:.0f} s")
            return Speed(at_once / steps, 1.0, 0.001, 0.0)

        monkeypatch.setattr(concurrent_probe, "measure_at_once", together)
        monkeypatch.setattr(probe, "measure_speed", lambda *a, **k: Speed(alone / steps, 1.0, 0.0001, 0.0))

    monkeypatch.setattr(workers, "cpu_cores", lambda: 2)
    tracking.setup(cfg)
    speeds(at_once=60.0, alone=25.0)  # at once: 3 members x 8-9 epochs; one after another 3 x 7-8
    planned, (plan, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time())
    assert seen.pop("limit") == pytest.approx(600 / 4, abs=5)  # a quarter of the budget left
    assert seen == {"count": 3, "threads": "1"} and plan.lanes == 3 and len(plan.epochs) == 3
    # after the members: this process's rate (0.0001 s an image), not the workers' (0.001)
    assert plan.after_seconds < 0.001 * 3 * (60 + 3 * 60) + cfg.train.budget_overhead.job
    printed = capsys.readouterr().out
    assert re.search(r"budget: one after another, 3 members x 7-8 epochs; at once, 3 members x \d+(-\d+)? epochs", printed)
    assert "ensemble: budget 10m: 3 members (3 at once) x " in printed

    speeds(at_once=110.0, alone=25.0)  # at once, under 6 epochs each whatever the members: 1 kept; the more epochs win
    _, (plan, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time(), force=True)
    assert plan.lanes == 1 and plan.fitting == (7, 7, 8)  # the last: one more, ended partway
    assert "budget: one after another, 3 members x 7-8 epochs; at once, 1 member x 5 epochs" in capsys.readouterr().out

    speeds(at_once=None, alone=25.0)  # probes at once that hang: killed at their limit, the members one after another
    _, (plan, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time(), force=True)
    assert plan.lanes == 1 and plan.fitting == (7, 7, 8)
    assert re.search(r"ensemble: budget: timing the members at once: gave no speed within 1\d\d s; the members train "
                     r"one after another\n", capsys.readouterr().out)

    seen.clear()  # one after another drops a member: at once would too, and is not timed
    speeds(at_once=60.0, alone=40.0)
    _, (plan, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time(), force=True)
    assert seen == {} and plan.lanes == 1 and plan.dropped == 1
    # a --member worker plans for one member after another (other machines train the others)
    speeds(at_once=10.0, alone=25.0)
    _, (lone, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time(), force=True, at_once=False)
    assert seen == {} and lone.lanes == 1


def test_budgeted_workers_get_the_plan_and_count_their_start_against_their_deadline(tiny_splits, monkeypatch):
    import json

    from mnist99.config import load_config
    from mnist99.stages import ensemble
    from mnist99.training import workers
    from mnist99.training.budget import MemberCost, plan_epochs

    plan = plan_epochs(600, [MemberCost(10, 5, start=2)] * 3, 30, 100, started=0, clock=lambda: 0.0, lanes=3)
    cfg = load_config(None, ["ensemble.size=3"])
    given = {}

    def fake_run_workers(jobs, count, env, show=print):
        command = jobs[0][1]
        given.update(count=count, plan=json.loads(open(command[command.index("--plan") + 1]).read()))

    monkeypatch.setattr(workers, "run_workers", fake_run_workers)
    finished = []  # the runs the workers leave: none at first
    monkeypatch.setattr(ensemble.tracking, "cached_run", lambda *a, **k: finished[-1] if finished else None)
    # workers that exit 0 and leave no run under this process's key (the code changed meanwhile): not retrained here
    with pytest.raises(WorkerError, match=r"^member 1: its worker exited 0 but no FINISHED train run has the key"):
        ensemble.train_at_once(cfg, tiny_splits, [(cfg, None)] * 3, budgeted=plan)
    assert given["count"] == 3 and given["plan"] == json.loads(json.dumps(plan.to_dict()))
    monkeypatch.setattr(workers, "run_workers", lambda *a, **k: finished.append("run"))
    assert ensemble.train_at_once(cfg, tiny_splits, [(cfg, None)] * 3, budgeted=plan)

    carried = {}
    monkeypatch.setattr(ensemble, "make_splits", lambda *a, **k: tiny_splits)
    monkeypatch.setattr(ensemble.tracking, "setup", lambda cfg: None)
    monkeypatch.setattr(ensemble, "fit_member", lambda *a, **k: carried.update(k) or {"run_id": "r"})
    ensemble.run_member(cfg, 2, started=time.time() - 12, worker=0, budgeted=plan)
    assert carried["budgeted"] == plan and -13 < carried["carried"] <= -12  # Python, TensorFlow and the data came first


def test_a_failing_probe_process_fails_in_one_line_naming_its_error(smoke_cfg, monkeypatch):
    from mnist99.training import concurrent_probe

    monkeypatch.setattr(concurrent_probe, "probe_command",
                        lambda file, launched: python("import sys; sys.exit('mnist99 ensemble: error: no data')"))
    with pytest.raises(WorkerError, match=r"a probe process exited with status 1: mnist99 ensemble: error: no data$"):
        concurrent_probe.measure_at_once(smoke_cfg, 2, thread_environment(2, 2))


def test_probe_processes_that_hang_are_killed_at_their_limit(smoke_cfg, monkeypatch):
    from mnist99.training import concurrent_probe

    monkeypatch.setattr(concurrent_probe, "probe_command",
                        lambda file, launched: python("import time; print('probe: ready', flush=True); time.sleep(120)"))
    began = time.monotonic()
    with pytest.raises(concurrent_probe.ProbeTimeout, match=r"^timing the members at once: the 2 probe processes gave "
                                                            r"no speed within 3 s$"):
        concurrent_probe.measure_at_once(smoke_cfg, 2, thread_environment(2, 2), limit=3.0)
    assert time.monotonic() - began < 30  # not the 120 s a process sleeps


@pytest.mark.integration
def test_probes_at_once_wait_for_each_other_then_time_their_steps_together(smoke_cfg):
    from mnist99.training.concurrent_probe import measure_at_once

    began = time.time()
    speed = measure_at_once(smoke_cfg, 2, thread_environment(2, 2))
    assert 0 < speed.step_seconds < 5 and 0 < speed.image_seconds < 0.1
    # each start counts its process's launch, Python and TensorFlow included
    assert 1 < speed.start_seconds < time.time() - began
