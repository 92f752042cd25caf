"""Shared fixtures: a throwaway MLflow store per test, the real MNIST from $MNIST99_DATA, smoke configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one TensorFlow thread each (and in the processes they
    # start), not a pool per core in each, which oversubscribes the cores (~3% more CPU for the suite).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

if os.environ.get("MNIST99_DATA"):
    # a relative $MNIST99_DATA (e.g. ../shared/data/mnist) names a folder from where pytest started; the tests
    # that run stages in a temporary folder, and the processes they start, need it absolute
    os.environ["MNIST99_DATA"] = os.path.abspath(os.environ["MNIST99_DATA"])

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"


def real_data_dir() -> Path | None:
    path = os.environ.get("MNIST99_DATA")
    return Path(path) if path and Path(path).exists() else None


def require_real_data() -> Path:
    """The real MNIST folder ($MNIST99_DATA). Without it a test is skipped on a contributor's machine,
    but fails under CI (``CI`` set, as ``.ci/run`` runs): there the integration tests must run."""
    path = real_data_dir()
    if path is None:
        missing = "MNIST99_DATA is not set to the folder of the four MNIST files"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}, and CI must run the tests that read it")
        pytest.skip(missing)
    return path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty SQLite MLflow store with MLflow's schema migrations applied, made once per pytest run:
    migrating a new store takes ~1.8 s on 2 cores, copying this file ~0.03 s."""
    import mlflow

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the schema
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, migrated_store) -> str:
    """A fresh SQLite MLflow store under tmp_path (a copy of the migrated empty one), set through
    MLFLOW_TRACKING_URI.

    Also set as MLflow's current URI: an earlier test's ``tracking.setup`` (``mlflow.set_tracking_uri``)
    would otherwise win over the environment variable in this process.
    """
    import shutil

    import mlflow

    path = tmp_path / "mlruns" / "mlflow.db"
    path.parent.mkdir()
    shutil.copyfile(migrated_store, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def released_in_between(store, monkeypatch) -> list[str]:
    """The store's race on a registered-model mutex, once: a SQL store that finds the name taken looks it
    up to say so, and when the holder deleted it in between, the create answers "not found"
    (RESOURCE_DOES_NOT_EXIST; seen in CI with two exports, and with two workers for one member). The first
    create raises that; later ones reach the store. Returns the names created, in order."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    real, calls = mlflow.MlflowClient.create_registered_model, []

    def clash_then_gone(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "create_registered_model", clash_then_gone)
    return calls


@pytest.fixture
def smoke_cfg(tmp_path, store):
    """The real smoke config (real MNIST, a few hundred images), caching into tmp_path."""
    require_real_data()
    from mnist99.config import load_config

    return load_config([SMOKE], [f"data.cache_dir={tmp_path / 'cache'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}"])


@pytest.fixture
def tiny_splits():
    """Synthetic 'MNIST': 200 train, 60 val, 60 test uint8 images, where the label is a bright bar's row."""
    import numpy as np

    from mnist99.data import Splits

    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 30, (n, 28, 28)).astype("uint8")
        for i, label in enumerate(y):
            x[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return x, y

    (xt, yt), (xv, yv), (xs, ys) = make(200), make(60), make(60)
    return Splits(xt, yt, xv, yv, xs, ys, source="synthetic", digest="0" * 64)


@pytest.fixture
def tiny_members():
    """Two tiny 'trained' members (float (28, 28, 1) -> softmax over 10) with fixed random weights.

    Both use the same layer names, as two reloaded copies of one architecture would.
    """
    import keras
    import numpy as np

    def member(seed: int):
        rng = np.random.default_rng(seed)
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Flatten(name="flat")(inputs)
        probs = keras.layers.Dense(10, activation="softmax", name="dense")(x)
        model = keras.Model(inputs, probs, name="tiny")
        model.get_layer("dense").set_weights([rng.normal(0, 0.05, (784, 10)).astype("float32"),
                                              rng.normal(0, 0.1, 10).astype("float32")])
        return model

    return [member(1), member(2)]


def run_benchmark_main(script: str, *args: str) -> str:
    """``python benchmarks/<script> ARGS`` run in this process, as the script's ``main``, from the checkout's
    root; its standard output. A subprocess would spend ~4 s of CPU importing TensorFlow again."""
    import contextlib
    import importlib
    import io
    import sys

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import their neighbours by name
        patch.chdir(ROOT)
        patch.setattr(sys, "argv", [script, *args])
        importlib.import_module(Path(script).stem).main()
    return out.getvalue()


def assert_takes_a_training_step(model):
    """One training step on 8 random images: a finite loss, weights that moved; returns (8, 10) predictions."""
    import numpy as np

    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    y = np.eye(10)[np.arange(8)]
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    probs = model.predict(x, verbose=0)
    assert probs.shape == (8, 10)
    return probs


def pytest_collection_modifyitems(config, items):
    """Run the slow tests first, then the other integration tests, then the unit tests.

    ``make test`` hands tests to its two workers one at a time (``--maxschedchunk 1``), so each worker
    takes the next test when it is free. Started last, a minute-long test would keep one core busy while
    the other idles; started first, the short tests fill the gaps around it. The sort is stable, so
    every worker collects the same order, as pytest-xdist requires.
    """
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.get_closest_marker("integration") is None))


@pytest.fixture(scope="session")
def team_server():
    """``mnist99 server`` (PostgreSQL + MLflow, served artifacts) on free ports for the whole session
    (tests/servers.py); skipped without PostgreSQL's programs, except under CI."""
    from tests.servers import require_postgres, team_server

    require_postgres()
    with team_server() as server:
        yield server
