"""The registry aliases ``champion`` and ``challenger``: set by the promotion gate, under a lock held in the registry.

Why a lock: the gate reads the current champion, compares, then sets an alias. Two exports finishing
at once would otherwise both read the same old champion, both beat it and both set ``champion``: the
later write wins, while the other export has already told its user that it is the champion (and the
winner may be the worse of the two, since neither compared with the other). MLflow has no conditional
alias update, so the whole read-compare-set runs under a mutex kept in the registry itself, a registered
model (:mod:`mnist99.tracking.mutex`): ``<name>.champion-lock`` exists exactly while one process holds
the lock. That holds for every store mnist99 writes to, a local SQLite file as well
as a tracking server shared by several machines, where a file lock would not be seen.

The holder deletes the lock when it leaves, on errors and Ctrl-C/SIGTERM too. A lock left behind by a
process killed (SIGKILL) inside the sub-second critical section is broken by the next export once it
has seen that same lock for ``STALE_AFTER_S`` seconds on its own clock, so no clocks are compared
across machines.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator

import mlflow
from mlflow.exceptions import MlflowException

from mnist99.delivery.promotion import CHALLENGER, CHAMPION, Decision, Promote, Standing, decide
from mnist99.tracking.mutex import take
from mnist99.tracking.queries import validated_on

VAL_ACCURACY_TAG = "mnist99.val_accuracy"  # on a registered version: the val_accuracy of the run it exports
VAL_DIGEST_TAG = "mnist99.val_digest"  # ... and MLflow's digest of that run's validation split
PROMOTION_TAG = "mnist99.promotion"  # the gate's decision and reason, e.g. "challenger: worse: ..."
LOCK_SUFFIX = ".champion-lock"
STALE_AFTER_S = 60.0  # the critical section takes well under a second; a lock this old lost its holder
POLL_S = 0.1


def record_validation(name: str, version: str, source: mlflow.entities.Run) -> None:
    """Tag ``version`` with the validation accuracy and split digest of ``source``, the run it was exported from.

    The gate reads them back from the version, so it compares versions even after their runs are gone.
    A run without a ``val_accuracy`` metric or a ``val`` dataset input leaves the tag out.
    """
    found = {VAL_ACCURACY_TAG: source.data.metrics.get("val_accuracy"), VAL_DIGEST_TAG: validated_on(source)}
    client = mlflow.MlflowClient()
    for key, value in found.items():
        if value is not None:
            client.set_model_version_tag(name, version, key, str(value))


def standing(name: str, version: str) -> Standing:
    """What the gate compares of ``version``, read from its tags (see :func:`record_validation`)."""
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    accuracy = tags.get(VAL_ACCURACY_TAG)
    return Standing(str(version), float(accuracy) if accuracy else None, tags.get(VAL_DIGEST_TAG))


def current_champion(name: str) -> Standing | None:
    """The version ``name@champion`` points to, or None when no version has the alias.

    (A SQLite store gives alias versions as ints, a tracking server as strings: hence ``str``.)
    """
    version = mlflow.MlflowClient().get_registered_model(name).aliases.get(CHAMPION)
    return None if version is None else standing(name, str(version))


def gate(name: str, version: str, promote: Promote = "auto") -> Decision:
    """Give ``version`` the alias that :func:`~mnist99.delivery.promotion.decide` chooses, under the lock.

    The decision is also tagged on the version (:data:`PROMOTION_TAG`). A promoted version that was the
    challenger stops being it, so each alias names one role.
    """
    client = mlflow.MlflowClient()
    with registry_lock(name):
        decision = decide(standing(name, version), current_champion(name), promote)
        client.set_registered_model_alias(name, decision.alias, version)
        if decision.promoted and str(client.get_registered_model(name).aliases.get(CHALLENGER)) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_model_version_tag(name, version, PROMOTION_TAG, f"{decision.alias}: {decision.reason}")
    return decision


@contextlib.contextmanager
def registry_lock(name: str, stale_after_s: float = STALE_AFTER_S) -> Iterator[None]:
    """Hold ``<name>.champion-lock``, a registered model used as a mutex (see the module help)."""
    client = mlflow.MlflowClient()
    lock = name + LOCK_SUFFIX
    holder = f"held by pid {os.getpid()} on {socket.gethostname()} while it sets {name}@{CHAMPION}"
    seen: tuple[int, float] | None = None  # (the lock's creation time: which holder, when this process first saw it)
    while True:
        if take(client, lock, description=f"{holder}; delete it if no mnist99 export is running") is not None:
            break
        try:
            created = client.get_registered_model(lock).creation_timestamp
        except MlflowException:  # released in between: try again at once
            continue
        if seen is None or seen[0] != created:
            seen = (created, time.monotonic())
        elif time.monotonic() - seen[1] > stale_after_s:
            print(f"export: breaking the lock {lock} (unchanged for {stale_after_s:.0f} s: its holder died)",
                  file=sys.stderr)
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            seen = None
            continue
        time.sleep(POLL_S)
    try:
        yield
    finally:
        client.delete_registered_model(lock)
