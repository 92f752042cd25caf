"""Reading the store back: runs by id, stage or cache key; metric histories; artifacts by URI."""
from __future__ import annotations

from pathlib import Path

import mlflow

from mnist99.errors import ModelLoadError, first_line
from mnist99.tracking.keys import CACHE_KEY_TAG
from mnist99.tracking.store import use_default_store_unless_chosen


def download(uri: str) -> Path:
    """The local path of an MLflow URI (``runs:/<id>/<path>``, ``models:/<name>/<version|latest>``).

    Raises ModelLoadError naming the URI when MLflow cannot resolve it (unknown run, model or version), or
    when no store was chosen and ``./mlruns`` holds none (:func:`~mnist99.tracking.store.use_default_store_unless_chosen`).
    """
    missing = use_default_store_unless_chosen()
    if missing is not None:
        raise ModelLoadError(f"cannot fetch {uri}: no MLflow store at {missing} (load it where `mnist99 run` ran, "
                             "or set MLFLOW_TRACKING_URI)")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise ModelLoadError(f"cannot fetch {uri}: {first_line(exc)}") from None


def finished_run(run_id: str) -> mlflow.entities.Run:
    """The run ``run_id``; ModelLoadError naming it when the store has no such run or it did not finish."""
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelLoadError(f"no MLflow run {run_id!r}: {first_line(exc)}") from None
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


def metric_history(run_id: str, key: str) -> list[float]:
    """The values a run logged for ``key``, in step order (empty if it logged none)."""
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def split_digest(x, y) -> str:
    """MLflow's digest of a split, as :func:`~mnist99.tracking.runs.log_dataset` logs it."""
    return mlflow.data.from_numpy(x, targets=y).digest


def validated_on(run: mlflow.entities.Run) -> str | None:
    """The digest of the split ``run`` logged as its ``val`` dataset input (None when it logged none)."""
    return next((d.dataset.digest for d in run.inputs.dataset_inputs if any(t.value == "val" for t in d.tags)), None)


def matching_train_runs(params: dict[str, str], val_digest: str) -> list[mlflow.entities.Run]:
    """FINISHED train runs of the current experiment, oldest first, that logged ``params`` (a key a
    run did not log, e.g. one from an older mnist99, is not compared) and validated on the split of ``val_digest``
    (so none trained on those images)."""
    runs = mlflow.search_runs(filter_string="tags.`mnist99.stage` = 'train' AND attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time"], output_format="list")
    return [run for run in runs
            if all(run.data.params.get(k, v) == v for k, v in params.items()) and validated_on(run) == val_digest]


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


def run_params(run_id: str) -> dict[str, str]:
    """The params a run logged (empty for a run that has logged none yet)."""
    return dict(mlflow.get_run(run_id).data.params)
