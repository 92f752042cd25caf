"""The ``study`` stage: arms checked before training, and the three studies' comparison at smoke size."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from mnist99.config import load_config
from mnist99.errors import ConfigError
from mnist99.reports import comparison
from mnist99.stages.study import arm_configs
from tests.conftest import ROOT, SMOKE, require_real_data

STUDIES = ROOT / "configs" / "studies"
ARTIFACTS = {"comparison.csv", "comparison.md", "curves.png", "grad_norms_by_depth.png", "dead_units.png"}


def study_cfg(name: str, *overrides: str):
    return load_config([STUDIES / f"{name}.yaml"], list(overrides))


@pytest.mark.parametrize("name,arms", [
    ("activations", ["relu", "leaky_relu", "prelu", "elu", "selu", "maxout"]),
    ("optimizers", ["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"]),
    ("initializers", ["he_normal", "glorot_uniform", "orthogonal", "lecun_normal"]),
])
def test_each_study_file_gives_valid_arms_with_the_same_budget_and_diagnostics_on(name, arms):
    plan = arm_configs(study_cfg(name))
    assert [arm.name for arm, _ in plan] == arms
    assert len({(c.seed, c.train.epochs, c.model.name, c.model.width, c.model.depth) for _, c in plan}) == 1
    assert all(c.diagnostics.enabled for _, c in plan)


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


def test_the_cli_reports_a_bad_arm_in_one_line(tmp_path, store, capsys):
    from mnist99.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: s, arms: [{name: x, overrides: {seed: 2}}]}\n")
    assert main(["study", "-c", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        "mnist99 study: error: study arm 'x' overrides 'seed', which every arm shares "
        "(not overridable: seed, data, train.epochs, diagnostics, tracking, study)")


def arm(name, val, dead, layers=("stem", "logits")):
    metrics = {"val_accuracy": val, "test_accuracy": val - 0.01, "best_epoch": 2, "epochs_run": 2,
               "train_seconds": 1.5, "dead_units": dead, "overfit_epoch": None}
    return comparison.ArmResult(name, f"id-{name}", metrics, {"val_accuracy": [0.5, val], "val_loss": [1.0, 0.5]},
                                [(layer, 0.1 * (i + 1)) for i, layer in enumerate(layers)])


def test_the_comparison_table_keeps_the_arm_order_and_prints_missing_values_as_dashes():
    arms = [arm("relu", 0.91, 3), arm("elu", 0.93, 0)]
    df = comparison.table(arms)
    assert list(df["arm"]) == ["relu", "elu"] and list(df.columns) == list(comparison.COLUMNS)
    lines = comparison.to_markdown(df).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| relu | 0.9100 | 0.9000 | 2 | 2 | 1.5 | 3 | - | id-relu |"


def test_the_comparison_figures_draw_one_line_or_bar_per_arm():
    arms = [arm("relu", 0.91, 3), arm("elu", 0.93, 0), arm("selu", 0.92, 1)]
    curves = comparison.curves_figure(arms)
    assert [len(ax.lines) for ax in curves.axes] == [3, 3]
    grads = comparison.grad_norms_figure(arms)
    assert len(grads.axes[0].lines) == 3
    np.testing.assert_allclose(grads.axes[0].lines[0].get_ydata(), [0.1, 0.2])
    dead = comparison.dead_units_figure(arms)
    assert [p.get_height() for p in dead.axes[0].patches] == [3, 0, 1]


def run_smoke_study(name: str, tmp_path, arms: int | None = None):
    require_real_data()
    from mnist99.stages import study

    cfg = load_config([STUDIES / f"{name}.yaml", SMOKE], [f"data.cache_dir={tmp_path / 'cache'}",
                                                            f"train.checkpoint_dir={tmp_path / 'ckpt'}"])
    if arms is not None:
        cfg.study.arms = cfg.study.arms[:arms]
    return cfg, study.run(cfg)


def check_parent_and_children(store, cfg, out):
    """The parent holds the comparison; each arm is a FINISHED nested train run with diagnostics."""
    client = mlflow.MlflowClient(store)
    parent = client.get_run(out["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mnist99.stage"] == "study"
    assert parent.info.run_name == f"study-{cfg.study.name}"
    assert {a.path.split("/")[-1] for a in client.list_artifacts(out["run_id"], "comparison")} == ARTIFACTS
    csv = client.download_artifacts(out["run_id"], "comparison/comparison.csv")
    table = pd.read_csv(csv)
    names = [a.name for a in cfg.study.arms]
    assert list(table["arm"]) == names
    assert table["val_accuracy"].between(0, 1).all() and (table["epochs_run"] == 1).all()
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{out['run_id']}'")
    assert sorted(c.info.run_name for c in children) == sorted(f"study-{cfg.study.name}-{n}" for n in names)
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
    cfg, out = run_smoke_study("activations", tmp_path)
    children = check_parent_and_children(store, cfg, out)
    by_arm = {c.data.tags["mnist99.arm"]: c for c in children}
    assert by_arm["selu"].data.params["model.activation"] == "selu"
    for child in children:  # resmlp names its activation layers: the same metric names in every arm
        watched = {k for k in child.data.metrics if k.startswith("dead_units/")}
        assert watched == {"dead_units/stem_act", "dead_units/block1_act"}, child.info.run_name
    assert set(out["arms"]) == {a.name for a in cfg.study.arms}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["optimizers", "initializers"])
def test_the_optimizer_and_initializer_studies_compare_their_first_arms(name, tmp_path, store):
    cfg, out = run_smoke_study(name, tmp_path, arms=2)
    check_parent_and_children(store, cfg, out)
    assert out["table"].count("\n") == 2 + 2
