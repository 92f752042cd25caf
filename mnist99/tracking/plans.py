"""A time budget's plan on the run that made it, found again by the budgeted job's key.

The key is the cache key of the job as asked (config with its budget, data, code): a rerun, a
resume after a kill or another worker running the same command finds the plan of the first
attempt and trains the same members under the same keys instead of planning afresh.
"""
from __future__ import annotations

import json

import mlflow

PLAN_KEY_TAG = "mnist99.budget_key"
PLAN_TAG = "mnist99.budget_plan"


def record_plan(key: str, plan: dict, params: dict[str, str]) -> None:
    """Tag the active run with the plan (JSON) and its key, and log ``params`` (``budget.*``) for the runs table."""
    mlflow.set_tags({PLAN_KEY_TAG: key, PLAN_TAG: json.dumps(plan)})
    mlflow.log_params(params)


def recorded_plan(key: str) -> tuple[str, dict] | None:
    """The newest run of the current experiment, whatever its status, that recorded a plan under ``key``:
    its id and the plan."""
    runs = mlflow.search_runs(filter_string=f"tags.`{PLAN_KEY_TAG}` = '{key}'", order_by=["attributes.start_time DESC"],
                              max_results=1, output_format="list")
    return (runs[0].info.run_id, json.loads(runs[0].data.tags[PLAN_TAG])) if runs else None
