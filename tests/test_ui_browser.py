"""End to end: a smoke pipeline into a fresh store, ``mnist99 ui`` on a free port, its REST API, and the
experiment and compare pages rendered by headless Chromium (screenshots kept in ``test-artifacts/``)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.ui_screenshots import (
    api,
    capture,
    chromium,
    chromium_paths,
    compare_url,
    experiment_id,
    experiment_url,
    is_top_level,
    use_ui_settings,
)
from mnist99.tracking.server import check_port_free, free_port, wait_until_up
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"


def smoke_pipeline(cfg) -> dict:
    """Two train runs (seeds 1-2) and a smoke ensemble with nested members; their outputs."""
    from argparse import Namespace

    from mnist99.config import with_overrides
    from mnist99.stages import ensemble, train

    out = {"train": [train.run(with_overrides(cfg, {"seed": seed})) for seed in (1, 2)]}
    # --force: train the members as nested runs (otherwise it reuses the three train runs above).
    out["ensemble"] = ensemble.run(cfg, Namespace(force=True))
    return out


def start_ui(port: int, log) -> subprocess.Popen:
    """``mnist99 ui`` as a user starts it (the store comes from $MLFLOW_TRACKING_URI, set by ``store``)."""
    return subprocess.Popen([sys.executable, "-m", "mnist99.cli", "ui", "--port", str(port)], cwd=ROOT,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def interrupt(process: subprocess.Popen) -> int:
    """Ctrl-C, as in a terminal; SIGKILL to its session if it does not exit within 60 s.

    `mnist99 ui` may itself wait twice ui.STOP_SECONDS for a slow server (TERM, then KILL).
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return process.wait(10)


def check_rest_api(url: str, exp_id: str, ran: dict) -> dict[str, dict]:
    """The runs the pipeline made, listed by the server with their metrics and nesting; {run name: run}."""
    runs = {r["info"]["run_name"]: r for r in api(url, "runs/search", {"experiment_ids": [exp_id]})["runs"]}
    for out in ran["train"]:
        run = next(r for r in runs.values() if r["info"]["run_id"] == out["run_id"])
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["test_accuracy"] == pytest.approx(out["test_accuracy"])
        assert {"val_accuracy", "train_seconds", "epochs_run"} <= metrics.keys()
        assert run["info"]["status"] == "FINISHED"
        files = {f["path"] for f in api(url, f"artifacts/list?run_id={out['run_id']}")["files"]}
        assert {"config.yaml", "learning_curves.png", "model"} <= files
    parent = ran["ensemble"]["run_id"]
    run = next(r for r in runs.values() if r["info"]["run_id"] == parent)
    assert {"test_accuracy", "ensemble_gain", "disagreement"} <= {m["key"] for m in run["data"]["metrics"]}
    children = [r for r in runs.values()
                if {"key": "mlflow.parentRunId", "value": parent} in r["data"].get("tags", [])]
    assert len(children) == len(ran["ensemble"]["member_run_ids"])
    return runs


def test_ui_serves_the_runs_to_a_real_browser(smoke_cfg, store, tmp_path):
    if chromium_paths() is None:
        missing = "no system Chromium: apt-get install chromium chromium-driver (.ci/run installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)  # CI must run this test, not skip it
        pytest.skip(missing)
    pytest.importorskip("selenium", reason="pip install selenium (in the dev extra)")
    ran = smoke_pipeline(smoke_cfg)
    names: list[str] = []
    shots = tmp_path / "screenshots"
    port = free_port()
    log_path = tmp_path / "ui.log"
    with log_path.open("w") as log:
        process = start_ui(port, log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process)
            exp_id = experiment_id(url, smoke_cfg.tracking.experiment)
            runs = check_rest_api(url, exp_id, ran)
            train_ids = [out["run_id"] for out in ran["train"]]
            names = [name for name, r in runs.items() if r["info"]["run_id"] in train_ids]
            top_level = [name for name, r in runs.items() if is_top_level(r)]
            with tempfile.TemporaryDirectory() as profile, chromium(Path(profile)) as driver:
                use_ui_settings(driver, url)
                page = capture(driver, experiment_url(url, exp_id), top_level, shots / "experiment.png")
                assert all(name in page for name in names)
                page = capture(driver, compare_url(url, exp_id, train_ids), names + ["test_accuracy"],
                               shots / "compare_runs.png")
                assert f"Comparing {len(train_ids)} Runs" in page
        finally:
            code = interrupt(process)
            if shots.exists():
                shutil.copytree(shots, ARTIFACTS / "ui_browser", dirs_exist_ok=True)
    output = log_path.read_text()
    assert code == 0, output[-2000:]
    assert f"MLflow UI for {store}: {url}" in output and "ui: stopped" in output
    check_port_free("127.0.0.1", port)  # the server went with it, not only the CLI
    assert len(names) == 2 and (shots / "compare_runs.png").stat().st_size > 10_000
