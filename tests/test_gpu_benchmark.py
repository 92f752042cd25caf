"""benchmarks/gpu.py: mnist99's recipe on any Keras backend (the lent GPU machines have JAX, no TensorFlow)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_real_data, run_benchmark_main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_config_and_recipe_load_without_tracking_tuning_or_tf_data():
    """What benchmarks/gpu.py imports must not pull in MLflow, KerasTuner or the tf.data modules."""
    code = (
        "import sys\n"
        "from mnist99.config import load_config\n"
        "load_config(['configs/default.yaml', 'configs/gpu.yaml'])\n"
        "import mnist99.data.augment, mnist99.data, mnist99.delivery.ensemble, mnist99.training.callbacks\n"
        "import mnist99.training.recipe\n"
        "print([m for m in ('mlflow', 'keras_tuner', 'mnist99.data.batches', 'mnist99.training.fit',"
        " 'mnist99.tracking') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_gpu_benchmark_trains_scores_and_times_an_ensemble(tmp_path):
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    run_benchmark_main("gpu.py", "-c", "configs/smoke.yaml", "--baseline-epochs", "1", "--check-every", "2",
                       "--out", str(out), "--set", f"data.cache_dir={tmp_path / 'cache'}")
    rows = {row["result"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == ["baseline", "member_1", "member_2", "ensemble", "inference"]
    assert rows["member_1"]["seed"] == 1 and rows["member_2"]["seed"] == 2
    assert rows["member_1"]["val_checks"] > 0  # the every-2-steps check ran
    ensemble = rows["ensemble"]
    assert ensemble["members"] == 2
    assert ensemble["member_2_test_accuracy"] == rows["member_2"]["test_accuracy"]
    assert 0.0 <= ensemble["test_accuracy"] <= 1.0 and 0.0 <= ensemble["disagreement"] <= 1.0
    assert rows["inference"]["images_per_s"] > 0 and rows["inference"]["latency_ms_p50"] > 0


@pytest.mark.slow
def test_gpu_benchmark_fits_members_into_a_budget(tmp_path):
    """``--set train.budget``: a probe, a plan (one JSON line), members of the planned epochs under their
    deadlines, the share of the budget used; a budget with the baseline is refused in one line."""
    require_real_data()
    out = tmp_path / "gpu.jsonl"
    common = ["-c", "configs/smoke.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.budget=30s"]
    printed = run_benchmark_main("gpu.py", *common, "--skip-baseline", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["result"] for row in rows][0] == "plan" and [row["result"] for row in rows][-2:] == ["ensemble", "inference"]
    plan, members, ensemble = rows[0], rows[1:-2], rows[-2]
    assert plan["budget"] == 30 and len(members) == len(plan["fit_epochs"]) == ensemble["members"]
    # each member trains for the epochs expected to fit (off TensorFlow a deadline cannot compress its schedule)
    assert [m["planned_epochs"] for m in members] == plan["fit_epochs"]
    assert all(m["epochs_run"] <= m["planned_epochs"] for m in members)
    assert ensemble["budget_seconds"] == 30 and ensemble["budget_used"] == pytest.approx(ensemble["wall_seconds"] / 30)
    assert "gpu.py: budget 30s: " in printed and "% of it)" in printed and " used (" in printed
    with pytest.raises(SystemExit, match="a budget times the ensemble alone; add --skip-baseline"):
        run_benchmark_main("gpu.py", *common)
