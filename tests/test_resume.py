"""Reliability: training killed with SIGKILL mid-run resumes into the same MLflow run on the next call."""
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from tests.conftest import ROOT, SMOKE, require_real_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigkill_then_rerun_resumes_the_same_run(tmp_path, store):
    require_real_data()
    epochs = 5
    cmd = [sys.executable, "-m", "mnist99.cli", "train", "-c", str(SMOKE),
           "--set", f"train.epochs={epochs}", "--set", "data.train_limit=2000",
           "--set", "train.early_stopping.enabled=false",
           "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"train.checkpoint_dir={tmp_path / 'ckpt'}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    client = mlflow.MlflowClient(store)

    def train_runs():
        exps = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(exps, "tags.`mnist99.stage` = 'train'") if exps else []

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # kill once two epochs are logged and the third is under way
            runs = train_runs()
            if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed")
            time.sleep(0.3)
        else:
            pytest.fail("no epoch was logged within 240 s")
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = train_runs()[0]
    assert killed.info.status == "RUNNING"  # SIGKILL cannot be caught: the rerun must pick it up
    # The rerun differs only in sections the model does not learn from, as an ensemble grown after a kill does.
    rerun = [*cmd, "--set", "ensemble.size=5", "--set", "evaluate.robustness=false"]
    done = subprocess.run(rerun, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming interrupted run" in done.stdout
    runs = train_runs()
    assert len(runs) == 1 and runs[0].info.run_id == killed.info.run_id
    assert runs[0].info.status == "FINISHED"
    assert int(runs[0].data.tags["mnist99.resumed_at_epoch"]) >= 3  # continued, did not start over
    assert runs[0].data.metrics["epochs_run"] == epochs
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # contiguous, none twice
    assert not any((tmp_path / "ckpt").iterdir())  # a finished job leaves no checkpoints
    from mnist99.delivery.loading import load_ensemble

    model = load_ensemble(f"runs:/{killed.info.run_id}/model/model.keras")
    assert model.count_params() > 0
