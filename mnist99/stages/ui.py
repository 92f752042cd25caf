"""Stage ``ui``: the MLflow UI on the store the stages write, at http://127.0.0.1:5000 until Ctrl-C.

Reads: the MLflow store (``tracking.uri``, else $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db).
Writes: nothing. It runs ``mlflow server`` with the same backend URI and artifact root as the stages,
bound to this machine only; ``--host 0.0.0.0`` exposes it, but MLflow's security middleware then
refuses other host names unless you run ``mlflow server --allowed-hosts ...`` yourself.
"""
from __future__ import annotations

import argparse
import signal
from contextlib import AbstractContextManager

from mnist99 import tracking
from mnist99.config import Config
from mnist99.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: reachable from this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Serve the UI until Ctrl-C or SIGTERM (then stop the server and return normally); returns the URL."""
    uri = tracking.tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        raise InputError(f"the store {uri} is a tracking server, which serves its own UI: open {uri} in a browser")
    url = f"http://{args.host}:{args.port}"
    until_stopped("ui", tracking.serving(cfg, args.host, args.port),
                  [f"MLflow UI for {tracking.tracking_uri(cfg)}: {url}  (Ctrl-C stops it)"])
    return {"url": url}


def until_stopped(stage: str, serving: AbstractContextManager, lines: list[str]) -> None:
    """Enter ``serving`` (a server's context manager), say ``lines``, and wait until Ctrl-C or SIGTERM;
    leaving the context then stops the server in order.

    SIGTERM arrives as KeyboardInterrupt through the CLI (:func:`mnist99.cli.main`), so ``kill`` stops
    the server too, not just this process.
    """
    # Ctrl-C must stop us even when we were started from a background shell job, where SIGINT is
    # inherited as ignored and Python then installs no KeyboardInterrupt handler.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with serving as server:
            print("\n".join(lines), flush=True)
            code = server.process.wait()
            raise RuntimeError(f"the MLflow server stopped by itself with code {code}")
    except KeyboardInterrupt:
        print(f"{stage}: stopped", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous_int)
