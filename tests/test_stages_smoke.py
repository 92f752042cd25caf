"""Integration: the real stages at smoke size on the real MNIST, checked through the MLflow store."""
import re

import mlflow
import pytest

pytestmark = pytest.mark.integration


def test_prepare_then_train_log_everything(smoke_cfg, store, capsys):
    from mnist99.stages import prepare, train

    prep = prepare.run(smoke_cfg)
    assert prep["train"] == 512 and prep["val"] == 200 and prep["test"] == 256
    out = train.run(smoke_cfg)
    # no budget: the first steps say when it will end
    assert re.search(r"^train: ~\d+\.\d min, expected finish \d\d:\d\d$", capsys.readouterr().out, re.MULTILINE)
    client = mlflow.MlflowClient(store)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-rescnn-adamw-s1"
    assert run.data.tags["mnist99.stage"] == "train"
    assert run.data.tags["mnist99.model"] == "rescnn"
    assert run.data.tags["mnist99.optimizer"] == "adamw" and run.data.tags["mnist99.precision"] == "float32"
    from mnist99.training.devices import cpu_description, has_gpu

    assert run.data.tags["mnist99.data_on_device"] == str(has_gpu()).lower()  # what `auto` chose here
    assert run.data.tags["mnist99.cpu"] == cpu_description()  # which CPU its seconds came from
    assert run.data.params["train.optimizer.lr"] == str(smoke_cfg.train.optimizer.lr)
    assert run.data.params["data.train_limit"] == "512"
    for key in ("test_accuracy", "test_loss", "val_accuracy", "best_epoch", "epochs_run", "train_seconds"):
        assert key in run.data.metrics, key
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    for key in ("loss", "accuracy", "lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1], key
    for key in ("val_loss", "val_accuracy"):  # each epoch, then the restored best model
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "learning_curves.png", "model", "model_summary.txt", "class_counts.json"} <= artifacts
    model_files = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
    assert model_files == ["model/model.keras"]
    inputs = run.inputs.dataset_inputs
    assert {d.dataset.name for d in inputs} == {"mnist-train", "mnist-val", "mnist-test"}
