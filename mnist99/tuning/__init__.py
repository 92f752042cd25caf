"""Hyperparameter search with KerasTuner over the ordinary Config (stage ``tune``)."""
from mnist99.tuning.search import (
           OBJECTIVE,
           TUNERS,
           ConfigHyperModel,
           distributed_env,
           make_tuner,
)
from mnist99.tuning.space import (
           best_overrides,
           check_space,
           overrides_yaml,
           project_name,
           trial_config,
)

__all__ = ["OBJECTIVE", "TUNERS", "ConfigHyperModel", "best_overrides", "check_space", "distributed_env",
           "make_tuner", "overrides_yaml", "project_name", "trial_config"]
