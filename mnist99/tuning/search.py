"""The KerasTuner side of a search: the HyperModel over our Config, the tuners by name, chief/worker settings.

Nothing here knows MLflow: the ``tune`` stage adds tracking by mixing its trial hooks into the tuner.
"""
from __future__ import annotations

import math
from typing import Any

import keras
import keras_tuner
from keras_tuner.src.distribute import utils as dist_utils  # how KerasTuner itself reads its role

from mnist99.config import Config
from mnist99.data import Splits
from mnist99.errors import ConfigError
from mnist99.training.fit import fit_datasets
from mnist99.training.recipe import compile_model, configure_runtime, training_precision
from mnist99.tuning.space import project_name, trial_config
from mnist99.tuning.timeouts import OnTimeout, TrialHeartbeat, with_trial_timeout
from mnist99.tuning.tuners import TUNERS

# Chosen on validation data only: the test set stays for reporting the model trained afterwards.
OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")


class ConfigHyperModel(keras_tuner.HyperModel):
    """Builds and fits a trial exactly as ``train`` does, from the base config plus the trial's values."""

    def __init__(self, cfg: Config, train_size: int) -> None:
        super().__init__(name="mnist99")
        self.cfg = cfg
        self.train_size = train_size  # sets steps per epoch, which the schedule needs before fit

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        cfg = trial_config(self.cfg, hp)
        configure_runtime(cfg)
        with training_precision(cfg):
            return compile_model(cfg, steps_per_epoch=math.ceil(self.train_size / cfg.train.batch_size))

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, splits: Splits,
            callbacks: list[keras.callbacks.Callback] | None = None, epochs: int | None = None,
            initial_epoch: int = 0, **kwargs: Any) -> keras.callbacks.History:
        """Fit on ``splits.train`` (augmented as the trial's config says), validate on ``splits.val``.

        Hyperband passes ``epochs``/``initial_epoch``; the other tuners train ``tune.max_epochs``.
        Early stopping watches the objective, so a hopeless trial frees the cores early.
        """
        cfg = trial_config(self.cfg, hp)
        train_ds, val_ds = fit_datasets(cfg, splits, on_device=False)  # train's host pipeline, exactly
        stopping = cfg.train.early_stopping
        cbs: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
        if stopping.enabled:
            cbs.append(keras.callbacks.EarlyStopping(monitor=OBJECTIVE.name, mode="max",
                                                     patience=stopping.patience, min_delta=stopping.min_delta))
        return model.fit(train_ds, validation_data=val_ds, epochs=epochs or cfg.train.epochs,
                         initial_epoch=initial_epoch, callbacks=cbs + list(callbacks or []),
                         verbose=cfg.train.verbose, shuffle=False)  # tf.data shuffles


def make_tuner(cfg: Config, hypermodel: keras_tuner.HyperModel, hooks: type | None = None,
               on_trial_timeout: OnTimeout | None = None, **hook_kwargs: Any) -> keras_tuner.Tuner:
    """The tuner named by ``tune.tuner`` on its project folder, reloaded if it exists (``overwrite=False``).

    ``hooks`` is a mixin class placed before the tuner class (for trial tracking); ``hook_kwargs`` go
    to its ``__init__``. Chief/worker mode comes from the KERASTUNER_* environment, read here: a
    worker's tuner sends heartbeats, and the chief's oracle takes back a trial not heard of for
    ``tune.trial_timeout`` seconds, calling ``on_trial_timeout(trial_id, tuner_id)``.
    """
    tuner_cls, kwargs = TUNERS.get(cfg.tune.tuner)(cfg.tune)
    worker = dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()
    mixins = tuple(m for m in (hooks, TrialHeartbeat if worker else None) if m is not None)
    if mixins:
        tuner_cls = type("".join(m.__name__ for m in (*mixins, tuner_cls)), (*mixins, tuner_cls), {})
    tuner = tuner_cls(hypermodel=hypermodel, objective=OBJECTIVE, seed=cfg.seed, overwrite=False,
                      executions_per_trial=cfg.tune.executions_per_trial, directory=cfg.tune.directory,
                      project_name=project_name(cfg), **kwargs, **hook_kwargs)
    requeue_lost_trials(tuner.oracle)
    if dist_utils.is_chief_oracle():
        with_trial_timeout(tuner.oracle, cfg.tune.trial_timeout, on_trial_timeout)
    return tuner


def requeue_lost_trials(oracle) -> list[str]:
    """Send trials that a kill left RUNNING but the reloaded oracle forgot back for a run.

    KerasTuner writes a new trial's ``trial.json`` before ``oracle.json``; a kill in between leaves a
    trial that ``reload()`` neither finishes nor retries, and the search ends one trial short.
    """
    if not isinstance(oracle, keras_tuner.Oracle):  # a worker's gRPC client: the chief owns the trials
        return []
    known = set(oracle._retry_queue) | {t.trial_id for t in oracle.ongoing_trials.values()}
    lost = [tid for tid, trial in oracle.trials.items() if trial.status == "RUNNING" and tid not in known]
    oracle._retry_queue.extend(lost)
    return lost


def distributed_env(role: str | None, oracle: str | None, worker_id: int = 0) -> dict[str, str]:
    """KerasTuner's chief/worker environment for ``--role``/``--oracle HOST:PORT`` (empty when both are unset).

    The chief serves the oracle over gRPC and runs no trials; each worker needs its own ``worker_id``.
    """
    if role is None and oracle is None:
        return {}
    if role is None or oracle is None:
        raise ConfigError(f"--role and --oracle go together (got role={role!r}, oracle={oracle!r})")
    host, _, port = oracle.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--oracle '{oracle}' is not HOST:PORT")
    return {"KERASTUNER_TUNER_ID": "chief" if role == "chief" else f"tuner{worker_id}",
            "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": port}
