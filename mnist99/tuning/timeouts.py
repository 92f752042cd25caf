"""A chief/worker search that outlives a lost worker: the chief takes a silent worker's trial back.

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
    """Oracle mixin for the chief: a trial not heard of for ``trial_timeout`` seconds goes back in the queue.

    Heard of: handed out (a restarted worker asking again with its id counts), or asked for by
    :class:`TrialHeartbeat` after an epoch. The silent worker's id leaves ``tuner_ids``, so the chief can
    end without it, and ``on_timeout`` is told (the ``tune`` stage marks the trial's MLflow run KILLED).
    A worker that would be told to stop while other trials are ongoing is told to wait instead, as
    Hyperband does between brackets: one of those trials may still time out and need it.
    Checked when a worker asks for a trial, i.e. when one is free to take the retry.
    """

    trial_timeout: float
    on_timeout: OnTimeout | None
    clock: Callable[[], float]
    heard: dict[str, float]  # trial id -> when the chief last heard of it

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        self.expire_silent_trials()
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            self.heard[trial.trial_id] = self.clock()
        elif trial.status == TrialStatus.STOPPED and self.ongoing_trials:
            self.tuner_ids.add(tuner_id)  # KerasTuner dropped it with the STOPPED answer
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        return trial

    @keras_tuner.synchronized
    def get_trial(self, trial_id: str) -> Trial:
        if trial_id in self.heard:
            self.heard[trial_id] = self.clock()
        return super().get_trial(trial_id)

    @keras_tuner.synchronized
    def end_trial(self, trial: Trial) -> None:
        self.heard.pop(trial.trial_id, None)
        super().end_trial(trial)

    @keras_tuner.synchronized
    def expire_silent_trials(self) -> list[str]:
        """Queue again every ongoing trial not heard of for ``trial_timeout`` seconds; returns their ids."""
        now = self.clock()
        silent = {tuner_id: trial.trial_id for tuner_id, trial in self.ongoing_trials.items()
                  if now - self.heard.setdefault(trial.trial_id, now) > self.trial_timeout}
        for tuner_id, trial_id in silent.items():
            del self.ongoing_trials[tuner_id]
            self.tuner_ids.discard(tuner_id)
            del self.heard[trial_id]
            self._retry_queue.append(trial_id)
            print(f"Trial {trial_id}: worker {tuner_id} silent for over {self.trial_timeout:g} s; queued again")
        if silent:
            self.save()  # before the hooks: a hook that fails leaves the queue as saved
        for tuner_id, trial_id in silent.items():
            if self.on_timeout is not None:
                self.on_timeout(trial_id, tuner_id)
        return list(silent.values())


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
