"""Claims: which process trains a member, held in the MLflow registry so that processes on any
machine sharing a tracking server see them.

A claim is a registered model used as a mutex (:mod:`mnist99.tracking.mutex`), as the champion lock
is (:mod:`mnist99.tracking.aliases`). ``mnist99.claim-<cache key>``
exists exactly while one process trains that member; a second process for the same member waits,
then finds the FINISHED run and reuses it.

The holder re-tags its claim every ``tracking.claim.heartbeat`` seconds from a background thread and
tags its train run with the claim. A waiter that sees the same heartbeat for ``tracking.claim.stale``
seconds on its own clock (no clocks are compared across machines) breaks the claim: the holder's
RUNNING train run is marked KILLED and the waiter trains the member itself. A holder on the waiter's
own machine whose process is gone (a rerun after SIGKILL) is broken at once, without the wait.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import mlflow
from mlflow.exceptions import MlflowException

from mnist99.config import ClaimConfig
from mnist99.tracking.mutex import take

PREFIX = "mnist99.claim-"
HEARTBEAT_TAG = "mnist99.heartbeat"  # on the claim: a counter the holder's thread advances
HOLDER_TAG = "mnist99.holder"  # on the claim: <host>:<pid> of the holder
RUN_CLAIM_TAG = "mnist99.claim"  # on the holder's train run: which claim (name@creation time) it trained under
POLL_S = 1.0


class Watch:
    """A waiter's view of one claim: stale once the same heartbeat was seen for ``stale_s`` on ``clock``."""

    def __init__(self, stale_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_s, self.clock = stale_s, clock
        self.seen: tuple[str, float] | None = None  # (heartbeat, when first seen)

    def stale(self, beat: str) -> bool:
        """Record ``beat`` (the claim's identity and heartbeat); whether it has not changed for ``stale_s``."""
        now = self.clock()
        if self.seen is None or self.seen[0] != beat:
            self.seen = (beat, now)
            return False
        return now - self.seen[1] > self.stale_s


class Claim:
    """A claim this process holds: its heartbeat thread runs until :meth:`release`."""

    def __init__(self, name: str, token: str, heartbeat_s: float) -> None:
        self.name, self.token = name, token
        self.run_tags = {RUN_CLAIM_TAG: token}  # for the train run made under the claim
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name=f"heartbeat {name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        client, count = mlflow.MlflowClient(), 0
        while not self._stop.wait(every):
            count += 1
            with contextlib.suppress(MlflowException, OSError):  # a missed beat: the next one may pass
                client.set_registered_model_tag(self.name, HEARTBEAT_TAG, str(count))

    def release(self) -> None:
        """Stop the heartbeat and delete the claim (gone already if a waiter broke it)."""
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(MlflowException):
            mlflow.MlflowClient().delete_registered_model(self.name)


@contextlib.contextmanager
def claimed(key: str, label: str, settings: ClaimConfig, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Iterator[Claim]:
    """Hold the claim on the member of cache key ``key`` while the block runs, waiting while another
    process holds it (``label`` starts the lines said); stale claims are broken (see the module help)."""
    client = mlflow.MlflowClient()
    name = PREFIX + key
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    tags = {HEARTBEAT_TAG: "0", HOLDER_TAG: f"{socket.gethostname()}:{os.getpid()}"}
    watch, said = Watch(settings.stale, clock), False
    while True:
        made = take(client, name, tags=tags, description=f"trained by {holder}")
        if made is not None:
            break
        try:
            held = client.get_registered_model(name)
        except MlflowException:  # released in between: try again at once
            continue
        if not said:
            print(f"{label}: {held.description or 'claimed'} (claim {name}); waiting for it", flush=True)
            said = True
        if watch.stale(f"{held.creation_timestamp}/{held.tags.get(HEARTBEAT_TAG)}") or gone(held.tags.get(HOLDER_TAG)):
            break_claim(name, held.creation_timestamp, settings.stale, label)
            watch = Watch(settings.stale, clock)
            continue
        sleep(POLL_S)
    claim = Claim(name, f"{name}@{made.creation_timestamp}", settings.heartbeat)
    try:
        yield claim
    finally:
        claim.release()


def gone(holder: str | None) -> bool:
    """Whether ``holder`` (``<host>:<pid>``) is a process of this machine that no longer exists."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def break_claim(name: str, created: int, stale_s: float, label: str) -> None:
    """Delete the stale claim ``name`` made at ``created`` and mark the RUNNING runs made under it KILLED.

    A claim made since (another waiter broke the stale one first and holds a new one) is left alone;
    what remains is the moment between reading it here and deleting it.
    """
    client = mlflow.MlflowClient()
    try:
        if client.get_registered_model(name).creation_timestamp != created:
            return
    except MlflowException:  # released or broken in between
        return
    print(f"{label}: the holder of the claim {name} is gone (its process ended, or no heartbeat for "
          f"{stale_s:.0f} s); marking its run KILLED and training the member here", file=sys.stderr, flush=True)
    for run in mlflow.search_runs(filter_string=f"tags.`{RUN_CLAIM_TAG}` = '{name}@{created}' AND "
                                                "attributes.status = 'RUNNING'",
                                  search_all_experiments=True, output_format="list"):
        client.set_terminated(run.info.run_id, "KILLED")
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)
