"""A registered model as a mutex: the one primitive behind members' claims and the champion lock.

MLflow has no compare-and-set, but creating a registered model is atomic: the name is the primary key
of the SQLite/PostgreSQL/MySQL table, so of processes creating the same name at once (on any machine
sharing the store) exactly one succeeds. The others are told so in one of two ways: a SQL store that
finds the name taken looks the model up to word its answer (RESOURCE_ALREADY_EXISTS), and if the holder
deleted it in that moment, the lookup answers RESOURCE_DOES_NOT_EXIST instead. Both mean "not taken by
this call"; the caller's next look at the name tells held from released.
"""
from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

NOT_TAKEN = frozenset({"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"})


def take(client: mlflow.MlflowClient, name: str, **create: object) -> RegisteredModel | None:
    """Create the registered model ``name`` (``create``: its tags, description) and return it, or None
    when another process held the name at that moment; other errors are raised."""
    try:
        return client.create_registered_model(name, **create)
    except MlflowException as exc:
        if exc.error_code in NOT_TAKEN:
            return None
        raise
