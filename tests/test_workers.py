"""Members trained at once in worker processes (``ensemble.workers``)."""
import re
import sys
import time

import pytest

from mnist99.training.workers import WorkerError, run_workers, thread_environment, worker_count


@pytest.mark.parametrize("setting, to_train, cores, gpu, budgeted, expected", [
    ("auto", 3, 2, False, False, 3),   # every member at once on 2 cores
    ("auto", 9, 2, False, False, 3),   # up to cores + 1
    ("auto", 3, 16, False, False, 3),
    ("auto", 1, 8, False, False, 1),   # one member: nothing to share
    ("auto", 3, 1, False, False, 1),   # one core
    ("auto", 3, 8, True, False, 1),    # a GPU is one device
    ("auto", 3, 8, False, True, 1),    # a budget's plan times one process on every core
    (2, 3, 2, False, False, 2),
    (5, 3, 2, False, False, 3),        # never more than the members to train
    (2, 3, 2, False, True, 2),         # as the user set it
])
def test_how_many_members_train_at_once(setting, to_train, cores, gpu, budgeted, expected):
    assert worker_count(setting, to_train, cores, gpu, budgeted) == expected


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
