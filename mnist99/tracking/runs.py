"""Stage runs that end FINISHED/FAILED/KILLED, and what a run logs: config, data, metrics, figures, models."""
from __future__ import annotations

import contextlib
import functools
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import mlflow

from mnist99 import __version__, resume
from mnist99.config import Config, flatten, to_yaml


@functools.cache
def git_commit() -> str | None:
    """The commit of the code this process runs (None outside a git checkout).

    Asked once per process: every stage run's tags and every cache key (one per stage and per
    ensemble member, looked up and then tagged) use it, and each ask would be a ``git`` subprocess.
    """
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_key(kind: str, payload: str, data_digest: str) -> str:
    """The cache key (tag ``mnist99.cache_key``) of ``kind`` of work on ``payload`` (its config), the
    data and the code that does it: the mnist99 version and the git commit, since a code change can
    change the result."""
    return resume.job_key(f"{kind}\n{payload}\n{git_commit() or ''}", data_digest)


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


def log_dict(data: dict, path: str) -> None:
    mlflow.log_dict(data, path)


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
