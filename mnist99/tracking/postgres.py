"""A private PostgreSQL cluster for the team tracking server: created in a folder on first use, started
as a child process on 127.0.0.1, stopped with it.

Why a cluster of our own: no service is assumed to be running, and the server's data then lives in
one folder beside its artifacts. The database password is generated once into ``db-password``
(0600) and reaches libpq through a ``PGPASSFILE``, so the backend URI that MLflow receives, logs
and shows carries no credentials at all.
PostgreSQL refuses to run as root: as root the cluster belongs to the system user ``postgres``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mnist99.errors import TrackingError

USER = "mnist99"  # the database role MLflow connects as (no password in its URI)
SYSTEM_USER = "postgres"  # who runs the cluster when we are root
STARTUP_SECONDS = 60.0
STOP_SECONDS = 30.0


class Database(NamedTuple):
    uri: str  # postgresql://mnist99@127.0.0.1:PORT/NAME: no password (it is in the PGPASSFILE)
    env: dict[str, str]  # what a client process needs besides the URI (PGPASSFILE)
    process: subprocess.Popen


def binary(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise TrackingError(f"PostgreSQL's {name} is not installed: apt-get install postgresql (or see docs/SCALING.md)")
    return found


def _owner() -> dict:
    """Popen arguments that run a program as the cluster's owner (ourselves, or ``postgres`` when root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise TrackingError(f"PostgreSQL refuses to run as root and there is no user {SYSTEM_USER!r}") from None
    return {"user": SYSTEM_USER, "group": SYSTEM_USER}


def _run(argv: list[str], what: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, **_owner())
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        raise TrackingError(f"PostgreSQL {what} failed: {detail}")


def initialise(folder: Path) -> None:
    """Create the cluster in ``folder/pgdata`` (password auth, the role ``mnist99``) unless it exists."""
    data = folder / "pgdata"
    if (data / "PG_VERSION").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    password = folder / "db-password"
    password.write_text(secrets.token_urlsafe(24) + "\n")
    password.chmod(0o600)
    owner = _owner()
    if owner:  # the cluster's owner must reach and own its folder and read the password once
        if _unreachable(folder):
            raise TrackingError(f"user {SYSTEM_USER} cannot reach {folder}: run as a normal user, or set "
                                "server.dir to a folder every user can traverse")
        data.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(data, SYSTEM_USER, SYSTEM_USER)
        shutil.chown(password, SYSTEM_USER, SYSTEM_USER)
    try:
        _run([binary("initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={password}",
              "--encoding=UTF8", "--no-instructions"], "initdb")
    finally:
        if owner:
            shutil.chown(password, 0, 0)


def _unreachable(folder: Path) -> bool:
    """Whether the system user ``postgres`` lacks execute permission on a folder above ``folder``."""
    for parent in [folder.resolve(), *folder.resolve().parents]:
        if not parent.stat().st_mode & 0o001:
            return True
    return False


def _passfile(folder: Path, port: int) -> Path:
    """``folder/pgpass`` (libpq's format, 0600) for this start's port."""
    password = (folder / "db-password").read_text().strip()
    path = folder / "pgpass"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(f"127.0.0.1:{port}:*:{USER}:{password}\n")
    return path


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TrackingError(f"PostgreSQL exited with code {process.returncode} on start (see its log)")
        ready = subprocess.run([binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TrackingError(f"PostgreSQL did not accept connections on 127.0.0.1:{port} within {timeout:.0f} s")


def create_database(port: int, name: str, env: dict[str, str]) -> None:
    """``CREATE DATABASE name`` unless it exists, through psycopg 3: SQLAlchemy 2.1's driver for
    ``postgresql://`` URIs, so the one MLflow uses."""
    try:
        import psycopg
    except ImportError:
        raise TrackingError("mnist99 server needs psycopg, PostgreSQL's driver: pip install 'mnist99[server]'") from None
    os.environ.update(env)  # libpq reads PGPASSFILE from this process's environment
    with psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True) as db:
        if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            db.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def stop(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> None:
    """SIGINT: PostgreSQL's fast shutdown (ends sessions, checkpoints, exits); SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(2)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def running(folder: Path, port: int, database: str) -> Iterator[Database]:
    """The cluster in ``folder`` (created on first use) on 127.0.0.1:``port``, with ``database`` in it; stopped on exit.

    Its log goes to ``folder/postgres.log``.
    """
    folder = folder.resolve()
    initialise(folder)
    log = open(folder / "postgres.log", "ab")
    argv = [binary("postgres"), "-D", str(folder / "pgdata"), "-h", "127.0.0.1", "-p", str(port), "-k", ""]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_owner())
    try:
        _wait_ready(port, process)
        env = {"PGPASSFILE": str(_passfile(folder, port))}
        create_database(port, database, env)
        yield Database(f"postgresql://{USER}@127.0.0.1:{port}/{database}", env, process)
    finally:
        stop(process)
        log.close()
