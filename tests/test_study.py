"""The ``study`` stage: arms checked before training, the comparison over seeds, the studies at smoke size, resuming."""

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mnist99.config import defaults, load_config
from mnist99.errors import ConfigError
from mnist99.reports import comparison, comparison_figures, intervals
from mnist99.stages.study import arm_configs, reference_arm, run_plan
from tests.conftest import ROOT, SMOKE, require_real_data

STUDIES = ROOT / "configs" / "studies"
ARTIFACTS = {"comparison.csv", "differences.csv", "runs.csv", "comparison.md", "accuracy.png", "curves.png",
             "grad_norms_by_depth.png", "dead_units.png"}


def study_cfg(name: str, *overrides: str):
    return load_config([STUDIES / f"{name}.yaml"], list(overrides))


@pytest.mark.parametrize("name,arms", [
    ("activations", ["relu", "leaky_relu", "prelu", "elu", "selu", "maxout"]),
    ("optimizers", ["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"]),
    ("initializers", ["he_normal", "glorot_uniform", "orthogonal", "lecun_normal"]),
    ("depth", [f"d{d}_{v}" for d in (2, 4, 8, 10) for v in ("res_bn", "res", "bn", "plain")]),
])
def test_each_study_file_gives_valid_arms_with_the_same_budget_and_diagnostics_on(name, arms):
    cfg = study_cfg(name)
    plan = arm_configs(cfg)
    assert [arm.name for arm, _ in plan] == arms and cfg.study.seeds == 5
    assert len({(c.seed, c.train.epochs, c.model.name, c.model.width) for _, c in plan}) == 1
    assert all(c.diagnostics.enabled for _, c in plan)


def test_the_depth_study_crosses_four_depths_with_residuals_and_batchnorm_on_and_off():
    cfg = study_cfg("depth")
    grid = [(c.model.depth, c.model.residual, c.model.batchnorm) for _, c in arm_configs(cfg)]
    assert sorted(grid) == sorted((d, r, b) for d in (2, 4, 8, 10) for r in (True, False) for b in (True, False))
    assert reference_arm(cfg) == "d10_res_bn" and cfg.model.width == 256 and cfg.train.epochs <= 10


def test_arms_differ_only_by_their_overrides():
    plan = {arm.name: cfg for arm, cfg in arm_configs(study_cfg("optimizers"))}
    assert (plan["sgd"].train.optimizer.momentum, plan["sgd_momentum"].train.optimizer.momentum) == (0.0, 0.9)
    assert plan["sgd_nesterov"].train.optimizer.nesterov and not plan["sgd_momentum"].train.optimizer.nesterov
    assert plan["adamw"].train.optimizer.weight_decay == 0.01


@pytest.mark.parametrize("arms,message", [
    ([], "study.arms is empty"),
    ([{"name": "a"}, {"name": "a"}], "unique, repeated: a"),
    ([{"name": "a", "overrides": {"seed": 3}}], "arm 'a' overrides 'seed'"),
    ([{"name": "a", "overrides": {"train.epochs": 3}}], "arm 'a' overrides 'train.epochs'"),
    ([{"name": "a", "overrides": {"data.val_size": 300}}], "arm 'a' overrides 'data.val_size'"),
    ([{"name": "b", "overrides": {"model.activaton": "elu"}}], "study arm 'b': unknown config key 'model.activaton'"),
    ([{"name": "c", "overrides": {"model.dropout": 2}}], "study arm 'c': invalid config value model.dropout=2"),
])
def test_bad_arms_are_refused_before_training_naming_the_arm(arms, message):
    cfg = load_config()
    cfg.study.arms = arms
    with pytest.raises(ConfigError, match=message):
        arm_configs(cfg)


def test_a_reference_that_is_no_arm_is_refused_naming_it_and_the_arms():
    cfg = study_cfg("optimizers", "study.reference=adamx")
    with pytest.raises(ConfigError, match=r"study.reference 'adamx' is not an arm of the study \(arms: sgd, "):
        arm_configs(cfg)
    assert reference_arm(study_cfg("optimizers")) == "sgd"
    assert reference_arm(study_cfg("optimizers", "study.reference=adam")) == "adam"


def test_every_arm_runs_the_same_seeds_on_one_split_and_keeps_only_the_study_name_in_its_config():
    cfg = study_cfg("optimizers", "seed=7", "study.seeds=3")
    plan = run_plan(cfg)
    assert [(arm.name, seed) for arm, seed, _ in plan][:8] == [
        ("sgd", 7), ("sgd_momentum", 7), ("sgd_nesterov", 7), ("adagrad", 7), ("rmsprop", 7), ("adam", 7),
        ("adamw", 7), ("sgd", 8)]
    assert len(plan) == 7 * 3 and all(c.seed == seed for _, seed, c in plan)
    assert {c.study.model_dump_json() for _, _, c in plan} == {
        defaults().study.model_copy(update={"name": "optimizers"}).model_dump_json()}
    # adding seeds or arms leaves the configs (so the cache keys) of the runs already planned unchanged
    more = study_cfg("optimizers", "seed=7", "study.seeds=5")
    more.study.arms = more.study.arms[:2]
    assert run_plan(more)[0][2] == plan[0][2]


def test_the_cli_reports_a_bad_arm_in_one_line(tmp_path, store, capsys):
    from mnist99.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: s, arms: [{name: x, overrides: {seed: 2}}]}\n")
    assert main(["study", "-c", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        "mnist99 study: error: study arm 'x' overrides 'seed', which every arm shares "
        "(not overridable: seed, data, train.epochs, diagnostics, tracking, study)")


def arm(name, seed, val, dead=0, layers=("stem", "logits"), overfit=None):
    metrics = {"val_accuracy": val, "test_accuracy": val - 0.01, "best_epoch": 2, "epochs_run": 2,
               "train_seconds": 1.0 + seed, "dead_units": dead, "overfit_epoch": overfit}
    return comparison.ArmResult(name, seed, f"id-{name}-{seed}", metrics,
                                {"val_accuracy": [0.5, val], "val_loss": [1.0, 0.5]},
                                [(layer, 0.1 * (i + 1) * seed) for i, layer in enumerate(layers)])


# Two arms x three seeds: elu beats relu by 0.03, 0.02, 0.04 on the same seeds.
RUNS = [arm("relu", s, v, dead=s) for s, v in zip((1, 2, 3), (0.90, 0.92, 0.91))] + \
       [arm("elu", s, v, overfit=4 if s == 2 else None) for s, v in zip((1, 2, 3), (0.93, 0.94, 0.95))]


def test_the_summary_gives_each_arm_its_mean_and_student_t_interval_over_the_seeds():
    summary = comparison.summary_table(RUNS)
    assert list(summary["arm"]) == ["relu", "elu"] and list(summary["seeds"]) == [3, 3]
    expected = intervals.t_interval([0.90, 0.92, 0.91])
    relu = summary.iloc[0]
    assert (relu["val_accuracy_mean"], relu["val_accuracy_low"], relu["val_accuracy_high"]) == pytest.approx(
        (expected.mean, expected.low, expected.high))
    assert relu["dead_units_mean"] == 2 and list(summary["overfit_runs"]) == [0, 1]
    assert comparison.best_arm(summary) == "elu"


def test_differences_pair_the_arms_by_seed_against_the_reference():
    diffs = comparison.differences_table(RUNS, reference="relu")
    assert list(diffs["arm"].unique()) == ["elu"] and list(diffs["metric"]) == list(comparison.SUMMARISED)
    val = diffs[diffs["metric"] == "val_accuracy"].iloc[0]
    paired = stats.ttest_rel([0.93, 0.94, 0.95], [0.90, 0.92, 0.91]).confidence_interval()
    assert val["pairs"] == 3 and val["difference"] == pytest.approx(0.03)
    assert (val["low"], val["high"]) == pytest.approx((paired.low, paired.high)) and bool(val["excludes_zero"])
    assert val["detectable"] == pytest.approx(intervals.detectable_difference([0.03, 0.02, 0.04]))
    seconds = diffs[diffs["metric"] == "train_seconds"].iloc[0]  # equal on every seed: a zero-width interval
    assert seconds["difference"] == 0 and seconds["low"] == seconds["high"] == 0 and not seconds["excludes_zero"]
    unpaired = comparison.differences_table([r for r in RUNS if (r.name, r.seed) != ("elu", 3)], reference="relu")
    assert set(unpaired["pairs"]) == {2}  # only the seeds both arms ran


def test_the_markdown_says_what_its_intervals_are_and_prints_them_beside_each_mean():
    summary, diffs = comparison.summary_table(RUNS), comparison.differences_table(RUNS, reference="relu")
    text = comparison.to_markdown(summary, diffs, "relu", seeds=[1, 2, 3])
    assert "mean over seeds 1, 2, 3 (the same for every arm) [95% Student-t interval over the seeds]" in text
    assert "| relu | 3 | 0.9100 [0.8852, 0.9348] | 0.9000 [0.8752, 0.9248] | 3.0 [0.5, 5.5] | 2.0 [-0.5, 4.5] | 0 |" in text
    assert "Arm minus `relu` (the reference)" in text and "80% power" in text
    assert "| elu | val_accuracy | +0.0300 [+0.0052, +0.0548] | yes | 0.0310 |" in text
    single = [r for r in RUNS if r.seed == 1]
    text = comparison.to_markdown(comparison.summary_table(single), comparison.differences_table(single, "relu"),
                                  "relu", seeds=[1])
    assert "| relu | 1 | 0.9000 | 0.8900 | 2.0 | 1.0 | 0 |" in text  # one seed: no interval
    assert "| elu | val_accuracy | +0.0300 | - | - |" in text


def test_the_runs_table_lists_every_arm_and_seed_with_its_run_id():
    table = comparison.runs_table(RUNS)
    assert list(zip(table["arm"], table["seed"])) == [("relu", 1), ("relu", 2), ("relu", 3),
                                                      ("elu", 1), ("elu", 2), ("elu", 3)]
    assert table["run_id"].iloc[4] == "id-elu-2" and table["overfit_epoch"].iloc[4] == 4


def test_the_comparison_figures_draw_every_seed_beside_each_arms_mean():
    accuracy = comparison_figures.accuracy_figure(RUNS)
    for ax in accuracy.axes:  # a line of seed points and an error bar (the mean and its interval) per arm
        seed_points = [line for line in ax.lines if line.get_linestyle() == "None" and len(line.get_xdata()) == 3]
        assert len(seed_points) == 2 and len(ax.containers) == 2
    curves = comparison_figures.curves_figure(RUNS)
    assert [len(ax.lines) for ax in curves.axes] == [2 * (3 + 1)] * 2  # each seed and the mean, per arm
    grads = comparison_figures.grad_norms_figure(RUNS)
    means = [line for line in grads.axes[0].lines if line.get_label() in ("relu", "elu")]
    np.testing.assert_allclose(means[0].get_ydata(), [0.2, 0.4])  # the mean of seeds 1-3 of 0.1 * seed, 0.2 * seed
    dead = comparison_figures.dead_units_figure(RUNS)
    assert [p.get_height() for p in dead.axes[0].patches] == [2, 0]
    assert sum(len(line.get_xdata()) for line in dead.axes[0].lines) == 6


def run_smoke_study(name: str, tmp_path, arms: int | None = None, *overrides: str):
    require_real_data()
    from mnist99.stages import study

    cfg = load_config([STUDIES / f"{name}.yaml", SMOKE], [f"data.cache_dir={tmp_path / 'cache'}",
                                                            f"train.checkpoint_dir={tmp_path / 'ckpt'}", *overrides])
    if arms is not None:
        cfg.study.arms = cfg.study.arms[:arms]
    return cfg, study.run(cfg)


def children_of(store, parent_id: str):
    client = mlflow.MlflowClient(store)
    return client.search_runs([client.get_run(parent_id).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def check_parent_and_children(store, cfg, out):
    """The parent holds the comparison; each (arm, seed) is a FINISHED nested train run with diagnostics."""
    client = mlflow.MlflowClient(store)
    parent = client.get_run(out["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mnist99.stage"] == "study"
    assert parent.info.run_name == f"study-{cfg.study.name}"
    assert {a.path.split("/")[-1] for a in client.list_artifacts(out["run_id"], "comparison")} == ARTIFACTS
    table = pd.read_csv(client.download_artifacts(out["run_id"], "comparison/runs.csv"))
    names = [a.name for a in cfg.study.arms]
    seeds = list(range(cfg.seed, cfg.seed + cfg.study.seeds))
    assert list(zip(table["arm"], table["seed"])) == [(n, s) for s in seeds for n in names]
    assert table["val_accuracy"].between(0, 1).all() and (table["epochs_run"] == 1).all()
    children = children_of(store, out["run_id"])
    assert sorted(c.info.run_name for c in children) == sorted(f"study-{cfg.study.name}-{n}-s{s}"
                                                               for n in names for s in seeds)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mnist99.stage"] == "train"
        assert child.data.tags["mnist99.arm"] in names
        assert child.data.params["diagnostics.enabled"] == "True"
        assert "grad_norm/stem" in child.data.metrics and "grad_norm/logits" in child.data.metrics
        assert "dead_units_total" in child.data.metrics and "loss_gap" in child.data.metrics
    assert parent.data.tags["mnist99.best_arm"] in names
    return children


@pytest.mark.integration
@pytest.mark.slow
def test_the_activation_study_runs_every_arm_at_smoke_size(tmp_path, store):
    cfg, out = run_smoke_study("activations", tmp_path, None, "study.seeds=1")
    children = check_parent_and_children(store, cfg, out)
    by_arm = {c.data.tags["mnist99.arm"]: c for c in children}
    assert by_arm["selu"].data.params["model.activation"] == "selu"
    for child in children:  # resmlp names its activation layers: the same metric names in every arm
        watched = {k for k in child.data.metrics if k.startswith("dead_units/")}
        assert watched == {"dead_units/stem_act", "dead_units/block1_act"}, child.info.run_name
    assert set(out["arms"]) == {a.name for a in cfg.study.arms}


@pytest.mark.integration
@pytest.mark.slow
def test_the_initializer_study_compares_its_first_arms(tmp_path, store):
    cfg, out = run_smoke_study("initializers", tmp_path, 2, "study.seeds=1")
    check_parent_and_children(store, cfg, out)
    assert out["table"].count("\n| he_normal |") == 1 and "| glorot_uniform | val_accuracy |" in out["table"]


class StopDuringTraining(keras.callbacks.Callback):
    """Ctrl-C in the middle of an epoch."""

    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt("stopped by the test")


@pytest.mark.integration
@pytest.mark.slow
def test_two_arms_by_two_seeds_stopped_in_the_third_run_resume_training_only_what_was_missing(
        tmp_path, store, monkeypatch):
    """2 arms x 2 seeds = 4 child runs and a table with intervals. Stopped in the middle of the third run,
    the study leaves the parent and that run KILLED (nothing FINISHED-looking but the two whole runs);
    the rerun continues the same parent, reuses the two runs and trains only the other two."""
    from mnist99.stages import train

    real, trained = train.train_in_run, []

    def stop_in_the_third(cfg, splits, **kwargs):
        trained.append((cfg.train.optimizer.momentum, cfg.seed))
        if len(trained) == 3:
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), StopDuringTraining()]
        return real(cfg, splits, **kwargs)

    monkeypatch.setattr(train, "train_in_run", stop_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_smoke_study("optimizers", tmp_path, 2, "tracking.system_metrics=false")
    client = mlflow.MlflowClient(store)
    parent = client.search_runs([client.get_experiment_by_name("mnist99").experiment_id],
                                filter_string="tags.`mnist99.stage` = 'study'")[0]
    assert parent.info.status == "KILLED"
    first = {c.info.run_name: c for c in children_of(store, parent.info.run_id)}
    assert {name: c.info.status for name, c in first.items()} == {
        "study-optimizers-sgd-s1": "FINISHED", "study-optimizers-sgd_momentum-s1": "FINISHED",
        "study-optimizers-sgd-s2": "KILLED"}

    cfg, out = run_smoke_study("optimizers", tmp_path, 2, "tracking.system_metrics=false")
    assert trained == [(0.0, 1), (0.9, 1), (0.0, 2), (0.0, 2), (0.9, 2)]  # the stopped run again, then the last
    assert out["run_id"] == parent.info.run_id  # the same parent, now FINISHED with all four runs
    children = check_parent_and_children(store, cfg, out)
    assert len(children) == 4
    by_name = {c.info.run_name: c.info.run_id for c in children}
    assert all(by_name[name] == run.info.run_id for name, run in first.items())  # reused, resumed: no new run
    assert out["arms"]["sgd"]["seeds"] == [1, 2]
    summary = pd.read_csv(client.download_artifacts(out["run_id"], "comparison/comparison.csv"))
    assert (summary["seeds"] == 2).all() and (summary["val_accuracy_low"] < summary["val_accuracy_high"]).all()
    assert "| sgd_momentum | val_accuracy | " in out["table"]
