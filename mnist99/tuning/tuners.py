"""KerasTuner's tuners by name (``tune.tuner``), each with the settings it takes from the config.

KerasTuner is imported inside each entry, not here: validating a config checks ``tune.tuner``
against this registry, and that must not load KerasTuner or TensorFlow (a JAX-only GPU machine
validates configs too: ``benchmarks/gpu.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist99.registry import Registry

if TYPE_CHECKING:
    from mnist99.config import TuneConfig

TUNERS: Registry = Registry("tuner")


@TUNERS.register("hyperband")
def _hyperband(tune: TuneConfig) -> tuple[type, dict[str, Any]]:
    import keras_tuner

    return keras_tuner.Hyperband, {"max_epochs": tune.max_epochs, "factor": tune.factor,
                                   "hyperband_iterations": tune.hyperband_iterations}


@TUNERS.register("bayesian")
def _bayesian(tune: TuneConfig) -> tuple[type, dict[str, Any]]:
    import keras_tuner

    return keras_tuner.BayesianOptimization, {"max_trials": tune.max_trials}


@TUNERS.register("random")
def _random(tune: TuneConfig) -> tuple[type, dict[str, Any]]:
    import keras_tuner

    return keras_tuner.RandomSearch, {"max_trials": tune.max_trials}
