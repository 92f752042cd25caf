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
