"""Hyperparameter search with KerasTuner over the ordinary Config (stage ``tune``).

The names below resolve on first use (PEP 562): validating any config imports this package (for
``tuning.tuners``), and that must not load KerasTuner or TensorFlow.
"""
from mnist99 import lazy_attributes

_HOME = {
    "OBJECTIVE": "search", "ConfigHyperModel": "search", "distributed_env": "search", "make_tuner": "search",
    "TUNERS": "tuners",
    "best_overrides": "space", "check_space": "space", "overrides_yaml": "space", "project_name": "space",
    "trial_config": "space",
}
__all__ = sorted(_HOME)

__getattr__ = lazy_attributes(__name__, _HOME)
