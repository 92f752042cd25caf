"""The ensemble: the combined model's math on tiny members, and the ``ensemble`` stage at smoke size."""

import keras
import mlflow
import numpy as np
import pytest

from mnist99.delivery.ensemble import as_ensemble, average, combine, member_weights, members_of, shift_averaged


@pytest.fixture
def digits():
    return np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype("uint8")


def member_probs(members, digits):
    return [np.asarray(m(digits[..., None].astype("float32") / 255.0)) for m in members]


def test_combined_model_is_the_mean_of_its_members(tiny_members, digits):
    model = combine(tiny_members)
    expected = np.mean(member_probs(tiny_members, digits), axis=0)
    out = model.predict(digits, verbose=0)
    assert out.shape == (7, 10)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(member_probs(tiny_members, digits)[0], expected, atol=1e-3)  # the members differ


def test_the_exported_input_layers_convert_digits_as_training_does(tiny_members, digits):
    """combine's stock layers (kept so an export loads without mnist99) and to_model_input agree."""
    from mnist99.data.model_input import to_model_input

    ensemble = combine(tiny_members)
    converted = keras.Model(ensemble.input, ensemble.get_layer("add_channel").output).predict(digits, verbose=0)
    expected = keras.ops.convert_to_numpy(to_model_input(digits))
    assert converted.shape == expected.shape
    np.testing.assert_allclose(converted, expected, rtol=1e-6, atol=0)  # x * (1/255) against x / 255


def test_weighted_combination_matches_numpy(tiny_members, digits):
    model = combine(tiny_members, [1.0, 3.0])
    probs = member_probs(tiny_members, digits)
    np.testing.assert_allclose(model.predict(digits, verbose=0), 0.25 * probs[0] + 0.75 * probs[1], atol=1e-6)
    np.testing.assert_allclose(average(probs, [1.0, 3.0]), 0.25 * probs[0] + 0.75 * probs[1], atol=1e-7)


def test_channel_last_input_is_accepted(tiny_members, digits):
    expected = combine(tiny_members).predict(digits, verbose=0)
    with_channel = combine(tiny_members).predict(digits[..., None], verbose=0)
    np.testing.assert_allclose(with_channel, expected, atol=1e-6)


def test_saved_ensemble_reloads_in_safe_mode_with_identical_outputs(tiny_members, digits, tmp_path):
    model = combine(tiny_members, [0.4, 0.6])
    model.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    assert np.abs(loaded.predict(digits, verbose=0) - model.predict(digits, verbose=0)).max() <= 1e-5
    assert [m.name for m in members_of(loaded)] == ["member_1", "member_2"]


def shifted(digits, dy, dx):
    """``digits`` moved by (dy, dx) pixels, zeros where nothing moved in."""
    out = np.zeros_like(digits)
    h, w = digits.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = digits[:, max(-dy, 0):h - max(dy, 0),
                                                                              max(-dx, 0):w - max(dx, 0)]
    return out


def test_test_time_shifts_average_the_member_over_moved_digits(tiny_members, digits, tmp_path):
    shifts = [(0, 2), (-1, 0), (3, -4)]
    model = combine([shift_averaged(m, shifts) for m in tiny_members])
    views = [digits] + [shifted(digits, dy, dx) for dy, dx in shifts]
    expected = np.mean([np.mean(member_probs([m], v)[0:1], axis=0) for m in tiny_members for v in views], axis=0)
    np.testing.assert_allclose(model.predict(digits, verbose=0), expected, atol=1e-6)
    assert not np.allclose(expected, combine(tiny_members).predict(digits, verbose=0), atol=1e-4)
    model.save(tmp_path / "tta.keras")  # stock layers only: safe mode loads it
    loaded = keras.saving.load_model(tmp_path / "tta.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(digits, verbose=0), expected, atol=1e-6)
    assert shift_averaged(tiny_members[0], []) is tiny_members[0]


def test_single_member_and_as_ensemble(tiny_members, digits):
    wrapped = as_ensemble(tiny_members[0])
    assert wrapped.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(wrapped.predict(digits, verbose=0), member_probs(tiny_members[:1], digits)[0], atol=1e-6)
    assert as_ensemble(wrapped) is wrapped


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ValueError, match="weights"):
        member_weights(2, weights)


def test_scores_gain_and_disagreement():
    from mnist99.delivery.ensemble import disagreement, score

    eye = np.eye(10)
    labels = np.array([0, 1, 2, 3])
    a = eye[[0, 1, 2, 9]] * 0.6 + 0.04  # right on 3 of 4, wrong on the last
    b = eye[[0, 1, 9, 3]] * 0.9 + 0.01  # wrong on the third, confidently right on the last
    metrics = score({"val": [a, b], "test": [a, b]}, {"val": labels, "test": labels}, [0.5, 0.5])
    assert metrics["member_1_test_accuracy"] == 0.75 and metrics["member_2_test_accuracy"] == 0.75
    assert metrics["best_member_test_accuracy"] == 0.75
    assert metrics["test_accuracy"] == 0.75  # the average is right on the last but wrong on the third
    assert metrics["ensemble_gain"] == 0.0
    assert metrics["disagreement"] == 0.5
    assert disagreement([a]) == 0.0


@pytest.mark.integration
@pytest.mark.slow
def test_run_stage_logs_ensemble_with_members_and_ensemble_reuses_runs(smoke_cfg, store, tmp_path):
    """The main command at smoke size (its ensemble part checked in depth), then an ensemble of its members."""
    from mnist99 import tracking
    from mnist99.config import with_overrides
    from mnist99.stages import ensemble, run

    out = run.run(with_overrides(smoke_cfg, {"export.dir": str(tmp_path / "exports")}))
    client = mlflow.MlflowClient(store)
    parent = client.get_run(out["run_id"])
    assert parent.info.run_name == "ensemble-2x-rescnn" and parent.info.status == "FINISHED"
    assert parent.data.tags["mnist99.stage"] == "ensemble"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert sorted(c.info.run_id for c in children) == sorted(out["member_run_ids"])
    assert sorted(c.info.run_name for c in children) == ["member-1-rescnn-s1", "member-2-rescnn-s2"]
    assert parent.data.tags["mnist99.member_run_ids"] == ",".join(out["member_run_ids"])
    for key in ("test_accuracy", "val_accuracy", "member_1_test_accuracy", "member_2_val_accuracy",
                "best_member_test_accuracy", "ensemble_gain", "disagreement"):
        assert parent.data.metrics[key] == pytest.approx(out[key]), key
    assert out["ensemble_gain"] == pytest.approx(out["test_accuracy"] - out["best_member_test_accuracy"])
    assert [a.path for a in client.list_artifacts(out["run_id"], "model")] == ["model/model.keras"]
    assert "evaluation/confusion_matrix.png" in {a.path for a in client.list_artifacts(out["run_id"], "evaluation")}
    assert out["export"]["source_run_id"] == out["run_id"]
    assert out["export"]["model_uri"] == "models:/mnist99-ensemble/1"
    assert out["export"]["serve_uri"] == "models:/mnist99-ensemble@champion"  # the gate reads what the run logged:
    version_tags = client.get_model_version("mnist99-ensemble", "1").tags
    assert float(version_tags["mnist99.val_accuracy"]) == pytest.approx(out["val_accuracy"])
    assert version_tags["mnist99.val_digest"] == tracking.validated_on(parent)
    assert (tmp_path / "exports" / "mnist99-ensemble.keras").is_file()
    for i, child in enumerate(sorted(children, key=lambda c: c.info.run_name), start=1):  # same model, same data
        assert child.data.metrics["test_accuracy"] == pytest.approx(out[f"member_{i}_test_accuracy"], abs=1e-6)

    n_runs = len(client.search_runs([parent.info.experiment_id]))  # prepare, ensemble, 2 members, export
    reuse = with_overrides(smoke_cfg, {"ensemble.members": [{"run_id": r} for r in out["member_run_ids"]],
                                       "ensemble.weighting": "val_accuracy"})
    again = ensemble.run(reuse)
    assert len(client.search_runs([parent.info.experiment_id])) == n_runs + 1  # the parent only: nothing trained
    assert again["member_run_ids"] == out["member_run_ids"]
    assert again["member_1_test_accuracy"] == pytest.approx(out["member_1_test_accuracy"])
    weights = np.array([out["member_1_val_accuracy"], out["member_2_val_accuracy"]])
    assert again["weights"] == pytest.approx(list(weights / weights.sum()))


@pytest.mark.integration
@pytest.mark.slow
def test_rerun_after_a_failed_member_retrains_only_that_member(smoke_cfg, store, monkeypatch, capsys):
    """Member 2 fails (as a killed job would), so the parent run fails; the rerun reuses member 1's FINISHED run."""
    from mnist99.stages import ensemble
    from mnist99.training import fit

    real, calls = fit.train_model, []

    def second_call_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("member 2 interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(fit, "train_model", second_call_fails)
    with pytest.raises(RuntimeError, match="member 2 interrupted"):
        ensemble.run(smoke_cfg)
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(smoke_cfg.tracking.experiment).experiment_id
    members = {r.info.run_name: r for r in client.search_runs([exp], "tags.`mnist99.stage` = 'train'")}
    assert {name: r.info.status for name, r in members.items()} == {"member-1-rescnn-s1": "FINISHED",
                                                                     "member-2-rescnn-s2": "FAILED"}
    capsys.readouterr()

    out = ensemble.run(smoke_cfg)
    assert len(calls) == 3  # only member 2 trained again
    assert out["member_run_ids"][0] == members["member-1-rescnn-s1"].info.run_id
    assert f"member 1/2 reuses FINISHED train run {out['member_run_ids'][0]}" in capsys.readouterr().out
    assert client.get_run(out["run_id"]).info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.slow
def test_ensemble_reuses_a_train_run_of_the_same_config(smoke_cfg, store, capsys):
    """``mnist99 train`` (seed 1) then ``mnist99 ensemble``: member 1 is that run, only member 2 trains. Then a
    larger ensemble, evaluated and exported otherwise, trains its third member only."""
    from mnist99.config import with_overrides
    from mnist99.stages import ensemble, train

    first = train.run(smoke_cfg)
    out = ensemble.run(smoke_cfg)
    assert out["member_run_ids"][0] == first["run_id"] and out["member_run_ids"][1] != first["run_id"]
    assert f"member 1/2 reuses FINISHED train run {first['run_id']}" in capsys.readouterr().out
    assert out["member_1_test_accuracy"] == pytest.approx(first["test_accuracy"], abs=1e-6)

    larger = with_overrides(smoke_cfg, {"ensemble.size": 3, "ensemble.weighting": "val_accuracy",
                                        "evaluate.robustness": not smoke_cfg.evaluate.robustness,
                                        "export.formats": ["keras"]})
    grown = ensemble.run(larger)
    printed = capsys.readouterr().out
    assert grown["member_run_ids"][:2] == out["member_run_ids"]
    assert f"member 2/3 reuses FINISHED train run {out['member_run_ids'][1]}" in printed
    assert "ensemble: member 3/3: training" in printed and "member 1/3: training" not in printed


@pytest.mark.integration
def test_a_lone_member_is_exported_averaged_over_its_shifts_and_says_so(smoke_cfg, store, capsys):
    """An ensemble of one member (what a short budget leaves) averages ``ensemble.tta_shifts_alone``; the
    run says so and records the passes a digit makes (tag ``mnist99.tta_views``); ``[]`` turns it off."""
    from mlflow.tracking import MlflowClient

    from mnist99.config import with_overrides
    from mnist99.delivery.loading import load_run_model
    from mnist99.stages import ensemble

    lone = with_overrides(smoke_cfg, {"ensemble.size": 1, "evaluate.robustness": False, "export.formats": ["keras"]})
    shifted = ensemble.run(lone)
    assert "ensemble: each digit averaged with 4 shifted copies of it (ensemble.tta_shifts_alone)" in capsys.readouterr().out
    plain = ensemble.run(with_overrides(lone, {"ensemble.tta_shifts_alone": []}))  # the same member, reused
    assert "shifted copies" not in capsys.readouterr().out
    assert plain["member_run_ids"] == shifted["member_run_ids"]
    tags = {name: MlflowClient().get_run(out["run_id"]).data.tags for name, out in (("shifted", shifted), ("plain", plain))}
    assert (tags["shifted"]["mnist99.tta_views"], tags["plain"]["mnist99.tta_views"]) == ("5", "1")
    shift_layers = [[layer.name for layer in members_of(load_run_model(out["run_id"]))[0].layers
                     if layer.name.startswith("tta_shift_")] for out in (shifted, plain)]
    assert shift_layers == [[f"tta_shift_{i}" for i in range(1, 5)], []]  # the logged (exported) models


@pytest.mark.integration
def test_a_member_that_early_stopping_ended_says_so(smoke_cfg, store, capsys):
    """Without a budget too, a member that stopped before its epochs says when, and whose weights it keeps:
    the ensemble prints no other line per member. (A min_delta no epoch can reach stops it after epoch 2.)"""
    from mnist99 import tracking
    from mnist99.config import with_overrides
    from mnist99.data import make_splits
    from mnist99.stages.ensemble import fit_member

    cfg = with_overrides(smoke_cfg, {"ensemble.size": 1, "train.epochs": 4, "train.early_stopping.patience": 1,
                                     "train.early_stopping.min_delta": 10.0, "train.early_stopping.start_from": 0.0})
    tracking.setup(cfg)
    out = fit_member(cfg, make_splits(cfg.data, cfg.seed), 1)
    assert (out["epochs_run"], out["best_epoch"]) == (2, 1)
    assert ("ensemble: member 1/1: early stopping ended it after epoch 2 of 4; the weights of epoch 1 are kept"
            in capsys.readouterr().out.splitlines())
