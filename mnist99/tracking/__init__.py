"""The MLflow boundary: models, data and augmentation code never import mlflow; stages go through here.

``store`` (where runs live), ``runs`` (stage runs and what they log), ``queries`` (reading runs
back) and ``models`` (MLflow models and the registry). Callers use ``from mnist99 import tracking``.
"""
from mnist99.tracking.models import keras_signature, log_registered_model
from mnist99.tracking.queries import (
                                      CACHE_KEY_TAG,
                                      cached_run,
                                      child_runs,
                                      download,
                                      finished_run,
                                      last_step,
                                      latest_finished_run,
                                      matching_train_runs,
                                      metric_history,
                                      split_digest,
                                      unfinished_run,
)
from mnist99.tracking.runs import (
                                      MlflowEpochLogger,
                                      base_tags,
                                      code_key,
                                      current_lr,
                                      device_name,
                                      git_commit,
                                      log_config,
                                      log_dataset,
                                      log_dict,
                                      log_figure,
                                      log_metrics,
                                      log_model_file,
                                      log_summary,
                                      log_text,
                                      set_tag,
                                      stage_run,
                                      update_run,
)
from mnist99.tracking.store import (
                                      DEFAULT_STORE,
                                      EXPERIMENT_DESCRIPTION,
                                      EXPERIMENT_KIND,
                                      check_store,
                                      server_argv,
                                      setup,
                                      tracking_uri,
                                      ui_command,
)

__all__ = [
    "CACHE_KEY_TAG", "DEFAULT_STORE", "EXPERIMENT_DESCRIPTION", "EXPERIMENT_KIND", "MlflowEpochLogger", "base_tags",
    "cached_run", "code_key", "check_store", "child_runs", "current_lr", "device_name", "download", "finished_run", "git_commit",
    "keras_signature", "last_step", "latest_finished_run", "log_config", "log_dataset", "log_dict", "log_figure",
    "log_metrics", "log_model_file", "log_registered_model", "log_summary", "log_text", "matching_train_runs",
    "metric_history", "split_digest",
    "server_argv", "set_tag", "setup", "stage_run", "tracking_uri", "ui_command", "unfinished_run", "update_run",
]
