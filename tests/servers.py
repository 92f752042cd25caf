"""The team tracking server for tests: PostgreSQL and ``mnist99 server`` as real processes on free ports.

Shared by the tests of independent workers (tests/test_scaling.py) and of tuning against the server:
use the session fixture ``team_server`` (tests/conftest.py), which yields a :class:`TeamServer`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

STOP_SECONDS = 60


class TeamServer(NamedTuple):
    url: str  # http://127.0.0.1:PORT, for MLFLOW_TRACKING_URI
    folder: Path  # server.dir: pgdata/, db-password, artifacts/
    log: Path  # what `mnist99 server` (and so mlflow server) printed


def require_postgres() -> None:
    """PostgreSQL's programs, else skip (a contributor's machine) or fail (CI, where ``make test`` installs them)."""
    from mnist99.errors import TrackingError
    from mnist99.tracking.postgres import binary

    try:
        for program in ("initdb", "postgres", "pg_isready"):
            binary(program)
        import psycopg  # noqa: F401
    except (TrackingError, ImportError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}: CI must run the team-server tests (make postgres, pip install -e '.[dev]')")
        pytest.skip(str(exc))


def env_for(url: str) -> dict[str, str]:
    """A worker's environment: this one, logging to ``url``."""
    return {**os.environ, "MLFLOW_TRACKING_URI": url}


@contextlib.contextmanager
def team_server(parent: Path | None = None) -> Iterator[TeamServer]:
    """``mnist99 server`` on free ports, with its folder in a fresh directory every user can traverse
    (as root, PostgreSQL runs as the user ``postgres``); stopped with SIGTERM at the end, which must
    stop it cleanly (exit code 0), and the directory removed."""
    from mnist99.tracking.server import free_port, wait_until_up

    root = Path(tempfile.mkdtemp(prefix="mnist99-server-", dir=parent))
    root.chmod(0o755)
    folder, log, port = root / "server", root / "server.log", free_port()
    argv = [sys.executable, "-m", "mnist99.cli", "server", "--port", str(port), "--set", f"server.dir={folder}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, timeout=180)
        yield TeamServer(url, folder, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        assert code == 0, f"mnist99 server exited with {code} on SIGTERM:\n{log.read_text()[-3000:]}"
        shutil.rmtree(root, ignore_errors=True)
