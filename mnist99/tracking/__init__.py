"""The MLflow boundary: only this package imports mlflow; stages, benchmarks and tests go through here.

``store`` (where runs live), ``runs`` (stage runs and what they log), ``queries`` (reading runs back),
``models`` (MLflow models and the registry), ``aliases`` (the registry's champion/challenger aliases),
``keys`` (cache keys and provenance digests), ``resume`` (a killed job's checkpoint folder and run),
``plans`` (a time budget's plan, found again by its key), ``claims`` (which process trains a member),
``callbacks`` (per-epoch logging), ``server`` (``mlflow server`` for the UI, ``mlflow models serve``) and
``teamserver`` with ``postgres`` (the team tracking server on PostgreSQL); ``loadtest`` writes and
counts metric points for benchmarks/tracking_load.py. Callers use ``from mnist99 import
tracking``; the names below load on first use (PEP 562), so a stage module, and ``mnist99 --help``,
imports neither MLflow nor Keras.
"""
from mnist99 import lazy_attributes

_HOME = {
    **dict.fromkeys([
        'gate', 'record_validation', 'registry_lock'
    ], 'aliases'),
    **dict.fromkeys([
        'MlflowEpochLogger', 'current_lr'
    ], 'callbacks'),
    **dict.fromkeys([
        'claimed'
    ], 'claims'),
    **dict.fromkeys([
        'CACHE_KEY_TAG', 'CODE_DIGEST_TAG', 'cache_key', 'code_digest', 'git_commit'
    ], 'keys'),
    **dict.fromkeys([
        'keras_signature', 'log_registered_model', 'save_model'
    ], 'models'),
    **dict.fromkeys([
        'PLAN_KEY_TAG', 'PLAN_TAG', 'record_plan', 'recorded_plan'
    ], 'plans'),
    **dict.fromkeys([
        'cached_run', 'child_runs', 'download', 'finished_run', 'last_step', 'latest_finished_run',
        'matching_train_runs', 'metric_history', 'run_params', 'split_digest', 'unfinished_run', 'validated_on'
    ], 'queries'),
    **dict.fromkeys([
        'active_run_id', 'base_tags', 'log_artifact', 'log_config', 'log_dataset', 'log_dict', 'log_figure', 'log_metrics',
        'log_model_file', 'log_params', 'log_summary', 'log_text', 'set_tag', 'set_tags', 'stage_run', 'update_run'
    ], 'runs'),
    **dict.fromkeys([
        'free_port', 'model_serving', 'server_argv', 'serving'
    ], 'server'),
    **dict.fromkeys([
        'DEFAULT_STORE', 'EXPERIMENT_DESCRIPTION', 'EXPERIMENT_KIND', 'check_store', 'current_uri', 'setup',
        'tracking_uri', 'ui_command', 'use_experiment_of', 'use_store'
    ], 'store'),
}
__all__ = sorted(_HOME)

__getattr__ = lazy_attributes(__name__, _HOME)
