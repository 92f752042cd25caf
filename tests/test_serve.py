"""End to end: the champion, served by alias with ``mlflow models serve``, answers a real HTTP request on 127.0.0.1."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mnist99.delivery.ensemble import combine
from mnist99.tracking.server import free_port
from tests.conftest import SMOKE

pytestmark = [pytest.mark.slow, pytest.mark.integration]

START_TIMEOUT_S = 90


def wait_for_ping(server: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if the server exits, fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer {url} within {timeout:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it and the uvicorn it started), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


def test_champion_served_by_alias_answers_like_the_in_memory_ensemble(tmp_path, store, tiny_members):
    from mnist99 import tracking
    from mnist99.config import load_config
    from mnist99.stages import export

    cfg = load_config([SMOKE], [f"export.dir={tmp_path / 'exports'}"])
    tracking.setup(cfg)
    ensemble = combine(tiny_members, [0.5, 0.5])
    with tracking.stage_run(cfg, "ensemble", "ensemble-tiny") as active:
        tracking.log_model_file(ensemble)
    out = export.export_run(cfg, active.info.run_id)
    assert out["serve_uri"] == "models:/mnist99-ensemble@champion"  # the first export: no earlier champion
    digits = np.random.default_rng(2).integers(0, 256, (4, 28, 28)).astype("uint8")
    expected = ensemble.predict(digits, verbose=0)

    port = free_port()
    # The README's command where the job ran: the store named relative to that folder (MLflow's own default,
    # ./mlflow.db, is not the commands' store)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": "sqlite:///mlruns/mlflow.db"}
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", out["serve_uri"], "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_ping(server, f"http://127.0.0.1:{port}/ping", START_TIMEOUT_S, log)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": digits.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = np.array(json.load(response)["predictions"])
    finally:
        stop(server)
    assert predictions.shape == (4, 10)
    assert np.abs(predictions - expected).max() <= 1e-5
