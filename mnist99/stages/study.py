"""Stage ``study``: train each arm of a study with the same seeds and budget, and compare them.

Reads: MNIST (see ``prepare``) and ``study.arms`` (each a name and dotted overrides of the config,
e.g. configs/studies/activations.yaml). Every arm trains once per seed of ``study.seeds`` (seeds
``seed``, ``seed+1``, ...: the same for every arm, so arms pair up by seed); the data split is the one
of ``seed`` for all of them, so a seed changes only initialisation, dropout and batch order.
Writes: a parent run ``study-<study>`` (tag mnist99.stage=study) holding one nested ``train`` run per
arm and seed (``study-<study>-<arm>-s<seed>``, diagnostics on) and the comparison (docs/STUDIES.md):
``comparison/comparison.md`` (also the run's description), ``comparison.csv`` (per arm: means and
Student-t intervals), ``differences.csv`` (paired with ``study.reference``), ``runs.csv`` (every run),
``accuracy.png``, ``curves.png``, ``grad_norms_by_depth.png``, ``dead_units.png``.
Resumable: a FINISHED train run of the same arm, seed, data and code is reused, not retrained, and
a rerun of a study that did not finish continues its parent run, so stopping a study loses at most
the epoch in progress.
"""
from __future__ import annotations

from mnist99 import tracking
from mnist99.config import Config, StudyArm, defaults, with_overrides
from mnist99.data import Splits, make_splits
from mnist99.errors import ConfigError
from mnist99.tracking import resume

# Keys an arm may not override: every arm gets the same seeds, data, epochs and diagnostics.
SHARED_KEYS = ("seed", "data", "train.epochs", "diagnostics", "tracking", "study")


def seeds(cfg: Config) -> list[int]:
    """The training seeds every arm runs: ``seed``, ``seed+1``, ... (``study.seeds`` of them)."""
    return [cfg.seed + i for i in range(cfg.study.seeds)]


def reference_arm(cfg: Config) -> str:
    """The arm the others are compared with: ``study.reference``, else the first arm."""
    names = [arm.name for arm in cfg.study.arms]
    reference = cfg.study.reference or names[0]
    if reference not in names:
        raise ConfigError(f"study.reference '{reference}' is not an arm of the study (arms: {', '.join(names)})")
    return reference


def arm_configs(cfg: Config) -> list[tuple[StudyArm, Config]]:
    """Each arm and its validated config (diagnostics on), all checked before anything trains.

    An arm's config keeps of the ``study`` section only the study's name (the rest as default.yaml has it),
    so adding a seed or an arm to a study leaves the cache keys of the runs it already finished unchanged.
    """
    arms = cfg.study.arms
    if not arms:
        raise ConfigError("study.arms is empty: list the arms to compare (see configs/studies/)")
    names = [arm.name for arm in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"study arm names must be unique, repeated: {', '.join(repeated)}")
    reference_arm(cfg)
    plan = []
    for arm in arms:
        for key in arm.overrides:
            if any(key == shared or key.startswith(shared + ".") for shared in SHARED_KEYS):
                raise ConfigError(f"study arm '{arm.name}' overrides '{key}', which every arm shares "
                                  f"(not overridable: {', '.join(SHARED_KEYS)})")
        try:
            arm_cfg = with_overrides(cfg, {**arm.overrides, "diagnostics.enabled": True})
        except ConfigError as exc:
            raise ConfigError(f"study arm '{arm.name}': {exc}") from None
        arm_cfg.study = defaults().study.model_copy(update={"name": cfg.study.name})
        plan.append((arm, arm_cfg))
    return plan


def run_plan(cfg: Config) -> list[tuple[StudyArm, int, Config]]:
    """Every (arm, seed, config) to train, seed by seed: a study stopped early holds whole seeds, still paired."""
    arms = arm_configs(cfg)
    plan = []
    for seed in seeds(cfg):
        for arm, arm_cfg in arms:
            seeded = arm_cfg.model_copy(deep=True)
            seeded.seed = seed
            plan.append((arm, seed, seeded))
    return plan


def arm_result(name: str, seed: int, run_id: str, model):
    """The comparison record of one FINISHED run of an arm, read back from MLflow (``model``: its
    Keras model, whose layers give the depth order of the gradient norms)."""
    from mnist99.reports.comparison import RUN_COLUMNS, ArmResult
    from mnist99.training.diagnostics import OVERFIT_TAG, kernel_layers, metric_name

    run = tracking.finished_run(run_id)
    logged = run.data.metrics
    epochs = int(logged["epochs_run"])  # the histories end with the restored best model one step later
    curves = {key: tracking.metric_history(run_id, key)[:epochs] for key in ("val_accuracy", "val_loss")}
    grad_norms = [(layer.name, logged.get(metric_name("grad_norm", layer.name), 0.0)) for layer in kernel_layers(model)]
    overfit = run.data.tags.get(OVERFIT_TAG)
    metrics = {key: logged.get(key) for key in RUN_COLUMNS}
    metrics.update(dead_units=logged.get("dead_units_total"), overfit_epoch=int(overfit) if overfit else None)
    return ArmResult(name, seed, run_id, metrics, curves, grad_norms)


def train_or_reuse(study: str, arm: StudyArm, seed: int, cfg: Config, splits: Splits, label: str):
    """One run of ``arm`` at ``seed``: a FINISHED train run of the same config, data and code if the
    store holds one, else trained now in a run nested under the active one. Returns its record."""
    from mnist99.delivery.loading import load_run_model
    from mnist99.stages.train import train_in_run

    found = tracking.cached_run("train", tracking.cache_key("train", cfg, splits.digest))
    if found is not None:
        run_id = found.info.run_id
        print(f"study: {label} reuses FINISHED train run {run_id} (same config, data and code)", flush=True)
        model = load_run_model(run_id)
    else:
        print(f"study: {label}: training", flush=True)
        out = train_in_run(cfg, splits, nested=True, name=f"study-{study}-{arm.name}-s{seed}")
        run_id, model = out["run_id"], out["model"]
    tracking.update_run(run_id, tags={"mnist99.study": study, "mnist99.arm": arm.name})
    return arm_result(arm.name, seed, run_id, model)


def log_comparison(cfg: Config, runs: list) -> str:
    """Log the tables and figures on the active (parent) run; returns the Markdown."""
    from mnist99.reports import comparison, comparison_figures, plots

    study, reference = cfg.study.name, reference_arm(cfg)
    summary = comparison.summary_table(runs)
    differences = comparison.differences_table(runs, reference)
    markdown = comparison.to_markdown(summary, differences, reference, seeds(cfg))
    tracking.log_text(summary.to_csv(index=False), "comparison/comparison.csv")
    tracking.log_text(differences.to_csv(index=False), "comparison/differences.csv")
    tracking.log_text(comparison.runs_table(runs).to_csv(index=False), "comparison/runs.csv")
    tracking.log_text(markdown, "comparison/comparison.md")
    tracking.set_tag("mlflow.note.content", f"Study `{study}`: the same seeds and budget for every arm.\n\n{markdown}")
    tracking.set_tag("mnist99.best_arm", comparison.best_arm(summary))
    for path, make in comparison_figures.FIGURES.items():
        fig = make(runs, title=f"study {study}")
        tracking.log_figure(fig, f"comparison/{path}")
        plots.close(fig)
    return markdown


def run_study(cfg: Config, splits: Splits) -> dict:
    """Inside the parent run (a new one, or the one a stopped attempt left unfinished): train or reuse
    every (arm, seed) run, then log the comparison."""
    study = cfg.study.name
    plan = run_plan(cfg)
    folder = resume.checkpoint_dir(cfg, tracking.cache_key("study", cfg, splits.digest))
    resumed = tracking.unfinished_run(resume.pending_run_id(folder))
    runs = []
    with tracking.stage_run(cfg, "study", f"study-{study}", tags={"mnist99.study": study}, run_id=resumed) as parent:
        resume.remember_run(folder, parent.info.run_id)
        if resumed:
            print(f"study: continuing the unfinished study run {resumed}", flush=True)
            tracking.set_tag("mnist99.resumed", "true")
        else:
            tracking.log_config(cfg)
        for i, (arm, seed, arm_cfg) in enumerate(plan, start=1):
            label = f"run {i}/{len(plan)}, arm {arm.name}, seed {seed}"
            runs.append(train_or_reuse(study, arm, seed, arm_cfg, splits, label))
        markdown = log_comparison(cfg, runs)
    resume.clear(folder)
    return {"run_id": parent.info.run_id, "table": markdown,
            "arms": {arm.name: {"run_ids": [r.run_id for r in runs if r.name == arm.name],
                                "seeds": [r.seed for r in runs if r.name == arm.name]} for arm in cfg.study.arms}}


def run(cfg: Config) -> dict:
    """Run the configured study; returns the parent run id, the Markdown tables and each arm's run ids and seeds."""
    arm_configs(cfg)  # refuse a bad arm before touching the store or the data
    tracking.setup(cfg)
    out = run_study(cfg, make_splits(cfg.data, cfg.seed))
    print(f"study {cfg.study.name}:\n{out['table']}parent run id: {out['run_id']}\n"
          f"MLflow UI: {tracking.ui_command(cfg)}")
    return out
