"""Writing and counting metric points for the tracking load benchmark (benchmarks/tracking_load.py).

Here because only the tracking package talks to MLflow; nothing in the stages uses it.
"""
from __future__ import annotations

import time

import mlflow
from mlflow.entities import Metric

KEY = "load"


def write_points(uri: str, experiment_id: str, name: str, points: int, batch: int = 0) -> dict:
    """Log ``points`` values of metric ``load`` (steps 0..points-1) to a new run in ``experiment_id``:
    one ``log_metric`` call each (``batch`` 0, the realistic stress: one request per point) or
    ``log_batch`` calls of ``batch`` points. A call that fails (after MLflow's own retries) is counted,
    not retried. Returns the run id, the errors, the first error's message, and when the writing
    started and ended (``time.time()``: writers in several processes are compared on one clock)."""
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    errors, first, started = 0, "", time.time()
    size = batch or 1
    for offset in range(0, points, size):
        steps = range(offset, min(offset + size, points))
        try:
            if batch:
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(KEY, float(s), now, s) for s in steps])
            else:
                client.log_metric(run_id, KEY, float(offset), step=offset)
        except Exception as exc:  # noqa: BLE001 (the benchmark counts every failure, whatever its kind)
            errors += len(steps)
            first = first or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    ended = time.time()
    client.set_terminated(run_id)
    return {"run_id": run_id, "errors": errors, "first_error": first, "started": started, "ended": ended}


def new_experiment(uri: str, name: str) -> str:
    """A new experiment ``name`` in the store at ``uri`` (created and migrated if new); its id."""
    return mlflow.MlflowClient(uri).create_experiment(name)


def count_points(uri: str, run_id: str) -> int:
    """How many distinct steps of ``load`` the store holds for ``run_id``."""
    return len({m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, KEY)})
