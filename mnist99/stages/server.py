"""Stage ``server``: a tracking server for a team, on PostgreSQL with served artifacts, until Ctrl-C.

Reads and writes: ``server.dir`` (default mlruns/server): a PostgreSQL cluster created there on first
use, its database ``server.database``, and the artifacts (or ``server.artifacts``, an S3 URI).
Workers on this or other machines log to it with ``MLFLOW_TRACKING_URI=http://HOST:PORT`` and run any
stage unchanged, e.g. ``mnist99 ensemble --member 2`` (docs/SCALING.md). Bound to 127.0.0.1 by
default; any other ``--host`` needs MLflow's basic auth: the admin's password from
$MLFLOW_AUTH_ADMIN_PASSWORD (user $MLFLOW_AUTH_ADMIN_USERNAME, default admin) or ``--credentials FILE``
(one line user:password), never from the command line. MLflow answers Host headers of localhost
and private IPs; ``--allowed-hosts`` adds the names workers use. Needs ``pip install 'mnist99[server]'`` and
PostgreSQL's programs (Debian: apt-get install postgresql); no running PostgreSQL service is used.
"""
from __future__ import annotations

import argparse
import socket
from pathlib import Path

from mnist99.config import Config
from mnist99.stages.ui import until_stopped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; any other needs basic auth)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    parser.add_argument("--allowed-hosts", metavar="HOSTS",
                        help="Host headers MLflow accepts besides localhost and private IPs, comma-separated "
                             "(e.g. mlflow.lab.example,gpu-box:5000): the names workers use to reach this server")
    parser.add_argument("--credentials", type=Path, metavar="FILE",
                        help="file with one line user:password, the basic-auth admin (else $MLFLOW_AUTH_ADMIN_PASSWORD)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Serve until Ctrl-C or SIGTERM, then stop the server and PostgreSQL in order; returns the URL."""
    from mnist99.tracking import teamserver

    folder = Path(cfg.server.dir)
    auth = teamserver.auth_for(args.host, folder, teamserver.read_credentials(args.credentials))
    url = f"http://{args.host}:{args.port}"
    reach = f"http://{socket.gethostname()}:{args.port}" if args.host in ("0.0.0.0", "::") else url
    access = (f"authentication: MLflow basic auth, admin user {auth.user!r}; workers set MLFLOW_TRACKING_USERNAME "
              "and MLFLOW_TRACKING_PASSWORD" if auth else "authentication: none (this machine only)")
    lines = [f"MLflow tracking server on PostgreSQL ({folder / 'pgdata'}), artifacts in "
             f"{teamserver.artifacts_destination(cfg)}: {url}  (Ctrl-C stops it)",
             access, f"workers: export MLFLOW_TRACKING_URI={reach}"]
    serving = teamserver.serving(cfg, args.host, args.port, auth, allowed_hosts=args.allowed_hosts)
    until_stopped("server", serving, lines)
    return {"url": url}
