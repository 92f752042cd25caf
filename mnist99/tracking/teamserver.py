"""The team tracking server: ``mlflow server`` on a private PostgreSQL cluster, serving the artifacts,
with MLflow's basic-auth app whenever it listens beyond this machine.

Everything it keeps lives in ``server.dir``: the cluster, its generated password, the basic-auth
users and (unless ``server.artifacts`` names an S3 URI) the artifacts. Secrets reach the child
processes through the environment and 0600 files, never through argv, so ``ps`` and the server's
log show none of them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mnist99.config import Config
from mnist99.errors import InputError
from mnist99.tracking import postgres
from mnist99.tracking.server import Server, answering, free_port

ADMIN_USER_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"  # MLflow's own variables for the basic-auth app's first admin
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DEFAULT_ADMIN = "admin"


class Auth(NamedTuple):
    user: str
    env: dict[str, str]  # for the server process: the admin's credentials, the auth config and the CSRF key


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def read_credentials(path: Path | None) -> tuple[str, str] | None:
    """The admin's ``(user, password)``: from ``path`` (one line ``user:password``), else from
    $MLFLOW_AUTH_ADMIN_PASSWORD (and $MLFLOW_AUTH_ADMIN_USERNAME, default ``admin``); None when neither is set."""
    if path is not None:
        try:
            user, sep, password = path.read_text().strip().partition(":")
        except OSError as exc:
            raise InputError(f"cannot read the credentials file {path}: {exc.strerror}") from None
        if not sep or not user or not password:
            raise InputError(f"credentials file {path}: expected one line user:password")
        return user, password
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    return (os.environ.get(ADMIN_USER_ENV) or DEFAULT_ADMIN, password) if password else None


def auth_for(host: str, folder: Path, credentials: tuple[str, str] | None) -> Auth | None:
    """Basic auth for a server on ``host``: required beyond loopback (InputError without credentials),
    used on loopback too when credentials are given; None: no authentication."""
    if credentials is None:
        if is_loopback(host):
            return None
        raise InputError(f"--host {host} is reachable from other machines: it needs MLflow basic auth; set "
                         f"{ADMIN_PASSWORD_ENV} (and {ADMIN_USER_ENV}) or pass --credentials FILE (user:password)")
    if importlib.util.find_spec("flask_wtf") is None:
        raise InputError("MLflow's basic-auth app needs Flask-WTF: pip install 'mnist99[server]'")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{(folder / 'basic_auth.db').resolve()}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    user, password = credentials
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config.resolve()), ADMIN_USER_ENV: user, ADMIN_PASSWORD_ENV: password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(folder / "flask-secret")}
    return Auth(user, env)


def _secret(path: Path) -> str:
    """A random key kept in ``path`` (0600), the same on every start (CSRF tokens survive restarts)."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def artifacts_destination(cfg: Config) -> str:
    """``server.artifacts`` (a URI such as ``s3://bucket/prefix``), else the folder ``<server.dir>/artifacts``."""
    if cfg.server.artifacts:
        return cfg.server.artifacts
    folder = Path(cfg.server.dir) / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve().as_uri()


def server_argv(backend_uri: str, artifacts: str, host: str, port: int, auth: Auth | None,
                allowed_hosts: str | None = None) -> list[str]:
    """``mlflow server`` on ``backend_uri`` with served artifacts; one worker (four crowd a 2-core machine);
    ``allowed_hosts``: Host headers accepted besides MLflow's default (localhost, private IPs)."""
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", "1"]
    if allowed_hosts:  # MLflow's flag replaces its default list: keep it, and add these
        from mlflow.server.security_utils import get_default_allowed_hosts

        argv += ["--allowed-hosts", ",".join([*get_default_allowed_hosts(), allowed_hosts])]
    return argv + ["--app-name", "basic-auth"] if auth else argv


@contextlib.contextmanager
def serving(cfg: Config, host: str, port: int, auth: Auth | None, allowed_hosts: str | None = None,
            **popen) -> Iterator[Server]:
    """PostgreSQL (its database created on first use) and ``mlflow server`` on it, answering at
    ``http://host:port``; both stopped on exit, the server first."""
    folder = Path(cfg.server.dir)
    artifacts = artifacts_destination(cfg)
    with postgres.running(folder, free_port(), cfg.server.database) as db:
        env = {**os.environ, **db.env, **(auth.env if auth else {})}
        argv = server_argv(db.uri, artifacts, host, port, auth, allowed_hosts)
        with answering(argv, host, port, env=env, **popen) as server:
            yield server
