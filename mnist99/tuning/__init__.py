"""Hyperparameter search with KerasTuner over the ordinary Config (stage ``tune``).

The names below resolve on first use (PEP 562): validating any config imports this package (for
``tuning.tuners``), and that must not load KerasTuner or TensorFlow.
"""
import importlib

_HOME = {
    "OBJECTIVE": "search", "ConfigHyperModel": "search", "distributed_env": "search", "make_tuner": "search",
    "TUNERS": "tuners",
    "best_overrides": "space", "check_space": "space", "overrides_yaml": "space", "project_name": "space",
    "trial_config": "space",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'mnist99.tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mnist99.tuning.{_HOME[name]}"), name)
