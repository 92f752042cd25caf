"""Export and loading: all-or-nothing files, the registered MLflow model, identical reloads, bad sources refused."""
import os
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pytest

from mnist99.delivery.ensemble import combine
from mnist99.delivery.loading import load_ensemble
from mnist99.errors import ModelLoadError
from tests.conftest import ROOT, SMOKE


@pytest.fixture
def cfg(tmp_path, store):
    from mnist99 import tracking
    from mnist99.config import load_config

    cfg = load_config([SMOKE], [f"export.dir={tmp_path / 'exports'}"])
    tracking.setup(cfg)
    return cfg


@pytest.fixture
def digits():
    return np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype("uint8")


def log_run(cfg, stage: str, model: keras.Model, tags: dict | None = None) -> str:
    """A finished run of ``stage`` holding ``model`` as model/model.keras, as the train/ensemble stages leave it."""
    from mnist99 import tracking

    with tracking.stage_run(cfg, stage, f"{stage}-tiny", tags=tags) as active:
        tracking.log_model_file(model)
    return active.info.run_id


def test_export_round_trip_keras_file_registry_and_saved_model(cfg, tiny_members, digits, tmp_path):
    import tensorflow as tf

    from mnist99.stages import export

    ensemble = combine(tiny_members, [0.3, 0.7])
    source = log_run(cfg, "ensemble", ensemble, {"mnist99.member_run_ids": "m1,m2"})
    out = export.run(cfg)  # default: the latest finished ensemble run
    expected = ensemble.predict(digits, verbose=0)
    assert out["source_run_id"] == source and out["version"] == "1"
    for loaded in (load_ensemble(out["keras_file"]), load_ensemble("models:/mnist99-ensemble/latest"),
                   load_ensemble(out["model_uri"])):
        assert np.abs(loaded.predict(digits, verbose=0) - expected).max() <= 1e-5
    saved = tf.saved_model.load(out["saved_model"])
    assert np.abs(saved.serve(tf.constant(digits)).numpy() - expected).max() <= 1e-5
    assert out["saved_model"] == str(tmp_path / "exports" / "mnist99-ensemble" / "1")

    client = mlflow.MlflowClient()
    version = client.get_model_version("mnist99-ensemble", "1")
    assert version.tags["mnist99.member_run_ids"] == "m1,m2"
    assert version.tags["mnist99.source_run_id"] == source
    info = mlflow.models.get_model_info("models:/mnist99-ensemble/1")
    (digits_spec,), (probs_spec,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (digits_spec.type, tuple(digits_spec.shape)) == (np.dtype("uint8"), (-1, 28, 28))
    assert (probs_spec.type, tuple(probs_spec.shape)) == (np.dtype("float32"), (-1, 10))
    run = client.get_run(out["run_id"])
    assert run.data.tags["mnist99.stage"] == "export" and run.info.status == "FINISHED"
    assert "input_example.json" in {a.path for a in client.list_artifacts(out["run_id"])}

    again = export.export_run(cfg, source)
    assert again["version"] == "2" and again["saved_model"].endswith("mnist99-ensemble/2")


def test_export_of_a_train_run_takes_raw_digits(cfg, tiny_members, digits):
    from mnist99.stages import export

    run_id = log_run(cfg, "train", tiny_members[0])
    out = export.export_run(cfg, run_id)
    loaded = load_ensemble(out["keras_file"])
    assert loaded.inputs[0].dtype == "uint8"
    expected = np.asarray(tiny_members[0](digits[..., None].astype("float32") / 255.0))
    assert np.abs(loaded.predict(digits, verbose=0) - expected).max() <= 1e-5
    assert mlflow.MlflowClient().get_model_version("mnist99-ensemble", out["version"]).tags[
        "mnist99.member_run_ids"] == run_id


def test_failed_export_leaves_no_file_behind(cfg, tiny_members, monkeypatch, tmp_path):
    from mnist99 import tracking
    from mnist99.stages import export

    with pytest.raises(ModelLoadError, match="no FINISHED ensemble run"):
        export.export_run(cfg)
    source = log_run(cfg, "ensemble", combine(tiny_members))
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "mnist99-ensemble.keras").write_bytes(b"the previous export")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    for target, name in ((keras.Model, "export"), (tracking, "log_registered_model")):  # while writing; once written
        with monkeypatch.context() as patch:
            patch.setattr(target, name, boom)
            with pytest.raises(RuntimeError, match="disk full"):
                export.export_run(cfg, source)
        assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["mnist99-ensemble.keras"], name
        assert (tmp_path / "exports" / "mnist99-ensemble.keras").read_bytes() == b"the previous export"
    export_runs = mlflow.search_runs(filter_string="tags.`mnist99.stage` = 'export'", output_format="list")
    assert [r.info.status for r in export_runs] == ["FAILED", "FAILED"]
    with pytest.raises(ModelLoadError, match="is FAILED, expected a FINISHED run"):
        export.export_run(cfg, export_runs[0].info.run_id)


def test_load_errors_name_the_source(cfg, tmp_path, tiny_members):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    lam_input = keras.Input((28, 28, 1))
    lam = keras.Model(lam_input, keras.layers.Lambda(lambda x: x * 2.0)(lam_input))
    lam.save(tmp_path / "lambda.keras")
    (tmp_path / "model.h5").write_bytes(b"x")
    cases = {
        str(tmp_path / "missing.keras"): "not found",
        str(corrupt): "cannot load model",
        str(tmp_path / "lambda.keras"): "safe mode",
        "models:/no-such-model/latest": "cannot fetch",
        f"runs:/{log_run(cfg, 'train', tiny_members[0])}/model/other.keras": "cannot fetch",
        str(tmp_path / "model.h5"): "not a .keras, .onnx or .tflite file",
    }
    for source, reason in cases.items():
        with pytest.raises(ModelLoadError) as err:
            load_ensemble(source)
        message = str(err.value)
        assert source in message and reason in message and "\n" not in message, message


README_LOAD = ("import numpy as np, mnist99\n"
               "model = mnist99.load_ensemble('models:/mnist99-ensemble@champion')\n"
               "print(model.predict(np.zeros((2, 28, 28), 'uint8'), verbose=0).shape)")


def test_a_new_python_session_loads_the_champion_where_the_job_ran(cfg, tiny_members, tmp_path):
    """The README's Python API typed in a fresh interpreter, no MLFLOW_TRACKING_URI: it reads the store the
    commands wrote (./mlruns/mlflow.db), not MLflow's default ./mlflow.db; in a folder with no store it
    fails in one line naming where it looked, and creates nothing there."""
    from mnist99.stages import export

    export.export_run(cfg, log_run(cfg, "ensemble", combine(tiny_members, [0.5, 0.5])))
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()  # the store fixture's path: the commands' default
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, "-c", README_LOAD], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=False)
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("(2, 10)"), loaded.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    refused = subprocess.run([sys.executable, "-c", README_LOAD], cwd=empty, env=env, capture_output=True,
                             text=True, check=False)
    expected = (f"ModelLoadError: cannot fetch models:/mnist99-ensemble@champion: no MLflow store at "
                f"{empty / 'mlruns' / 'mlflow.db'}")
    assert refused.returncode != 0 and expected in refused.stderr, refused.stderr[-2000:]
    assert list(empty.iterdir()) == []


def test_load_ensemble_is_exported_lazily():
    import mnist99

    done = subprocess.run([sys.executable, "-c", "import sys, mnist99; assert 'keras' not in sys.modules"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert mnist99.load_ensemble is load_ensemble
