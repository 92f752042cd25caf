"""A chief/worker search that outlives a lost worker: the chief lets a silent worker go and takes its trial back.

KerasTuner 1.4 has no trial timeout. Its chief keeps a trial in ``ongoing_trials`` under the worker's
tuner id until that worker ends it: a worker restarted with the same id gets the trial back from
``create_trial`` (the first thing it checks), but one that never returns holds it for good, and the
chief, which ends only when no trial is ongoing and no worker id is left in ``tuner_ids``, never ends.
Its gRPC service has no heartbeat either, and workers send no per-epoch results to the chief; so a
worker here asks for its trial (``GetTrial``, which changes nothing) after every epoch, and the chief
counts that as a sign of life.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

# A worker whose ask found nothing to run waits this long before asking again: KerasTuner's worker loop
# asks again at once, a busy loop over gRPC that would take a core from the workers still training.
IDLE_WAIT_SECONDS = 2.0

OnTimeout = Callable[[str, str], None]  # (trial id, tuner id of the worker that went silent)


class TrialTimeout:
    """Oracle mixin for the chief: a worker not heard of for ``trial_timeout`` seconds is let go, its trial queued again.

    Heard of: it asked for a trial (a restarted worker asking again with its id counts, and so does a
    waiting worker's next ask), asked for its trial after an epoch (:class:`TrialHeartbeat`), or ended
    it. A silent worker's id leaves ``tuner_ids``, so the chief can end without it; its trial goes to the
    next worker that asks, and ``on_timeout`` is told (the ``tune`` stage marks the trial's MLflow run
    KILLED). A worker that would be told to stop while other trials are ongoing is told to wait
    instead, as Hyperband does between brackets: one of those trials may still time out and need it.
    Checked when a worker asks for a trial, i.e. when one is free to take the retry.
    """

    trial_timeout: float
    on_timeout: OnTimeout | None
    clock: Callable[[], float]
    heard: dict[str, float]  # tuner id -> when the chief last heard of that worker

    def _hear(self, trial_id: str) -> None:
        for tuner_id, trial in self.ongoing_trials.items():
            if trial.trial_id == trial_id:
                self.heard[tuner_id] = self.clock()

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        self.expire_silent_workers()
        self.heard[tuner_id] = self.clock()
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED and self.ongoing_trials:
            self.tuner_ids.add(tuner_id)  # KerasTuner dropped it with the STOPPED answer
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        if trial.status == TrialStatus.STOPPED:
            del self.heard[tuner_id]
        return trial

    @keras_tuner.synchronized
    def get_trial(self, trial_id: str) -> Trial:
        self._hear(trial_id)
        return super().get_trial(trial_id)

    @keras_tuner.synchronized
    def end_trial(self, trial: Trial) -> None:
        self._hear(trial.trial_id)
        super().end_trial(trial)

    @keras_tuner.synchronized
    def expire_silent_workers(self) -> list[str]:
        """Let go of every worker not heard of for ``trial_timeout`` seconds; returns the trial ids queued again."""
        now = self.clock()
        silent = sorted(tuner_id for tuner_id in self.tuner_ids
                        if now - self.heard.setdefault(tuner_id, now) > self.trial_timeout)
        lost = {}
        for tuner_id in silent:
            self.tuner_ids.discard(tuner_id)
            del self.heard[tuner_id]
            trial = self.ongoing_trials.pop(tuner_id, None)
            print(f"Worker {tuner_id} silent for over {self.trial_timeout:g} s: let go"
                  + (f", trial {trial.trial_id} queued again" if trial else ""))
            if trial is not None:
                self._retry_queue.append(trial.trial_id)
                lost[trial.trial_id] = tuner_id
        if lost:
            self.save()  # before the hooks: a hook that fails leaves the queue as saved
        for trial_id, tuner_id in lost.items():
            if self.on_timeout is not None:
                self.on_timeout(trial_id, tuner_id)
        return list(lost)


def with_trial_timeout(oracle: keras_tuner.Oracle, seconds: float, on_timeout: OnTimeout | None = None,
                       clock: Callable[[], float] = time.monotonic) -> keras_tuner.Oracle:
    """``oracle`` (the same object) with :class:`TrialTimeout` mixed into its class.

    Each KerasTuner tuner class builds its own oracle, so the mixin joins the oracle's class after the
    fact, as ``make_tuner`` mixes hooks into tuner classes; the object keeps its identity, its state and
    the lock that ``keras_tuner.synchronized`` holds per oracle.
    """
    cls = type(oracle)
    oracle.__class__ = type(f"TrialTimeout{cls.__name__}", (TrialTimeout, cls), {})
    oracle.trial_timeout, oracle.on_timeout, oracle.clock, oracle.heard = seconds, on_timeout, clock, {}
    return oracle


class TrialHeartbeat:
    """Tuner mixin for a worker: a sign of life to the chief after every epoch, and a pause between idle asks."""

    _asked_in_vain = False

    def on_epoch_end(self, trial, model, epoch, logs=None) -> None:
        self.oracle.get_trial(trial.trial_id)
        super().on_epoch_end(trial, model, epoch, logs=logs)

    def pre_create_trial(self) -> None:
        if self._asked_in_vain:  # the last ask got no trial to run (IDLE)
            time.sleep(IDLE_WAIT_SECONDS)
        self._asked_in_vain = True
        super().pre_create_trial()

    def on_trial_begin(self, trial) -> None:
        self._asked_in_vain = False
        super().on_trial_begin(trial)
