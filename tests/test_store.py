"""Where runs are stored: each config's store, however many stores one process has opened before."""
from __future__ import annotations

import mlflow

from mnist99 import tracking
from mnist99.config import load_config


def test_a_config_without_a_store_gets_the_default_after_another_store_was_opened(tmp_path, monkeypatch):
    """MLflow 3's set_tracking_uri writes $MLFLOW_TRACKING_URI; the next config must not read it as the user's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    tracking.setup(load_config([], [f"tracking.uri={other}"]))
    assert mlflow.get_tracking_uri() == other
    default = f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"
    assert tracking.tracking_uri(load_config([], [])) == default
    tracking.setup(load_config([], []))
    assert mlflow.get_tracking_uri() == default


def test_the_users_environment_store_stays_the_default(tmp_path, monkeypatch):
    mine = f"sqlite:///{tmp_path / 'mine' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    tracking.use_store(load_config([], [f"tracking.uri=sqlite:///{tmp_path / 'other' / 'mlflow.db'}"]))
    assert tracking.tracking_uri(load_config([], [])) == mine
