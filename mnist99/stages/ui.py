"""Stage ``ui``: the MLflow UI on the store the stages write, at http://127.0.0.1:5000 until Ctrl-C.

Reads: the MLflow store (``tracking.uri``, else $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db).
Writes: nothing. It runs ``mlflow server`` with the same backend URI and artifact root as the stages,
bound to this machine only; ``--host 0.0.0.0`` exposes it, but MLflow's security middleware then
refuses other host names unless you run ``mlflow server --allowed-hosts ...`` yourself.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mnist99 import tracking
from mnist99.config import Config
from mnist99.errors import InputError

# Cold start of `mlflow server` (imports, SQLite migrations) takes 5-15 s on a busy 2-core machine.
STARTUP_SECONDS = 90.0
STOP_SECONDS = 15.0


class Server(NamedTuple):
    url: str
    process: subprocess.Popen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: reachable from this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")


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


def check_store(uri: str) -> None:
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
    check_store(tracking.tracking_uri(cfg))
    check_port_free(host, port)
    # A session of its own, so a terminal's Ctrl-C reaches only us and we stop the server in order.
    process = subprocess.Popen(tracking.server_argv(cfg, host, port), start_new_session=True, **popen)
    try:
        server = Server(f"http://{host}:{port}", process)
        wait_until_up(server.url, process)
        yield server
    finally:
        stop(process)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Serve the UI until Ctrl-C or SIGTERM (then stop the server and return normally); returns the URL."""
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, not just us
    # Ctrl-C must stop us even when we were started from a background shell job, where SIGINT is
    # inherited as ignored and Python then installs no KeyboardInterrupt handler.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    url = f"http://{args.host}:{args.port}"
    try:
        with serving(cfg, args.host, args.port) as server:
            print(f"MLflow UI for {tracking.tracking_uri(cfg)}: {url}  (Ctrl-C stops it)", flush=True)
            code = server.process.wait()
            raise RuntimeError(f"the MLflow server stopped by itself with code {code}")
    except KeyboardInterrupt:
        print("ui: stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return {"url": url}
