"""``mlflow server`` and ``mlflow models serve`` as child processes: started on the stages' store, bound to
127.0.0.1 by default, answering before they are used, stopped in order (the ``ui`` stage, the UI
screenshots, the inference benchmark, the tests)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mnist99.config import Config
from mnist99.errors import InputError
from mnist99.tracking.store import artifact_root, tracking_uri

# Cold start of `mlflow server` (imports, SQLite migrations) takes 5-15 s on a busy 2-core machine.
STARTUP_SECONDS = 90.0
STOP_SECONDS = 15.0


class Server(NamedTuple):
    url: str
    process: subprocess.Popen


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for tests and scripts that start their own server)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Refuse a busy port up front: otherwise the health check could be answered by whatever holds it.

    SO_REUSEADDR as uvicorn sets it: a port left in TIME_WAIT by a server that just stopped is free.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot serve on {host}:{port}: {exc.strerror}; choose another --port") from None


def require_store(uri: str) -> None:
    """A SQLite store must exist: ``mlflow server`` would otherwise create an empty one and show nothing."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise InputError(f"no MLflow store at {uri}: run a stage first (e.g. `mnist99 train`), or point "
                         "tracking.uri / $MLFLOW_TRACKING_URI at an existing store")


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = STARTUP_SECONDS) -> None:
    """Poll ``<url>/health`` until it answers 200; fail as soon as ``process`` exits, or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {process.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # not listening yet, or still starting
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the MLflow server did not answer at {url}/health within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> None:
    """SIGTERM (``mlflow server`` forwards it to uvicorn); SIGKILL to its whole session if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session (see `serving`): uvicorn included
        process.wait(timeout)


@contextlib.contextmanager
def serving(cfg: Config, host: str = "127.0.0.1", port: int = 5000, **popen) -> Iterator[Server]:
    """``mlflow server`` on ``cfg``'s store, answering; stopped on exit (``popen``: e.g. ``stdout=``)."""
    require_store(tracking_uri(cfg))
    with answering(server_argv(cfg, host, port), host, port, **popen) as server:
        yield server


@contextlib.contextmanager
def model_serving(cfg: Config, model_uri: str, host: str = "127.0.0.1", port: int | None = None,
                  **popen) -> Iterator[Server]:
    """``mlflow models serve`` of ``model_uri`` (``models:/`` and ``runs:/`` against ``cfg``'s store, or a
    local MLflow model folder) in this environment, answering ``POST /invocations``; stopped on exit.

    MLflow starts uvicorn through ``bash -c``: this interpreter's ``bin/`` goes first on PATH so that
    the one beside this MLflow is found (else the server exits with 127).
    """
    port = port or free_port(host)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(cfg),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", host, "-p", str(port)]
    with answering(argv, host, port, env=env, **popen) as server:
        yield server


@contextlib.contextmanager
def answering(argv: list[str], host: str, port: int, **popen) -> Iterator[Server]:
    """The server ``argv`` starts on ``host:port``, once it answers ``/health``; stopped on exit."""
    check_port_free(host, port)
    # A session of its own, so a terminal's Ctrl-C reaches only us and we stop the server in order.
    process = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        server = Server(f"http://{host}:{port}", process)
        wait_until_up(server.url, process)
        yield server
    finally:
        stop(process)


def server_argv(cfg: Config, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow server`` on the stages' store and artifact root, with one worker (MLflow's 4 crowd a 2-core machine)."""
    uri = tracking_uri(cfg)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root(uri)
    return argv + ["--default-artifact-root", root] if root else argv
