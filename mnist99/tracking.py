"""The MLflow boundary: store location, stage runs that end FINISHED/FAILED/KILLED, and logging helpers.

Models, data and augmentation code never import mlflow; stages go through this module.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import keras
import mlflow

from mnist99 import __version__
from mnist99.config import Config, flatten, to_yaml

DEFAULT_STORE = Path("mlruns")
EXPERIMENT_DESCRIPTION = "mnist99 runs: train, ensemble, evaluate, export (one run per stage)."


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


def setup(cfg: Config, experiment: str | None = None) -> str:
    """Point MLflow at the store and the experiment (created with a description if new); returns its id."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = experiment or cfg.tracking.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    root = _artifact_root(uri)
    exp_id = mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None,
                                      tags={"mlflow.note.content": EXPERIMENT_DESCRIPTION})
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
              nested: bool = False, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for a stage: FINISHED on success, FAILED (error logged) on an exception, KILLED on Ctrl-C.

    ``run_id`` resumes an existing run (after a crash) instead of starting a new one.
    """
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested,
                           tags={**base_tags(stage), **(tags or {})},
                           log_system_metrics=cfg.tracking.system_metrics or None)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag("mnist99.error", "interrupted (Ctrl-C)")
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
    """Each split as an MLflow dataset input (with its digest), and the counts per class."""
    import numpy as np

    for split, (x, y) in {"train": (splits.x_train, splits.y_train), "val": (splits.x_val, splits.y_val),
                          "test": (splits.x_test, splits.y_test)}.items():
        ds = mlflow.data.from_numpy(x, targets=y, source=splits.source, name=f"mnist-{split}")
        mlflow.log_input(ds, context=f"{context_prefix}{split}")
        counts = np.bincount(y, minlength=10)
        mlflow.log_metrics({f"{split}_count_class_{d}": int(c) for d, c in enumerate(counts)})
    mlflow.log_metrics({f"{k}_size": v for k, v in splits.counts().items()})
    mlflow.set_tag("mnist99.data_digest", splits.digest)


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


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs ``loss, accuracy, val_loss, val_accuracy, lr`` and ``epoch_seconds`` with step = epoch."""

    def __init__(self, start_epoch: int = 0) -> None:
        super().__init__()
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        metrics["lr"] = current_lr(self.model.optimizer)
        metrics["epoch_seconds"] = time.perf_counter() - self._t0
        mlflow.log_metrics(metrics, step=epoch + 1)


def current_lr(optimizer) -> float:
    """The learning rate the optimiser is using now (schedules evaluated at the current step)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def ui_command(cfg: Config) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri(cfg)} --host 127.0.0.1 --port 5000"
