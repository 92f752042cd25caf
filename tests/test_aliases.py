"""The champion alias through a real store: the gate after each export, loading by alias, and two exports racing."""
import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mnist99.delivery.ensemble import combine
from mnist99.delivery.loading import load_ensemble
from mnist99.tracking import aliases
from tests.conftest import SMOKE

NAME = "mnist99-ensemble"


@pytest.fixture
def cfg(tmp_path, store):
    from mnist99 import tracking
    from mnist99.config import load_config

    cfg = load_config([SMOKE], [f"export.dir={tmp_path / 'exports'}", "export.formats=[keras]"])
    tracking.setup(cfg)
    return cfg


def ensemble_run(cfg, model, splits, val_accuracy: float) -> str:
    """A FINISHED ensemble run as the ensemble stage leaves it: the model, the split inputs, val_accuracy."""
    from mnist99 import tracking

    with tracking.stage_run(cfg, "ensemble", "ensemble-tiny") as active:
        tracking.log_dataset(splits)
        tracking.log_metrics({"val_accuracy": val_accuracy})
        tracking.log_model_file(model)
    return active.info.run_id


def export(cfg, run_id: str, promote: bool | None = None) -> dict:
    from mnist99.stages import export as stage

    return stage.run(cfg, argparse.Namespace(run_id=run_id, promote=promote))


@pytest.mark.integration  # real exports into a SQLite store
def test_a_worse_export_stays_challenger_an_equal_or_better_one_becomes_champion(cfg, tiny_members, tiny_splits,
                                                                                  capsys):
    model = combine(tiny_members, [0.5, 0.5])
    client = mlflow.MlflowClient()
    first = export(cfg, ensemble_run(cfg, model, tiny_splits, 0.95))
    assert (first["alias"], first["serve_uri"]) == ("champion", f"models:/{NAME}@champion")
    digits = tiny_splits.x_test[:5]
    loaded = load_ensemble(f"models:/{NAME}@champion")
    assert np.abs(loaded.predict(digits, verbose=0) - model.predict(digits, verbose=0)).max() <= 1e-5
    tags = client.get_model_version(NAME, "1").tags
    assert tags[aliases.VAL_ACCURACY_TAG] == "0.95" and len(tags[aliases.VAL_DIGEST_TAG]) > 0
    assert tags[aliases.PROMOTION_TAG] == "champion: no earlier champion"
    capsys.readouterr()

    worse = export(cfg, ensemble_run(cfg, model, tiny_splits, 0.94))
    assert worse["alias"] == "challenger" and worse["serve_uri"] == f"models:/{NAME}/2"
    assert (f"not promoted: version 2 is {NAME}@challenger; worse: val_accuracy 0.9400 vs 0.9500 "
            "(champion: version 1)") in capsys.readouterr().out.splitlines()
    assert aliases_now() == {"champion": "1", "challenger": "2"}

    equal = export(cfg, ensemble_run(cfg, model, tiny_splits, 0.95))
    assert equal["alias"] == "champion" and "tie, newer" in equal["promotion"]
    assert aliases_now() == {"champion": "3", "challenger": "2"}

    other = tiny_splits.__class__(**{**vars(tiny_splits), "x_val": tiny_splits.x_val[::-1].copy()})
    moved = export(cfg, ensemble_run(cfg, model, other, 0.99))
    assert moved["alias"] == "challenger" and "different validation split" in moved["promotion"]

    better = export(cfg, ensemble_run(cfg, model, tiny_splits, 0.96), promote=False)  # --no-promote
    assert better["alias"] == "challenger"
    from mnist99.stages.export import promote

    assert aliases_now() == {"champion": "3", "challenger": "5"}
    assert promote(NAME, "5", "auto")["alias"] == "champion"  # the gate alone: better
    assert aliases_now() == {"champion": "5"}  # the challenger that won is no longer also the challenger
    assert promote(NAME, "2", True)["alias"] == "champion"  # --promote: the worse one, on request
    assert aliases_now() == {"champion": "2"}
    assert [m.name for m in client.search_registered_models()] == [NAME]  # no lock left behind


@pytest.mark.integration  # real exports into a SQLite store
def test_a_failed_gate_publishes_no_file_and_fails_the_run(cfg, tiny_members, tiny_splits, monkeypatch):
    """The gate is the export's last step: when it raises (a registry that does not answer), the files of
    the new version are not published, the champion's files stay as they were and the run is FAILED."""
    from mnist99.stages import export as stage

    model = combine(tiny_members, [0.5, 0.5])
    first = export(cfg, ensemble_run(cfg, model, tiny_splits, 0.95))
    folder = Path(cfg.export.dir)
    before = {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}

    def unreachable(*args):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(stage.tracking, "gate", unreachable)
    with pytest.raises(ConnectionError, match="registry unreachable"):
        export(cfg, ensemble_run(cfg, model, tiny_splits, 0.99))
    assert {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # no new file, none replaced
    assert Path(first["files"]["keras"]).resolve() in {p.resolve() for p in folder.rglob("*.keras")}
    failed = mlflow.search_runs(filter_string="tags.`mnist99.stage` = 'export'", output_format="list")
    assert sorted(r.info.status for r in failed) == ["FAILED", "FINISHED"]
    assert aliases_now() == {"champion": "1"}


def aliases_now() -> dict[str, str]:
    return {alias: str(version) for alias, version in mlflow.MlflowClient().get_registered_model(NAME).aliases.items()}


def register(client, tmp_path, val_accuracy: float, digest: str = "d" * 32) -> str:
    """A registered version with the tags an export records (no model files: the gate reads only tags)."""
    version = client.create_model_version(NAME, source=str(tmp_path)).version
    client.set_model_version_tag(NAME, version, aliases.VAL_ACCURACY_TAG, str(val_accuracy))
    client.set_model_version_tag(NAME, version, aliases.VAL_DIGEST_TAG, digest)
    return str(version)


@pytest.mark.parametrize("locked", [True, False])
def test_two_exports_racing_do_not_both_become_champion(store, tmp_path, monkeypatch, locked):
    """Two gates at once: the first, once it has read the champion, waits (up to 1 s) at a barrier for the
    other to read it too. With the lock the other cannot, so it compares with the winner; without it (the
    control) both read the old champion, both beat it and both believe they are the champion."""
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    old, best, second = (register(client, tmp_path, acc) for acc in (0.90, 0.95, 0.93))
    client.set_registered_model_alias(NAME, "champion", old)
    read_champion, inside, barrier = aliases.current_champion, threading.Event(), threading.Barrier(2, timeout=1.0)

    def read_then_wait(name):
        found = read_champion(name)
        inside.set()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return found

    monkeypatch.setattr(aliases, "current_champion", read_then_wait)
    if not locked:
        monkeypatch.setattr(aliases, "registry_lock", lambda name: threading.Lock())
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(aliases.gate, NAME, best)
        assert inside.wait(10)
        later = pool.submit(aliases.gate, NAME, second)
        decisions = [first.result(timeout=30), later.result(timeout=30)]
    if locked:
        assert [d.alias for d in decisions] == ["champion", "challenger"]
        assert "worse: val_accuracy 0.9300 vs 0.9500 (champion: version 2)" in decisions[1].reason
        assert aliases_now() == {"champion": best, "challenger": second}
    else:
        assert [d.alias for d in decisions] == ["champion", "champion"]


def test_a_lock_released_while_the_store_checks_a_clash_is_taken_on_the_next_try(released_in_between):
    """The store's answer "not found" to a create whose name was taken means released: the next try takes the lock."""
    with aliases.registry_lock(NAME):
        assert [m.name for m in mlflow.MlflowClient().search_registered_models()] == [NAME + aliases.LOCK_SUFFIX]
    assert released_in_between == [NAME + aliases.LOCK_SUFFIX] * 2 and mlflow.MlflowClient().search_registered_models() == []


def test_a_lock_left_by_a_dead_holder_is_broken(store, capsys):
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME + aliases.LOCK_SUFFIX)  # as a holder killed with SIGKILL leaves it
    with aliases.registry_lock(NAME, stale_after_s=0.3):
        assert [m.name for m in client.search_registered_models()] == [NAME + aliases.LOCK_SUFFIX]
    assert client.search_registered_models() == []
    assert "breaking the lock mnist99-ensemble.champion-lock" in capsys.readouterr().err
