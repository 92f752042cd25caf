"""Where runs are stored: the tracking URI, the experiment, and the command that serves the store.

A SQLite store in ``./mlruns`` keeps its artifacts beside the database, so the whole store is one folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import mlflow
import sqlalchemy.exc

from mnist99.config import Config
from mnist99.errors import TrackingError, first_line

DEFAULT_STORE = Path("mlruns")
EXPERIMENT_DESCRIPTION = "mnist99 runs: train, ensemble, evaluate, export (one run per stage)."
# MLflow 3's UI opens an experiment on its GenAI trace overview unless told it holds model training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

def tracking_uri(cfg: Config) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``./mlruns`` (MLflow 3 has no file store by default)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{default_path()}"


def default_path() -> Path:
    """``./mlruns/mlflow.db``, absolute: the SQLite store every ``mnist99`` command uses unless told otherwise."""
    return (DEFAULT_STORE / "mlflow.db").resolve()


def use_default_store_unless_chosen() -> Path | None:
    """Point a Python session that chose no store at ``./mlruns/mlflow.db`` before it resolves a ``runs:/``
    or ``models:/`` URI, as the commands do.

    MLflow's own default is ``./mlflow.db``, which it would create empty, so ``mnist99.load_ensemble(
    "models:/mnist99-ensemble@champion")`` typed where ``mnist99 run`` ran would find no model and leave a
    stray database. A URI the user chose (``$MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``) wins.

    Returns the path of the store it looked for when the folder holds none (creating nothing, MLflow left
    as it was), else None.
    """
    if mlflow.tracking.is_tracking_uri_set():
        return None
    path = default_path()
    if not path.is_file():
        return path
    point_mlflow_at(f"sqlite:///{path}")
    return None


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database so the whole store is one folder."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent.resolve().as_uri()
    return None


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<store>.lock`` (an OS file lock) while a SQLite store is opened, so one process at a time
    creates and migrates it: two stages starting at once on a new store otherwise collide in
    MLflow's schema migration ("duplicate column name"). Later writes are serialised by SQLite itself."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError as exc:
        raise TrackingError(f"cannot open the MLflow store {uri}: {exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_store(uri: str) -> None:
    """Open a SQLite store once with sqlite3 (creating its folder): an unusable path fails here in one
    line, where MLflow itself retries for about 100 s and then ends in a traceback."""
    path = _sqlite_path(uri)
    if path is None:
        return
    if path.is_dir():
        raise TrackingError(f"cannot open the MLflow store {uri}: {path} is a folder, expected a SQLite file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot open the MLflow store {uri}: {exc}") from None
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise TrackingError(f"cannot open the MLflow store {uri}: {exc}") from None


def setup(cfg: Config, experiment: str | None = None, description: str = EXPERIMENT_DESCRIPTION) -> str:
    """Point MLflow at the store and the experiment (created with ``description`` if new); returns its id.

    Raises TrackingError, one line naming the store, when it cannot be opened or written.
    """
    uri = tracking_uri(cfg)
    check_store(uri)
    with _store_lock(uri):
        try:
            return _use_experiment(uri, experiment or cfg.tracking.experiment, description)
        except (mlflow.exceptions.MlflowException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise TrackingError(f"MLflow store {uri}: {first_line(exc)}") from None


def point_mlflow_at(uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect: MLflow 3 also writes ``$MLFLOW_TRACKING_URI``,
    which :func:`tracking_uri` reads as the user's choice, so a later config without ``tracking.uri`` in
    the same process (a second store: ensemble_spread's pools) would open the previous config's store."""
    user = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if user is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user


def _use_experiment(uri: str, name: str, description: str) -> str:
    point_mlflow_at(uri)
    tags = {"mlflow.note.content": description, **EXPERIMENT_KIND}
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        root = artifact_root(uri)
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None, tags=tags)
        except mlflow.exceptions.MlflowException as exc:
            # Workers started at once against a tracking server (no file lock reaches there) may all find no
            # experiment; the first create wins and the others use what it made.
            found = mlflow.get_experiment_by_name(name) if exc.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if found is None:
                raise
        else:
            mlflow.set_experiment(experiment_id=exp_id)
            return exp_id
    for key, value in tags.items():  # an existing experiment without these tags gets them
        if key not in found.tags:
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    mlflow.set_experiment(experiment_id=found.experiment_id)
    return found.experiment_id


def ui_command(cfg: Config) -> str:
    """The command that opens this store in the MLflow UI (for messages); a tracking server is its own UI."""
    uri = tracking_uri(cfg)
    return uri if uri.startswith(("http://", "https://")) else f"mnist99 ui --set tracking.uri={uri}"


def use_store(cfg: Config) -> None:
    """Resolve ``runs:/`` and ``models:/`` URIs against the configured store, creating nothing in it."""
    point_mlflow_at(tracking_uri(cfg))


def current_uri() -> str:
    """The tracking URI this process logs to (what another process needs to log into the same store)."""
    return mlflow.get_tracking_uri()


def use_experiment_of(run) -> None:
    """Make ``run``'s experiment the current one, so that resuming the run logs where it lives."""
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
