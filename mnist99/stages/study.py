"""Stage ``study``: train each arm of a study with the same seed and budget, and compare them.

Reads: MNIST (see ``prepare``) and ``study.arms`` (each a name and dotted overrides of the config,
e.g. configs/studies/activations.yaml). Writes: a parent run ``study-<study>`` (tag
mnist99.stage=study) holding one nested ``train`` run per arm (``study-<study>-<arm>``, diagnostics
on) and the comparison: ``comparison/comparison.csv`` and ``.md`` (also the run's description),
``comparison/curves.png``, ``comparison/grad_norms_by_depth.png``, ``comparison/dead_units.png``.
"""
from __future__ import annotations

from mnist99 import tracking
from mnist99.config import Config, StudyArm, with_overrides
from mnist99.data import Splits, make_splits
from mnist99.errors import ConfigError

# Keys an arm may not override: every arm gets the same seed, data, epochs and diagnostics.
SHARED_KEYS = ("seed", "data", "train.epochs", "diagnostics", "tracking", "study")


def arm_configs(cfg: Config) -> list[tuple[StudyArm, Config]]:
    """Each arm and its validated config (diagnostics on), all checked before anything trains."""
    arms = cfg.study.arms
    if not arms:
        raise ConfigError("study.arms is empty: list the arms to compare (see configs/studies/)")
    names = [arm.name for arm in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"study arm names must be unique, repeated: {', '.join(repeated)}")
    plan = []
    for arm in arms:
        for key in arm.overrides:
            if any(key == shared or key.startswith(shared + ".") for shared in SHARED_KEYS):
                raise ConfigError(f"study arm '{arm.name}' overrides '{key}', which every arm shares "
                                  f"(not overridable: {', '.join(SHARED_KEYS)})")
        try:
            plan.append((arm, with_overrides(cfg, {**arm.overrides, "diagnostics.enabled": True})))
        except ConfigError as exc:
            raise ConfigError(f"study arm '{arm.name}': {exc}") from None
    return plan


def arm_result(name: str, out: dict):
    """The comparison record of one finished arm, read back from its MLflow run."""
    from mnist99.reports.comparison import ArmResult
    from mnist99.training.diagnostics import OVERFIT_TAG, kernel_layers, metric_name

    run = tracking.finished_run(out["run_id"])
    logged = run.data.metrics
    epochs = int(out["epochs_run"])  # the histories end with the restored best model one step later
    curves = {key: tracking.metric_history(out["run_id"], key)[:epochs] for key in ("val_accuracy", "val_loss")}
    layers = [layer.name for layer in kernel_layers(out["model"])]
    grad_norms = [(layer, logged.get(metric_name("grad_norm", layer), 0.0)) for layer in layers]
    overfit = run.data.tags.get(OVERFIT_TAG)
    metrics = {key: out.get(key) for key in ("val_accuracy", "test_accuracy", "best_epoch", "epochs_run",
                                             "train_seconds")}
    metrics.update(dead_units=logged.get("dead_units_total"), overfit_epoch=int(overfit) if overfit else None)
    return ArmResult(name, out["run_id"], metrics, curves, grad_norms)


def log_comparison(study: str, arms: list) -> str:
    """Log the table and figures on the active (parent) run; returns the Markdown table."""
    from mnist99.reports import comparison, plots

    df = comparison.table(arms)
    markdown = comparison.to_markdown(df)
    tracking.log_text(df.to_csv(index=False), "comparison/comparison.csv")
    tracking.log_text(markdown, "comparison/comparison.md")
    tracking.set_tag("mlflow.note.content", f"Study `{study}`: same seed and budget for every arm.\n\n{markdown}")
    best = df.loc[df["val_accuracy"].astype(float).idxmax(), "arm"]
    tracking.set_tag("mnist99.best_arm", str(best))
    figures = {"curves.png": comparison.curves_figure, "grad_norms_by_depth.png": comparison.grad_norms_figure,
               "dead_units.png": comparison.dead_units_figure}
    for path, make in figures.items():
        fig = make(arms, title=f"study {study}")
        tracking.log_figure(fig, f"comparison/{path}")
        plots.close(fig)
    return markdown


def run_study(cfg: Config, splits: Splits) -> dict:
    """Inside a new parent run: train every arm in a nested run, then log the comparison."""
    from mnist99.stages.train import train_in_run

    study = cfg.study.name
    plan = arm_configs(cfg)
    arms = []
    with tracking.stage_run(cfg, "study", f"study-{study}", tags={"mnist99.study": study}) as parent:
        tracking.log_config(cfg)
        for arm, arm_cfg in plan:
            out = train_in_run(arm_cfg, splits, nested=True, name=f"study-{study}-{arm.name}")
            tracking.update_run(out["run_id"], tags={"mnist99.study": study, "mnist99.arm": arm.name})
            arms.append(arm_result(arm.name, out))
        markdown = log_comparison(study, arms)
    return {"run_id": parent.info.run_id, "table": markdown,
            "arms": {a.name: {**a.metrics, "run_id": a.run_id} for a in arms}}


def run(cfg: Config) -> dict:
    """Run the configured study; returns the parent run id, the Markdown table and each arm's metrics."""
    arm_configs(cfg)  # refuse a bad arm before touching the store or the data
    tracking.setup(cfg)
    out = run_study(cfg, make_splits(cfg.data, cfg.seed))
    print(f"study {cfg.study.name}:\n{out['table']}parent run id: {out['run_id']}\n"
          f"MLflow UI: {tracking.ui_command(cfg)}")
    return out
