"""Cache keys: a stage's key follows what the stage computes from, and nothing else."""
import pytest

from mnist99.config import load_config, with_overrides
from mnist99.tracking.keys import cache_key
from tests.conftest import SMOKE

DIGEST = "0" * 64


@pytest.fixture(scope="module")
def cfg():
    return load_config([SMOKE], [])


@pytest.mark.parametrize("key, value", [
    ("ensemble.size", 5), ("evaluate.robustness", False), ("export.formats", ["onnx"]),
    ("train.verbose", 1), ("train.checkpoint_dir", "/elsewhere/ckpt"),
    ("data.cache_dir", "/elsewhere/cache"), ("data.path", "/elsewhere/mnist"),
    ("tracking.uri", "sqlite:////elsewhere/mlflow.db"),
])
def test_a_train_key_ignores_what_the_model_does_not_learn_from(cfg, key, value):
    assert cache_key("train", with_overrides(cfg, {key: value}), DIGEST) == cache_key("train", cfg, DIGEST)


@pytest.mark.parametrize("key, value", [
    ("train.epochs", 7), ("train.budget", "5m"), ("model.width", 12), ("augment.enabled", False),
    ("data.val_size", 1000), ("seed", 2), ("diagnostics.enabled", True),
])
def test_a_train_key_changes_with_what_the_model_learns_from(cfg, key, value):
    assert cache_key("train", with_overrides(cfg, {key: value}), DIGEST) != cache_key("train", cfg, DIGEST)


def test_a_budget_plan_key_tells_two_budgets_apart(cfg):
    """A budget's plan is found by the key of the job as asked, budget included (training.budget)."""
    five, ten = (with_overrides(cfg, {"train.budget": b}) for b in ("5m", "10m"))
    assert cache_key("ensemble", five, DIGEST) != cache_key("ensemble", ten, DIGEST)
    assert cache_key("train", five, DIGEST) != cache_key("train", ten, DIGEST)


def test_keys_change_with_the_data_and_the_stage(cfg):
    assert cache_key("train", cfg, DIGEST) != cache_key("train", cfg, "1" * 64)
    assert len({cache_key(stage, cfg, DIGEST) for stage in ("prepare", "train", "ensemble", "study")}) == 4
