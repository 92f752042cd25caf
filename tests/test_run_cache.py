"""``mnist99 run`` twice: the second run reuses every FINISHED stage run (same cache key); ``--force`` reruns."""
from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path

import mlflow
import pytest

from mnist99.config import with_overrides
from mnist99.stages import run
from mnist99.training.devices import cpu_description

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def runs_by_stage(store: str) -> dict[str, list[str]]:
    client = mlflow.MlflowClient(store)
    exps = [e.experiment_id for e in client.search_experiments()]
    found: dict[str, list[str]] = {}
    for r in client.search_runs(exps, order_by=["attributes.start_time"]):
        found.setdefault(r.data.tags["mnist99.stage"], []).append(r.info.run_id)
    return found


def test_second_run_skips_every_stage_and_force_reruns(smoke_cfg, store, tmp_path, capsys):
    cfg = with_overrides(smoke_cfg, {"ensemble.size": 1, "export.formats": ["keras"],
                                     "export.dir": str(tmp_path / "exports"), "tracking.system_metrics": False})
    start = time.perf_counter()
    first = run.run(cfg, Namespace(force=False))
    first_seconds = time.perf_counter() - start
    made = runs_by_stage(store)
    assert {stage: len(ids) for stage, ids in made.items()} == {"prepare": 1, "ensemble": 1, "train": 1, "export": 1}
    client = mlflow.MlflowClient(store)
    keys = {stage: client.get_run(made[stage][0]).data.tags.get("mnist99.cache_key") for stage in made}
    assert all(keys.values()) and len(set(keys.values())) == 4  # the member's train run has its own key
    capsys.readouterr()

    start = time.perf_counter()
    second = run.run(cfg, Namespace(force=False))
    second_seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert runs_by_stage(store) == made  # no new run of any stage
    for stage in ("prepare", "ensemble", "export"):
        assert f"run: {stage} skipped: reusing FINISHED run {made[stage][0]} (cache key {keys[stage]})" in out
    assert "mnist99 run: summary" in out and f"ensemble run {made['ensemble'][0]}" in out
    assert ("registered   models:/mnist99-ensemble/1  -> mnist99.load_ensemble('models:/mnist99-ensemble@champion')"
            in out.splitlines())  # the reused export keeps its alias
    assert f"robustness   mean {first['robust/mean']:.4f}" in out
    machine = [line for line in out.splitlines() if line.startswith("machine      ")]
    assert len(machine) == 1 and machine[0].endswith(cpu_description())  # the figure's CPU, to quote beside it
    assert second["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert second["eval_ece"] == pytest.approx(first["eval_ece"])
    assert second["robust/mean"] == pytest.approx(first["robust/mean"])  # the evaluation pack's robustness, read back
    assert second["export"]["model_uri"] == first["export"]["model_uri"]
    print(f"first run {first_seconds:.1f}s, second run {second_seconds:.1f}s")  # shown with -s

    Path(first["export"]["keras_file"]).unlink()  # the user deleted the export: only export reruns
    third = run.run(cfg, Namespace(force=False))
    out = capsys.readouterr().out
    assert "run: export rerun: the files of run" in out and "run: ensemble skipped" in out
    assert Path(third["export"]["keras_file"]).is_file()
    now = runs_by_stage(store)
    assert len(now["export"]) == 2 and now["ensemble"] == made["ensemble"]

    run.run(cfg, Namespace(force=True))
    assert "skipped" not in capsys.readouterr().out
    forced = runs_by_stage(store)
    assert {stage: len(ids) for stage, ids in forced.items()} == {"prepare": 2, "ensemble": 2, "train": 2, "export": 3}
