"""The CPU benchmarks run end to end at smoke size and print what the README says they print."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_real_data

pytestmark = pytest.mark.integration


def run_benchmark(script: str, *args: str, cache: Path) -> list[dict]:
    require_real_data()
    out = subprocess.run([sys.executable, f"benchmarks/{script}", "-c", "configs/smoke.yaml",
                          "--set", f"data.cache_dir={cache}", *args],
                         cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_input_bound_reports_three_rates_and_a_share(tmp_path, on_device):
    rows = run_benchmark("input_bound.py", "--steps", "2", "--rounds", "3", "--set", f"train.data_on_device={on_device}",
                         cache=tmp_path / "cache")
    assert [row["what"] for row in rows] == ["input_only", "model_only", "fit"] * 3 + ["summary"]
    assert all(row["data_on_device"] is on_device for row in rows)
    assert all(row["images_per_s"] > 0 for row in rows[:-1])
    summary = rows[-1]
    for what in ("input_only", "model_only", "fit"):  # the median of the three rounds
        assert summary[f"{what}_images_per_s"] == sorted(r["images_per_s"] for r in rows if r["what"] == what)[1]
    assert summary["input_share"] == pytest.approx(1 - summary["fit_images_per_s"] / summary["model_only_images_per_s"])
    assert summary["bound_by"] == ("model" if summary["input_share"] < 0.1 else "input")


def test_train_speed_times_the_default_with_the_finer_check(tmp_path):
    rows = run_benchmark("train_speed.py", "--skip-baseline", "--check-every", "2", cache=tmp_path / "cache")
    (row,) = rows
    assert row["model"] == "mnist99" and row["epochs_run"] >= 1 and row["data_on_device"] is False
    assert row["val_checks"] >= 1  # checked every 2 steps (smoke: 8 steps an epoch), never reaching 99%
    assert row["seconds_to_val_99"] is None and 0 <= row["test_accuracy"] <= 1


@pytest.mark.slow
def test_ensemble_spread_scores_every_subset_of_the_matching_members(smoke_cfg, tmp_path, store, capsys):
    """Three members of one ensemble match; a train run with another seed (so another validation split)
    does not. The one 3-subset is the ensemble the ensemble stage logged."""
    import mlflow

    from mnist99.config import with_overrides
    from mnist99.stages import ensemble, train

    cfg = with_overrides(smoke_cfg, {"ensemble.size": 3, "tracking.system_metrics": False})
    ensemble.run(cfg)
    train.run(with_overrides(cfg, {"seed": 9}))
    from benchmarks import ensemble_spread  # in this process: the members are in its store already

    def spread(size: int) -> dict:
        argv = ["ensemble_spread.py", "-c", str(ROOT / "configs" / "smoke.yaml"), "--size", str(size),
                "--set", f"data.cache_dir={tmp_path / 'cache'}"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", argv)
            ensemble_spread.main()
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    capsys.readouterr()
    three, pairs = spread(3), spread(2)
    (logged,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string="tags.`mnist99.stage` = 'ensemble'")
    member_ids = set(logged.data.tags["mnist99.member_run_ids"].split(","))
    assert {m["run_id"] for m in three["members"]} == member_ids  # the seed-9 run is left out
    assert three["subsets"] == 1 and pairs["subsets"] == 3
    for split in ("val", "test"):
        assert three[f"{split}_accuracy"]["median"] == pytest.approx(logged.data.metrics[f"{split}_accuracy"])
        assert pairs[f"{split}_accuracy"]["min"] <= pairs[f"{split}_accuracy"]["median"] <= pairs[f"{split}_accuracy"]["max"]
