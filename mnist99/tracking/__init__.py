"""The MLflow boundary: only this package imports mlflow; stages, benchmarks and tests go through here.

``store`` (where runs live), ``runs`` (stage runs and what they log), ``queries`` (reading runs back),
``models`` (MLflow models and the registry), ``keys`` (cache keys and provenance digests), ``resume``
(a killed job's checkpoint folder and run), ``callbacks`` (per-epoch logging) and ``server``
(``mlflow server`` for the UI). Callers use ``from mnist99 import tracking``.
"""
from mnist99.tracking.callbacks import MlflowEpochLogger, current_lr
from mnist99.tracking.keys import CACHE_KEY_TAG, CODE_DIGEST_TAG, cache_key, code_digest, git_commit
from mnist99.tracking.models import keras_signature, log_registered_model
from mnist99.tracking.queries import (
    cached_run,
    child_runs,
    download,
    finished_run,
    last_step,
    latest_finished_run,
    matching_train_runs,
    metric_history,
    run_params,
    split_digest,
    unfinished_run,
)
from mnist99.tracking.runs import (
    base_tags,
    log_config,
    log_dataset,
    log_dict,
    log_figure,
    log_metrics,
    log_model_file,
    log_params,
    log_summary,
    log_text,
    set_tag,
    set_tags,
    stage_run,
    update_run,
)
from mnist99.tracking.server import free_port, server_argv, serving
from mnist99.tracking.store import (
    DEFAULT_STORE,
    EXPERIMENT_DESCRIPTION,
    EXPERIMENT_KIND,
    check_store,
    current_uri,
    setup,
    tracking_uri,
    ui_command,
    use_experiment_of,
    use_store,
)

__all__ = [
    "CACHE_KEY_TAG", "CODE_DIGEST_TAG", "DEFAULT_STORE", "EXPERIMENT_DESCRIPTION", "EXPERIMENT_KIND",
    "MlflowEpochLogger", "base_tags", "cache_key", "cached_run", "check_store", "child_runs", "code_digest",
    "current_lr", "current_uri", "download", "finished_run", "free_port", "git_commit", "keras_signature",
    "last_step", "latest_finished_run", "log_config", "log_dataset", "log_dict", "log_figure", "log_metrics",
    "log_model_file", "log_params", "log_registered_model", "log_summary", "log_text", "matching_train_runs",
    "metric_history", "run_params", "server_argv", "serving", "set_tag", "set_tags", "setup", "split_digest",
    "stage_run", "tracking_uri", "ui_command", "unfinished_run", "update_run", "use_experiment_of", "use_store",
]
