"""The MLflow boundary: store location, stage runs that end FINISHED/FAILED/KILLED, and logging helpers.

Models, data and augmentation code never import mlflow; stages go through this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import sqlalchemy.exc
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from mnist99 import __version__
from mnist99.config import Config, flatten, to_yaml
from mnist99.errors import ModelLoadError, TrackingError

DEFAULT_STORE = Path("mlruns")
EXPERIMENT_DESCRIPTION = "mnist99 runs: train, ensemble, evaluate, export (one run per stage)."
# MLflow 3's UI opens an experiment on its GenAI trace overview unless told it holds model training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
CACHE_KEY_TAG = "mnist99.cache_key"  # what a stage run's result depends on (see stages/run.py)


def tracking_uri(cfg: Config) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``./mlruns`` (MLflow 3 has no file store by default)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def _artifact_root(uri: str) -> str | None:
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
            raise TrackingError(f"MLflow store {uri}: {_first_line(exc)}") from None


def _use_experiment(uri: str, name: str, description: str) -> str:
    mlflow.set_tracking_uri(uri)
    tags = {"mlflow.note.content": description, **EXPERIMENT_KIND}
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        for key, value in tags.items():  # stores made before these tags existed get them too
            if key not in found.tags:
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    root = _artifact_root(uri)
    exp_id = mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None, tags=tags)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU:{details.get('device_name', gpus[0].name)}"
    return "CPU"


def base_tags(stage: str) -> dict[str, str]:
    tags = {"mnist99.stage": stage, "mnist99.version": __version__, "mnist99.device": device_name()}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


@contextlib.contextmanager
def stage_run(cfg: Config, stage: str, run_name: str, tags: dict[str, str] | None = None,
              nested: bool = False, run_id: str | None = None,
              parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for a stage: FINISHED on success, FAILED (error logged) on an exception, KILLED on Ctrl-C.

    ``run_id`` resumes an existing run (after a crash) instead of starting a new one.
    ``parent_run_id`` nests the run under a run that another process holds open (a search's workers).
    """
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested,
                           parent_run_id=None if run_id else parent_run_id,
                           tags={**base_tags(stage), **(tags or {})},
                           log_system_metrics=cfg.tracking.system_metrics)  # a bool: MLflow's env var is not consulted
    try:
        yield run
    except KeyboardInterrupt as exc:
        mlflow.set_tag("mnist99.error", f"interrupted ({exc or 'Ctrl-C'})")
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        mlflow.set_tag("mnist99.error", message[:4000])
        mlflow.log_text(message + "\n\n" + traceback.format_exc(), "error.txt")
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_config(cfg: Config) -> None:
    """The resolved config: every dotted key as a param, and the YAML as ``config.yaml``."""
    params = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(cfg).items()}
    mlflow.log_params(params)
    mlflow.log_text(to_yaml(cfg), "config.yaml")


def log_dataset(splits, context_prefix: str = "") -> None:
    """Each split as an MLflow dataset input (with its digest), its size, and ``class_counts.json``.

    The per-class counts go to one artifact, not 30 metrics that would crowd the UI's compare view.
    """
    import numpy as np

    counts = {}
    for split, (x, y) in {"train": (splits.x_train, splits.y_train), "val": (splits.x_val, splits.y_val),
                          "test": (splits.x_test, splits.y_test)}.items():
        ds = mlflow.data.from_numpy(x, targets=y, source=splits.source, name=f"mnist-{split}")
        mlflow.log_input(ds, context=f"{context_prefix}{split}")
        counts[split] = {str(d): int(c) for d, c in enumerate(np.bincount(y, minlength=10))}
    mlflow.log_dict(counts, "class_counts.json")
    mlflow.log_metrics({f"{k}_size": v for k, v in splits.counts().items()})
    mlflow.set_tag("mnist99.data_digest", splits.digest)


def child_runs(parent_run_id: str, tag: str) -> dict[str, str]:
    """The runs nested under ``parent_run_id``, by their value of ``tag`` (e.g. trial id -> run id).

    The store itself is the map, so a resumed search in any process finds the runs it already made.
    """
    parent = mlflow.get_run(parent_run_id)
    runs = mlflow.search_runs([parent.info.experiment_id], output_format="list", order_by=["attributes.start_time"],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    found: dict[str, str] = {}
    for run in runs:
        found.setdefault(run.data.tags.get(tag, ""), run.info.run_id)
    found.pop("", None)
    return found


def update_run(run_id: str, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> None:
    """Tag and score a run that is not the active one (e.g. a trial after its run ended)."""
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))


def log_figure(fig, path: str) -> None:
    mlflow.log_figure(fig, path)


def log_model_file(model: keras.Model, artifact_path: str = "model") -> None:
    """Save ``model`` as ``.keras`` into a temporary folder and log it under ``artifact_path``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        mlflow.log_artifact(str(path), artifact_path)


def log_summary(model: keras.Model) -> None:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line))
    mlflow.log_text("\n".join(lines), "model_summary.txt")
    mlflow.log_param("model.params", model.count_params())


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)


def set_tag(key: str, value: str) -> None:
    """Tag the active run (e.g. ``mnist99.overfit_epoch``, set by the diagnostics callback)."""
    mlflow.set_tag(key, value)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def metric_history(run_id: str, key: str) -> list[float]:
    """The values a run logged for ``key``, in step order (empty if it logged none)."""
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def unfinished_run(run_id: str | None) -> str | None:
    """``run_id`` if the store holds that run and it did not finish (so it can be resumed), else None."""
    if not run_id:
        return None
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run_id if run.info.status != "FINISHED" else None


def last_step(run_id: str, key: str = "loss") -> int:
    """The highest step a run logged for ``key`` (0 if none): where a resumed run's curves continue."""
    return max((m.step for m in mlflow.MlflowClient().get_metric_history(run_id, key)), default=0)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs ``loss, accuracy, val_loss, val_accuracy, lr`` and ``epoch_seconds`` with step = epoch.

    ``logged_until``: epochs up to this step were logged before an interruption; a resumed run
    that repeats one of them (killed after logging, before its backup) does not log it twice.
    """

    def __init__(self, logged_until: int = 0) -> None:
        super().__init__()
        self.logged_until = logged_until
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        metrics["lr"] = current_lr(self.model.optimizer)
        metrics["epoch_seconds"] = time.perf_counter() - self._t0
        if epoch + 1 > self.logged_until:
            mlflow.log_metrics(metrics, step=epoch + 1)


def current_lr(optimizer) -> float:
    """The learning rate the optimiser is using now (schedules evaluated at the current step)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def server_argv(cfg: Config, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow server`` on the stages' store and artifact root, with one worker (MLflow's 4 crowd a 2-core machine)."""
    uri = tracking_uri(cfg)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", "1"]
    root = _artifact_root(uri)
    return argv + ["--default-artifact-root", root] if root else argv


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def download(uri: str) -> Path:
    """The local path of an MLflow URI (``runs:/<id>/<path>``, ``models:/<name>/<version|latest>``).

    Raises ModelLoadError naming the URI when MLflow cannot resolve it (unknown run, model or version).
    """
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise ModelLoadError(f"cannot fetch {uri}: {_first_line(exc)}") from None


def finished_run(run_id: str) -> mlflow.entities.Run:
    """The run ``run_id``; ModelLoadError naming it when the store has no such run or it did not finish."""
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelLoadError(f"no MLflow run {run_id!r}: {_first_line(exc)}") from None
    if run.info.status != "FINISHED":
        raise ModelLoadError(f"run {run_id} is {run.info.status}, expected a FINISHED run")
    return run


def latest_finished_run(stage: str) -> mlflow.entities.Run | None:
    """The newest FINISHED run of ``stage`` (tag ``mnist99.stage``) in the current experiment, if any."""
    runs = mlflow.search_runs(filter_string=f"tags.`mnist99.stage` = '{stage}' AND attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def cached_run(stage: str, cache_key: str) -> mlflow.entities.Run | None:
    """The newest FINISHED run of ``stage`` in the current experiment tagged ``mnist99.cache_key = cache_key``."""
    runs = mlflow.search_runs(filter_string=f"tags.`mnist99.stage` = '{stage}' AND tags.`{CACHE_KEY_TAG}` = "
                                            f"'{cache_key}' AND attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def keras_signature(model: keras.Model) -> ModelSignature:
    """The tensor signature of a one-input, one-output Keras model, with a free batch dimension."""
    def spec(tensor) -> TensorSpec:
        return TensorSpec(np.dtype(tensor.dtype), (-1, *tensor.shape[1:]))

    return ModelSignature(inputs=Schema([spec(model.inputs[0])]), outputs=Schema([spec(model.outputs[0])]))


def log_registered_model(model: keras.Model, registered_name: str, tags: dict[str, str],
                         name: str = "model") -> str:
    """Log ``model`` as an MLflow Keras model with its signature, register it, tag the new version; returns it.

    Requirements are pinned to the running versions: letting MLflow infer them reloads the model in a
    subprocess (15 s on 2 cores). No ``input_example=``: in MLflow 3.17.2 it raises FileNotFoundError
    (the example is written before the model folder exists), so callers log the example as an artifact.
    """
    requirements = [f"{pkg}=={metadata.version(pkg)}" for pkg in ("mlflow", "keras", "tensorflow", "numpy")]
    info = mlflow.keras.log_model(model, name=name, signature=keras_signature(model),
                                  registered_model_name=registered_name, pip_requirements=requirements)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version


def log_dict(data: dict, path: str) -> None:
    mlflow.log_dict(data, path)


def ui_command(cfg: Config) -> str:
    """The command that opens this store in the MLflow UI (for messages)."""
    return f"mnist99 ui --set tracking.uri={tracking_uri(cfg)}"
