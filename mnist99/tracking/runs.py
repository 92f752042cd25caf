"""Stage runs that end FINISHED/FAILED/KILLED, and what a run logs: config, data, metrics, figures, models."""
from __future__ import annotations

import contextlib
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import mlflow

from mnist99 import __version__
from mnist99.config import Config, flatten, to_yaml
from mnist99.constants import NUM_CLASSES
from mnist99.tracking import keys
from mnist99.training.devices import cpu_description, device_name


def base_tags(stage: str) -> dict[str, str]:
    """Tags of every stage run: the stage, the version and code digest that ran it, the device and CPU, the commit."""
    tags = {"mnist99.stage": stage, "mnist99.version": __version__, "mnist99.device": device_name(),
            "mnist99.cpu": cpu_description(), keys.CODE_DIGEST_TAG: keys.code_digest()}
    commit = keys.git_commit()
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


def active_run_id() -> str | None:
    """The id of this process's active run (a stage's), or None: what a worker process nests its run under."""
    active = mlflow.active_run()
    return active.info.run_id if active else None


def log_config(cfg: Config) -> None:
    """The resolved config: every dotted key as a param, and the YAML as ``config.yaml``."""
    params = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(cfg).items()}
    mlflow.log_params(params)
    mlflow.log_text(to_yaml(cfg), "config.yaml")


# How each SQL store words a dataset inserted by another process first (PostgreSQL, SQLite, others).
DUPLICATE_DATASET = ("duplicate key", "UNIQUE constraint failed", "already exists")


def _log_input(dataset, context: str, attempts: int = 3) -> None:
    """``mlflow.log_input``, again when another process logged the same dataset at the same moment.

    MLflow's SQL store inserts a dataset new to the experiment without checking again under a lock, so
    processes started at once on one store race there: members against a server on PostgreSQL
    ("duplicate key value violates unique constraint dataset_pk"), two stages on one SQLite file ("UNIQUE
    constraint failed: datasets.experiment_id, ..."). The loser's whole request is rolled back; its
    second try finds the winner's dataset and only links it to its run.
    """
    import time

    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts or not any(marker in str(exc) for marker in DUPLICATE_DATASET):
                raise
            time.sleep(0.2 * attempt)


def log_dataset(splits, context_prefix: str = "") -> None:
    """Each split as an MLflow dataset input (with its digest), its size, and ``class_counts.json``.

    The per-class counts go to one artifact, not 30 metrics that would crowd the UI's compare view.
    """
    import numpy as np

    counts = {}
    for split, (x, y) in splits.parts().items():
        ds = mlflow.data.from_numpy(x, targets=y, source=splits.source, name=f"mnist-{split}")
        _log_input(ds, context=f"{context_prefix}{split}")
        counts[split] = {str(d): int(c) for d, c in enumerate(np.bincount(y, minlength=NUM_CLASSES))}
    mlflow.log_dict(counts, "class_counts.json")
    mlflow.log_metrics({f"{k}_size": v for k, v in splits.counts().items()})
    mlflow.set_tag("mnist99.data_digest", splits.digest)


def update_run(run_id: str, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
               status: str | None = None) -> None:
    """Tag and score a run that is not the active one (e.g. a trial after its run ended); ``status``
    (e.g. ``KILLED``) ends it, for a run whose process is gone."""
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))
    if status is not None:
        client.set_terminated(run_id, status=status)


def log_figure(fig, path: str) -> None:
    mlflow.log_figure(fig, path)


def log_model_file(model: keras.Model, artifact_path: str = "model") -> None:
    """Save ``model`` as ``.keras`` into a temporary folder and log it under ``artifact_path``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        mlflow.log_artifact(str(path), artifact_path)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """A local file (e.g. an exported ``.onnx``) as an artifact of the active run, under ``artifact_path``."""
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


def log_params(params: dict[str, Any]) -> None:
    """Params of the active run, every value as text (MLflow stores params as strings)."""
    mlflow.log_params({key: str(value) for key, value in params.items()})


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)
