"""Stage ``train``: one model, early-stopped on validation loss, everything logged to one MLflow run.

Reads: MNIST (see ``prepare``). Writes: an MLflow run with params (dotted config keys), per-epoch
metrics, ``test_accuracy`` & co., ``config.yaml``, ``model/model.keras`` and ``learning_curves.png``.
With ``--budget``: first a few timed steps, then the epochs that end within it, the plan on the run
(``budget.*`` params, tag ``mnist99.budget_plan``) and ``budget_used``.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from mnist99 import tracking
from mnist99.config import Config
from mnist99.data import Splits, make_splits
from mnist99.reports import plots
from mnist99.tracking import resume
from mnist99.training import budget
from mnist99.training.budget import Clock, Plan, counted, span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mnist99.cli import add_budget

    add_budget(parser, "this model")


def run_name(cfg: Config) -> str:
    return f"train-{cfg.model.name}-{cfg.train.optimizer.name}-s{cfg.seed}"


def plan_budget(cfg: Config, to_train: Sequence[Config], splits: Splits, started: float, ensemble_size: int = 0,
                force: bool = False, clock: Clock = time.time, at_once: int = 1) -> tuple[Plan, str] | None:
    """The plan for ``cfg.train.budget`` and its key (None without a budget or a member to train); says it in one line.

    The plan recorded under the key of the job as asked (an earlier attempt of the same command) is
    reused unless ``force``; else each config of ``to_train`` is timed (:mod:`mnist99.training.probe`)
    and the epochs planned. ``ensemble_size``: the job ends with an ensemble of that many members,
    evaluated and exported; 0: one model. ``at_once``: workers that can train the members at once
    (``ensemble.workers``): the plan may give each a lane (:func:`timed_plan`).
    """
    if cfg.train.budget is None or not to_train:
        return None
    stage, noun = ("ensemble", "member") if ensemble_size else ("train", "model")
    key = tracking.cache_key(stage, cfg, splits.digest)
    found = None if force else tracking.recorded_plan(key)
    if found is not None:
        plan = Plan.from_dict(found[1])
        print(f"{stage}: {budget.reused_line(plan, found[0], noun)}", flush=True)
        return plan, key
    plan = timed_plan(cfg, to_train, splits, started, ensemble_size, clock, at_once, stage, noun)
    print(f"{stage}: {budget.plan_line(plan, started, noun)}", flush=True)
    return plan, key


def timed_plan(cfg: Config, to_train: Sequence[Config], splits: Splits, started: float, ensemble_size: int,
               clock: Clock, at_once: int, stage: str, noun: str) -> Plan:
    """Time ``to_train`` and plan (see :func:`plan_budget`). Each member is timed in this process first, as one after
    another trains it. With ``at_once`` workers, when that plan keeps every member, they are timed again at once in
    as many processes (:mod:`mnist99.training.concurrent_probe`) and planned in as many lanes, and the plan with more
    member-epochs wins; probes at once that give no speed within a quarter of the budget left leave the members
    one after another. A plan that drops members one after another is kept: at once would drop them too, the
    probe at once costs ~40-60 s on 2 cores, and fewer workers run faster than a probe of ``at_once`` times them
    (a 10-minute job on 2 Intel cores planned 2 members at once x 6 epochs, and they ran 8 in the time)."""
    from mnist99.training.probe import measure_speed, measure_speeds

    counts, robust = splits.counts(), robust_images(cfg)
    speeds = measure_speeds(to_train, lambda member: measure_speed(member, splits, clock))
    alone = budget.plan_job(cfg, to_train, speeds, counts, started, ensemble_size, robust, clock)
    if at_once < 2 or alone.dropped:
        return alone
    from mnist99.training import workers
    from mnist99.training.concurrent_probe import ProbeTimeout, measure_at_once

    env = workers.thread_environment(at_once, workers.cpu_cores())
    try:  # a quarter of the budget left at most: it costs ~40-60 s on 2 cores
        together = measure_speeds(to_train, lambda member: measure_at_once(
            member, at_once, env, clock, limit=(started + cfg.train.budget - clock()) / 4))
    except ProbeTimeout as error:
        print(f"{stage}: budget: {error}; the {noun}s train one after another", flush=True)
        return budget.plan_job(cfg, to_train, speeds, counts, started, ensemble_size, robust, clock)
    scoring = sum(s.image_seconds for s in speeds) / len(speeds)  # what follows the members runs in this process
    plans = {"one after another": budget.plan_job(cfg, to_train, speeds, counts, started, ensemble_size, robust, clock),
             "at once": budget.plan_job(cfg, to_train, together, counts, started, ensemble_size, robust, clock,
                                        lanes=at_once, scoring=scoring)}  # both planned now: each probe's time counts
    print(f"{stage}: budget: " + "; ".join(f"{way}, {counted(len(p.epochs), noun)} x {span(p.fitting)} epochs"
                                           for way, p in plans.items()), flush=True)
    return max(plans.values(), key=lambda p: sum(p.fitting))


def robust_images(cfg: Config) -> int:
    """Digits the evaluation pack's robustness table predicts through an ensemble (``evaluate.robustness``):
    its subset clean and under each corruption."""
    from mnist99.reports.robustness import digits_predicted

    return digits_predicted(cfg.evaluate.robustness_size) if cfg.evaluate.robustness else 0


def finish_timer(cfg: Config, splits: Splits, label: str, members_after: int = 0, ensemble_size: int = 0,
                 clock: Clock = time.time):
    """A callback for a job without a budget: once the member's first steps are timed it prints how long
    the member takes and when the job will end, and again when the mean length of its epochs so far (after
    the first) moves that finish by a minute and a tenth of the time left (``label`` names the member; see :func:`plan_budget`
    for ``ensemble_size``)."""
    from mnist99.training.callbacks import StepClock

    started = clock()
    shown: dict = {}  # the estimate last printed: cost, finish, and what follows this member
    measured: list[float] = []  # the epochs' lengths after the fit's first

    def report(timer: StepClock) -> None:
        speed = budget.Speed.from_steps(timer.step_seconds, timer.warm_at - started - timer.skipped * timer.step_seconds,
                                        cfg.train.batch_size)
        n = splits.counts()
        cost = budget.member_cost(speed, cfg.train, n["train"], n["val"], n["test"])
        after = budget.after_members_seconds([speed.image_seconds] * ensemble_size, n["val"], n["test"],
                                             cfg.train.budget_overhead.job, robust_images(cfg),
                                             budget.tta_views(cfg, ensemble_size))
        epochs = cfg.train.epochs - timer.first_epoch
        finish = budget.finish_estimate(cost, epochs, started, members_after, after)
        shown.update(cost=cost, finish=finish, after=after)
        print(budget.finish_line(label, cost, epochs, finish), flush=True)

    def revise(timer: StepClock, epoch: int, seconds: float) -> None:
        if not shown:
            return
        now = clock()
        measured.append(seconds)  # their mean: one slow or fast epoch (26-37 s on 2 cores) moves no estimate
        mean = sum(measured) / len(measured)
        cost, finish = budget.revised_finish(shown["cost"], mean, cfg.train.epochs, cfg.train.epochs - epoch - 1,
                                             members_after, shown["after"], now)
        if budget.worth_revising(shown["finish"], finish, now):
            shown.update(cost=cost, finish=finish)
            print(budget.finish_line(label, cost, cfg.train.epochs, finish, after_epoch=epoch + 1), flush=True)

    return StepClock(clock=clock, on_timed=report, on_epoch=revise)


def deadline(plan: Plan | None, member: int, carried: float = 0.0) -> list:
    """The callback that ends member ``member`` (0-based, of those the plan trains) at an epoch end once
    another epoch would overrun its share of ``plan`` plus ``carried`` seconds (what the members before
    it left of theirs, negative when they overran); none without a plan or for a plan without fit times."""
    from mnist99.training.callbacks import BudgetDeadline

    allowance = plan.fit_allowance(member) if plan is not None else None
    return [] if allowance is None else [BudgetDeadline(allowance + carried)]


def stop_note(callbacks: Sequence, epochs_run: int, planned: int, budgeted: bool = True) -> str | None:
    """What to say when a fit ended before its planned epochs: early stopping or (``budgeted``) its deadline
    (after the epochs it let run: 7.6 where it ended the fit partway through epoch 8)."""
    stopped = next((cb.stopped_after for cb in callbacks if getattr(cb, "stopped_after", None)), None)
    compressed = any(getattr(cb, "compressed", False) for cb in callbacks)
    return budget.early_stop_note(epochs_run if stopped is None else stopped, planned,
                                  deadline_stopped=stopped is not None, compressed=compressed, budgeted=budgeted)


def with_epochs(cfg: Config, epochs: int) -> Config:
    """``cfg`` as its budget planned it: ``epochs`` epochs and no budget, so its keys name the model it trains."""
    planned = cfg.model_copy(deep=True)
    planned.train.budget, planned.train.epochs = None, epochs
    return planned


def train_in_run(cfg: Config, splits: Splits, nested: bool = False, name: str | None = None,
                 callbacks: Sequence = (), budgeted: tuple[Plan, str] | None = None,
                 tags: dict[str, str] | None = None, key: str | None = None, parent_run_id: str | None = None) -> dict:
    """Train one model inside its own (possibly nested) MLflow run; returns metrics, run id and model.

    ``callbacks``: more Keras callbacks for the fit. ``budgeted``: the plan and key to record on a new run.
    ``tags``: more tags for the run (e.g. the claim it trains under). ``key``: its train cache key, where
    the caller has it already (else computed here). ``parent_run_id``: a run another process holds open to nest
    this one under (an ensemble's, for a member its worker trains).
    """
    from mnist99.training import diagnostics
    from mnist99.training.fit import train_model
    from mnist99.training.recipe import precision_policy

    key = key or tracking.cache_key("train", cfg, splits.digest)
    tags = {"mnist99.model": cfg.model.name, "mnist99.optimizer": cfg.train.optimizer.name,
            "mnist99.precision": precision_policy(cfg.train.mixed_precision), tracking.CACHE_KEY_TAG: key, **(tags or {})}
    ckpt = resume.checkpoint_dir(cfg, key)
    resumed = tracking.unfinished_run(resume.pending_run_id(ckpt))
    with tracking.stage_run(cfg, "train", name or run_name(cfg), tags=tags, nested=nested, run_id=resumed,
                            parent_run_id=parent_run_id) as active:
        resume.remember_run(ckpt, active.info.run_id)
        if resumed:
            print(f"train: resuming interrupted run {resumed} from its last finished epoch")
            tracking.set_tag("mnist99.resumed", "true")
        else:
            tracking.log_config(cfg)
            tracking.log_dataset(splits)
            if budgeted is not None:
                tracking.record_plan(budgeted[1], budgeted[0].to_dict(), budgeted[0].params())
        logger = tracking.MlflowEpochLogger(logged_until=tracking.last_step(active.info.run_id) if resumed else 0)
        extra = [logger, *callbacks]
        if cfg.diagnostics.enabled:
            extra.append(diagnostics.for_validation(cfg.diagnostics, splits,
                                                    log_fn=tracking.log_metrics, tag_fn=tracking.set_tag))
        result = train_model(cfg, splits, callbacks=extra, backup_dir=ckpt / "backup")
        if resumed:
            tracking.set_tag("mnist99.resumed_at_epoch", str(result.metrics["first_epoch"]))
        tracking.set_tag("mnist99.data_on_device", str(result.data_on_device).lower())  # what `auto` chose
        tracking.log_summary(result.model)
        final = {k: result.metrics.pop(k) for k in ("val_accuracy", "val_loss")}
        tracking.log_metrics(result.metrics)
        # The restored best model's validation score, one step after the last epoch, so the
        # curve's last point and the run's latest `val_accuracy` are the model that was kept.
        tracking.log_metrics(final, step=result.metrics["epochs_run"] + 1)
        result.metrics.update(final)
        fig = plots.learning_curves(result.history, title=run_name(cfg))
        tracking.log_figure(fig, "learning_curves.png")
        plots.close(fig)
        tracking.log_model_file(result.model)
    resume.clear(ckpt)
    return {**result.metrics, "run_id": active.info.run_id, "model": result.model}


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Train the configured model, in ``train.budget`` if set; returns its metrics (``test_accuracy``,
    ``seconds_to_val_99``, ...) and run id."""
    started = getattr(args, "started", None) or time.time()
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    budgeted = plan_budget(cfg, [cfg], splits, started)
    if budgeted is not None:
        cfg = with_epochs(cfg, budgeted[0].epochs[0])
    print(f"train: {cfg.model.name}, seed {cfg.seed}, {cfg.train.epochs} epoch(s) of {len(splits.y_train):,} images",
          flush=True)
    timer = deadline(budgeted[0], 0) if budgeted else [finish_timer(cfg, splits, "train")]
    out = train_in_run(cfg, splits, callbacks=timer, budgeted=budgeted)
    out.pop("model")
    to99 = out["seconds_to_val_99"]
    print(
        f"train: test_accuracy={out['test_accuracy']:.4f} val_accuracy={out['val_accuracy']:.4f} "
        f"epochs={out['epochs_run']} (best {out['best_epoch']}) train_seconds={out['train_seconds']:.0f} "
        f"seconds_to_val_99={'never' if to99 is None else f'{to99:.0f}'}"
    )
    if budgeted is not None:
        note = stop_note(timer, out["epochs_run"], cfg.train.epochs)
        if note:
            print(f"train: {note}")
        report_budget("train", budgeted[0], started, out["run_id"])
    print(f"run id: {out['run_id']}\nMLflow UI: {tracking.ui_command(cfg)}")
    return out


def report_budget(stage: str, plan: Plan, started: float, run_id: str, clock: Clock = time.time) -> None:
    """After a budgeted job: the share of the budget it used, said and logged as ``budget_used`` on ``run_id``."""
    seconds = clock() - started
    tracking.update_run(run_id, metrics={"budget_used": seconds / plan.budget})
    print(f"{stage}: {budget.used_line(plan.budget, seconds)}", flush=True)
