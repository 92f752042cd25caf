"""export.formats: each format written, checked and published together, with Keras' answers in every runtime.

One export (an ensemble of three tiny weighted members) is made per module, in all four formats, through
the export stage; the tests read it. The full-size ensemble's figures come from benchmarks/inference.py.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pytest

from mnist99.cli import main
from mnist99.config import load_config
from mnist99.delivery.loading import load_ensemble
from mnist99.errors import ConfigError, ExportError, ModelLoadError
from tests.conftest import SMOKE
from tests.test_evaluation import tiny_member
from tests.test_images import drawn_seven

ALL = ["keras", "saved_model", "onnx", "litert"]
NAME = "mnist99-ensemble"


def tophat_member(seed: int) -> keras.Model:
    """A tiny member whose input goes through :func:`mnist99.models.layers.tophat` first."""
    from mnist99.models.layers import tophat

    keras.utils.set_random_seed(seed)
    images = keras.Input((28, 28, 1))
    x = tophat(images, load_config([], ["model.tophat=5"]).model)
    return keras.Model(images, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))


def plaincnn_member(seed: int) -> keras.Model:
    """A narrow ``plaincnn`` (unpadded and strided convolutions, BatchNorm, a dense head), untrained."""
    from mnist99.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model(load_config([], ["model.name=plaincnn", "model.width=4", "model.depth=1"]).model)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, migrated_store):
    """The export stage's result for formats ``ALL`` and ``export.keep: 2`` over SavedModel versions 1-3
    left by earlier exports; with its config, Keras model and own MLflow store. Member 1 carries
    test-time shifts, member 2 a top-hat input (``model.tophat``) and member 3 is a ``plaincnn``, so the
    parity and builtin-ops checks cover them."""
    from mnist99 import tracking
    from mnist99.delivery.ensemble import combine, shift_averaged
    from mnist99.stages import export

    root = tmp_path_factory.mktemp("formats")
    (root / "mlruns").mkdir()
    shutil.copyfile(migrated_store, root / "mlruns" / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        cfg = load_config([SMOKE], [f"export.dir={root / 'exports'}", f"export.formats=[{','.join(ALL)}]",
                                    "export.keep=2", "tracking.system_metrics=false"])
        tracking.setup(cfg)
        model = combine([shift_averaged(tiny_member(1), [(0, 2), (-1, 0)]), tophat_member(2), plaincnn_member(3)],
                        [0.25, 0.5, 0.25])
        for old in ("1", "2", "3"):
            (root / "exports" / NAME / old).mkdir(parents=True)
        with tracking.stage_run(cfg, "ensemble", "ensemble-smoke") as active:
            tracking.log_model_file(model)
        out = export.export_run(cfg, active.info.run_id)
        yield SimpleNamespace(out=out, cfg=cfg, model=model, root=root, uri=uri)


@pytest.fixture(scope="module")
def digits():
    return np.random.default_rng(5).integers(0, 256, (300, 28, 28), dtype=np.uint8)


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_every_format_is_published_tagged_and_logged(exported):
    out, exports = exported.out, exported.root / "exports"
    assert out["files"] == {"keras": str(exports / f"{NAME}.keras"), "saved_model": str(exports / NAME / "4"),
                            "onnx": str(exports / f"{NAME}.onnx"), "litert": str(exports / f"{NAME}.tflite")}
    assert sorted(p.name for p in exports.iterdir()) == [NAME, f"{NAME}.keras", f"{NAME}.onnx", f"{NAME}.tflite"]
    client = mlflow.MlflowClient(exported.uri)
    assert client.get_model_version(NAME, out["version"]).tags["mnist99.formats"] == "keras,saved_model,onnx,litert"
    run = client.get_run(out["run_id"])
    assert {run.data.tags[f"mnist99.file.{fmt}"] for fmt in ALL} == {str(exports.resolve() / p) for p in (
        f"{NAME}.keras", f"{NAME}/4", f"{NAME}.onnx", f"{NAME}.tflite")}
    logged = {a.path: a.file_size for a in client.list_artifacts(out["run_id"], "formats")}
    assert logged == {f"formats/{NAME}.onnx": (exports / f"{NAME}.onnx").stat().st_size,
                      f"formats/{NAME}.tflite": (exports / f"{NAME}.tflite").stat().st_size}


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_keep_deletes_older_saved_model_versions_not_registered_ones(exported, tmp_path):
    from mnist99.delivery.export import prune_versions

    assert sorted(p.name for p in (exported.root / "exports" / NAME).iterdir()) == ["3", "4"]
    assert mlflow.MlflowClient(exported.uri).get_model_version(NAME, exported.out["version"]).status == "READY"
    for name in ("2", "10", "9", "latest"):
        (tmp_path / name).mkdir()
    assert prune_versions(tmp_path, None) == []
    assert [p.name for p in prune_versions(tmp_path, 1)] == ["2", "9"]  # numbers, not names, are compared
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10", "latest"]


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_every_runtime_answers_like_keras(exported, digits):
    import onnxruntime
    import tensorflow as tf

    expected = exported.model.predict(digits, verbose=0)
    files = exported.out["files"]
    answers = {fmt: load_ensemble(files[fmt]).predict(digits, batch_size=128, verbose=0)
               for fmt in ("keras", "onnx", "litert")}
    saved = tf.saved_model.load(files["saved_model"])  # kept: its functions need the object alive
    answers["saved_model"] = saved.serve(tf.constant(digits)).numpy()
    for fmt, probs in answers.items():
        assert probs.shape == (300, 10) and probs.dtype == np.float32, fmt
        assert np.abs(probs - expected).max() <= 1e-4, fmt
        assert (probs.argmax(1) == expected.argmax(1)).all(), fmt
    (onnx_input,) = onnxruntime.InferenceSession(files["onnx"]).get_inputs()
    assert (onnx_input.name, onnx_input.type, onnx_input.shape[1:]) == ("digits", "tensor(uint8)", [28, 28])


def test_a_file_that_is_not_a_digits_to_probabilities_model_is_refused():
    from mnist99.delivery.runtimes import check_contract

    ok = dict(digits_type="tensor(uint8)", probs_type="tensor(float)")
    check_contract(Path("m.onnx"), [("tensor(uint8)", ["N", 28, 28])], [("tensor(float)", ["N", 10])], **ok)
    for inputs, outputs in [([("tensor(float)", ["N", 28, 28])], [("tensor(float)", ["N", 10])]),
                            ([("tensor(uint8)", ["N", 784])], [("tensor(float)", ["N", 10])]),
                            ([("tensor(uint8)", ["N", 28, 28])], [("tensor(float)", ["N", 1000])]),
                            ([("tensor(uint8)", ["N", 28, 28])] * 2, [("tensor(float)", ["N", 10])])]:
        with pytest.raises(ValueError, match=r"^m\.onnx maps .* expected one uint8 \(N, 28, 28\) input"):
            check_contract(Path("m.onnx"), inputs, outputs, **ok)


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_the_litert_file_holds_builtin_ops_only(exported, tmp_path):
    """Checked on the file's own operator table; the check finds the Flex op of Keras' default LiteRT export
    of a model that needs one, and the project's writer refuses that model instead."""
    from mnist99.delivery.formats import write_litert
    from mnist99.delivery.runtimes import LiteRTModel

    assert LiteRTModel(Path(exported.out["files"]["litert"])).custom_ops() == []
    inputs = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Reshape((784,))(keras.layers.Rescaling(1 / 255)(inputs))
    sinh = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(10)(keras.ops.sinh(x))))
    sinh.export(str(tmp_path / "flex.tflite"), format="litert", verbose=False)  # Keras allows SELECT_TF_OPS
    assert LiteRTModel(tmp_path / "flex.tflite").custom_ops() == ["FlexSinh"]
    with pytest.raises(Exception, match="(?i)custom ops|flex"):
        write_litert(sinh, tmp_path / "builtins.tflite")
    assert not (tmp_path / "builtins.tflite").exists()


@pytest.mark.slow
def test_predict_and_evaluate_take_each_format(exported, tiny_splits, monkeypatch, tmp_path, capsys):
    from mnist99.data.images import load_image
    from mnist99.stages import evaluate
    from mnist99.stages.predict import prediction

    drawn_seven().save(tmp_path / "seven.png")
    keras_record = prediction("seven.png", exported.model.predict(load_image(tmp_path / "seven.png")[None], verbose=0)[0])
    files = exported.out["files"]
    for fmt in ("onnx", "litert"):
        assert main(["predict", "--model", files[fmt], str(tmp_path / "seven.png")]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["digit"] == keras_record["digit"], fmt
        assert np.allclose([p for _, p in record["top3"]], [p for _, p in keras_record["top3"]], atol=1e-4), fmt

    monkeypatch.setattr(evaluate, "make_splits", lambda *a: tiny_splits)
    expected = (exported.model.predict(tiny_splits.x_test, verbose=0).argmax(1) == tiny_splits.y_test).mean()
    for fmt, runtime, suffix in (("onnx", "onnxruntime", ".onnx"), ("litert", "litert", ".tflite")):
        metrics = evaluate.run(exported.cfg, SimpleNamespace(model=files[fmt], run_id=None))
        assert metrics["eval_test_accuracy"] == pytest.approx(expected)
        run = mlflow.get_run(metrics["run_id"])
        assert run.data.tags["mnist99.runtime"] == runtime and run.info.run_name == f"evaluate-{NAME}{suffix}"


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_a_missing_extra_fails_when_the_config_is_validated(monkeypatch, capsys, exported):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    line = "export.formats lists 'onnx', which needs the onnx extra: pip install 'mnist99[onnx]'"
    with pytest.raises(ConfigError) as err:
        load_config([], ["export.formats=[keras,onnx]"])
    assert str(err.value) == line
    assert load_config([], ["export.formats=[keras,litert]"]).export.formats == ["keras", "litert"]
    assert main(["train", "--set", "export.formats=[onnx]"]) == 2  # before any data is read or run opened
    captured = capsys.readouterr()
    assert captured.err == f"mnist99 train: error: {line}\n" and captured.out == ""
    with pytest.raises(ModelLoadError, match=r"\.onnx files need the onnx extra: pip install 'mnist99\[onnx\]'$"):
        load_ensemble(exported.out["files"]["onnx"])


@pytest.mark.integration  # real ONNX and LiteRT conversions (the module's shared export)
def test_a_failed_check_publishes_nothing(exported, tmp_path, monkeypatch):
    """A converted file that answers differently, or that its runtime cannot open (tf2onnx has no Erfc,
    which Keras' exact GELU uses), fails the export in one line; nothing reaches the folder."""
    from mnist99.delivery import export

    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    gelu = keras.Model(digits, keras.layers.Softmax()(keras.layers.Dense(10, activation="gelu")(x)))
    with pytest.raises(ExportError, match=r"^export format 'onnx': its runtime cannot open the converted file"):
        with export.staged_export(gelu, tmp_path, NAME, ["keras", "onnx"]):
            pytest.fail("the body runs only after every format passed its check")
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no file can pass
    with pytest.raises(ExportError, match="export format 'onnx' differs from the Keras model by"):
        with export.staged_export(exported.model, tmp_path, NAME, ["keras", "onnx"]):
            pytest.fail("the body runs only after every format passed its check")
    assert list(tmp_path.iterdir()) == []
