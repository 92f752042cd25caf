"""The evaluation pack on small arrays with known answers, and the evaluate stage on a tiny model."""
from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest

from mnist99.reports import plots
from mnist99.reports.evaluation import (
    calibration_bins,
    evaluate_predictions,
    expected_calibration_error,
    members_table,
    nll,
    per_class_markdown,
)


def one_hot(labels, confidence=1.0):
    probs = np.full((len(labels), 10), (1.0 - confidence) / 9)
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def close_all(result):
    for fig in result.figures.values():
        plots.close(fig)


def test_perfect_predictions():
    labels = np.arange(20) % 10
    images = np.zeros((20, 28, 28), np.uint8)
    result = evaluate_predictions(one_hot(labels), labels, images)
    close_all(result)
    assert result.metrics["eval_test_accuracy"] == 1.0
    assert result.metrics["eval_ece"] == 0.0
    assert result.metrics["eval_test_nll"] < 1e-6
    assert result.metrics["eval_test_f1_macro"] == 1.0
    assert all(result.metrics[f"eval_f1_class_{d}"] == 1.0 for d in range(10))
    assert np.array_equal(result.confusion, 2 * np.eye(10, dtype=int))
    assert set(result.figures) == {"confusion_matrix.png", "reliability.png", "misclassified.png"}


def test_hand_computed_ece_and_confusion():
    # Four digits at confidence 0.9 (3 right, 1 wrong) and two at 0.6 (1 right, 1 wrong):
    # bin (0.867, 0.933]: |0.75 - 0.9| * 4/6 = 0.1; bin (0.533, 0.6]: |0.5 - 0.6| * 2/6 = 1/30.
    labels = np.array([0, 1, 2, 3, 4, 5])
    predicted = np.array([0, 1, 2, 7, 4, 9])
    probs = one_hot(predicted, 0.9)
    probs[4:] = one_hot(predicted[4:], 0.6)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1 + 1 / 30)
    bins = calibration_bins(probs, labels)
    assert bins.counts.sum() == 6 and bins.counts[13] == 4 and bins.counts[8] == 2
    assert bins.accuracy[13] == pytest.approx(0.75) and bins.confidence[8] == pytest.approx(0.6)

    result = evaluate_predictions(probs, labels, np.zeros((6, 28, 28), np.uint8))
    close_all(result)
    assert result.metrics["eval_test_accuracy"] == pytest.approx(4 / 6)
    assert result.metrics["eval_test_nll"] == pytest.approx(-(3 * math.log(0.9) + math.log(0.6)
                                                             + math.log(0.1 / 9) + math.log(0.4 / 9)) / 6)
    assert result.confusion[3, 7] == 1 and result.confusion[5, 9] == 1 and np.trace(result.confusion) == 4
    assert result.per_class["3"]["recall"] == 0.0 and result.per_class["7"]["precision"] == 0.0
    assert result.per_class["0"]["support"] == 1


def test_ece_bins_are_right_closed():
    """Confidence exactly on an edge (0.6 = 9/15) falls in the bin below it; 1.0 in the last bin."""
    probs = one_hot(np.array([0, 1]), 1.0)
    probs[0] = one_hot(np.array([0]), 0.6)[0]
    bins = calibration_bins(probs, np.array([0, 1]))
    assert bins.counts[8] == 1 and bins.counts[14] == 1


def test_members_table_and_markdown():
    labels = np.array([0, 1, 2, 3])
    good, bad = one_hot(labels, 0.8), one_hot(np.array([0, 1, 2, 2]), 0.8)
    rows = members_table([good, bad], (good + bad) / 2, labels)
    assert [r["name"] for r in rows] == ["member_1", "member_2", "ensemble"]
    assert rows[0]["accuracy"] == 1.0 and rows[1]["accuracy"] == 0.75
    assert rows[0]["nll"] == pytest.approx(nll(good, labels)) == pytest.approx(-math.log(0.8))
    result = evaluate_predictions((good + bad) / 2, labels, np.zeros((4, 28, 28), np.uint8), [good, bad])
    close_all(result)
    assert result.metrics["eval_member_2_test_accuracy"] == 0.75
    assert "members_vs_ensemble.png" in result.figures
    table = per_class_markdown(result.per_class)
    assert table.count("\n| ") == 12 and "| 3 | " in table  # 10 digits, macro and weighted averages


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(N >= 1, 10\)"):
        evaluate_predictions(np.zeros((3, 9)), np.zeros(3), np.zeros((3, 28, 28)))
    with pytest.raises(ValueError, match="labels must have shape"):
        evaluate_predictions(one_hot([1, 2]), np.zeros(3), np.zeros((2, 28, 28)))


def tiny_model(seed: int = 0):
    """uint8 (N, 28, 28) -> Rescaling -> Flatten -> Dense softmax: a stand-in for an exported ensemble."""
    import keras

    keras.utils.set_random_seed(seed)
    digits = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(digits))
    return keras.Model(digits, keras.layers.Dense(10, activation="softmax")(x))


def tiny_member(seed: int):
    """A float (28, 28, 1) model, like a trained member."""
    import keras

    keras.utils.set_random_seed(seed)
    images = keras.Input((28, 28, 1))
    return keras.Model(images, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(images)))


def test_evaluate_model_logs_the_pack(store, tiny_splits):
    import mlflow

    from mnist99.config import load_config
    from mnist99.delivery.ensemble import combine
    from mnist99.stages.evaluate import evaluate_model

    cfg = load_config()
    members = [tiny_member(1), tiny_member(2)]
    model = combine(members)
    from mnist99 import tracking

    # The store's own experiment (artifacts beside the store, not in ./mlruns of the checkout), and not an
    # experiment id left active by an earlier test's store.
    tracking.setup(cfg, experiment="evaluate-pack")
    with mlflow.start_run() as run:
        metrics = evaluate_model(cfg, model, tiny_splits, members)
    logged = mlflow.get_run(run.info.run_id).data.metrics
    expected = model.predict(tiny_splits.x_test, verbose=0).argmax(1) == tiny_splits.y_test
    assert metrics["eval_test_accuracy"] == pytest.approx(expected.mean())
    assert logged["eval_test_accuracy"] == pytest.approx(metrics["eval_test_accuracy"])
    assert {"eval_ece", "eval_test_nll", "eval_test_f1_macro", "eval_f1_class_9",
            "eval_member_2_test_accuracy"} <= set(logged)
    robust = {f"robust/{k}" for k in ("clean", "mean", "min", "seen_mean", "unseen_mean", "seconds", "fog", "translate")}
    assert robust <= set(logged) and robust <= set(metrics)  # evaluate.robustness is on by default
    assert logged["robust/clean"] == pytest.approx(expected.mean())  # the whole tiny test split: 60 < robustness_size
    assert logged["robust/seconds"] > 0
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert files == {f"evaluation/{name}" for name in (
        "confusion_matrix.png", "confusion_matrix.json", "misclassified.png", "reliability.png",
        "per_class.json", "per_class.md", "members_vs_ensemble.png", "members_vs_ensemble.json",
        "robustness.png", "robustness.md", "robustness.csv")}
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/members_vs_ensemble.json")
    assert [r["name"] for r in table["members"]] == ["member_1", "member_2", "ensemble"]


def test_robustness_off_leaves_it_out_of_the_pack(store, tiny_splits):
    import mlflow

    from mnist99 import tracking
    from mnist99.config import load_config
    from mnist99.stages.evaluate import evaluate_model

    cfg = load_config([], ["evaluate.robustness=false"])
    tracking.setup(cfg, experiment="evaluate-pack")
    with mlflow.start_run() as run:
        metrics = evaluate_model(cfg, tiny_model(), tiny_splits)
    assert "eval_test_accuracy" in metrics and not [k for k in metrics if k.startswith("robust/")]
    assert not [k for k in mlflow.get_run(run.info.run_id).data.metrics if k.startswith("robust/")]
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert files and not [f for f in files if "robustness" in f]


@pytest.mark.slow
def test_evaluate_stage_on_a_keras_file_and_on_a_run(store, tiny_splits, tmp_path, monkeypatch):
    """``--model FILE`` opens a new run ``evaluate-<stem>``; ``--run-id`` logs into the run it evaluates."""
    import mlflow

    from mnist99 import tracking
    from mnist99.config import load_config
    from mnist99.stages import evaluate

    monkeypatch.setattr(evaluate, "make_splits", lambda *a: tiny_splits)
    cfg = load_config()
    path = tmp_path / "tiny.keras"
    tiny_model().save(path)
    out = evaluate.run(cfg, types.SimpleNamespace(model=str(path), run_id=None))
    run = mlflow.get_run(out["run_id"])
    assert run.info.run_name == "evaluate-tiny" and run.info.status == "FINISHED"
    assert run.data.tags["mnist99.stage"] == "evaluate" and run.data.tags["mnist99.model_source"] == str(path)

    tracking.setup(cfg)
    with tracking.stage_run(cfg, "train", "train-tiny") as trained:  # what the train stage leaves behind
        tracking.log_model_file(tiny_member(3))
    out = evaluate.run(cfg, types.SimpleNamespace(model=None, run_id=trained.info.run_id))
    run = mlflow.get_run(trained.info.run_id)
    assert out["run_id"] == trained.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["mnist99.stage"] == "train" and run.data.tags["mnist99.evaluated"] == "true"
    assert "eval_test_accuracy" in run.data.metrics
    per_class = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation/per_class.json"))
    assert per_class["9"]["support"] == int((tiny_splits.y_test == 9).sum())


def test_evaluate_stage_unknown_run_is_a_model_load_error(store):
    from mnist99.config import load_config
    from mnist99.errors import ModelLoadError
    from mnist99.stages import evaluate

    with pytest.raises(ModelLoadError, match="no MLflow run 'f00d'"):
        evaluate.run(load_config(), types.SimpleNamespace(model=None, run_id="f00d"))
