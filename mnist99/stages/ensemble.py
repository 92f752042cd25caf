"""Stage ``ensemble``: train N members (nested train runs) and average them, under one parent MLflow run.

Reads: MNIST (see ``prepare``); optionally finished train runs to reuse (``ensemble.members[i].run_id``).
A member whose FINISHED train run already exists (same resolved config, data, version and code:
tag ``mnist99.cache_key``, see :mod:`mnist99.tracking.keys`) is reused, not retrained, so rerunning an
interrupted ensemble trains only the members it had not finished; ``--force`` retrains them all.
Writes: one nested train run per trained member, and a parent run with ``test_accuracy`` and
``val_accuracy`` (the ensemble's), ``member_<i>_{test,val}_accuracy``, ``best_member_test_accuracy``,
``ensemble_gain``, ``disagreement``, the tag ``mnist99.member_run_ids`` and the combined model as
``model/model.keras`` (uint8 digits in, probabilities out).
With ``--budget`` (the whole job, evaluation and export as ``run`` does them included): each member's
epochs, planned once and kept on the parent run (``budget.*`` params, tag ``mnist99.budget_plan``)
so a rerun trains and reuses the same members; ``budget_used`` at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

from mnist99 import tracking
from mnist99.config import Config, MemberConfig
from mnist99.data import Splits, make_splits
from mnist99.errors import ConfigError
from mnist99.reports.metrics import accuracy
from mnist99.training.budget import Plan, counted, tta_views


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mnist99.cli import add_budget

    parser.add_argument("--force", action="store_true",
                        help="retrain every member, even those with a FINISHED train run of the same config "
                             "(and with --budget, time and plan again)")
    add_budget(parser, "the whole job: members, evaluation and export")
    parser.add_argument("--member", type=int, metavar="I",
                        help="train only member I (1..N) as an ordinary train run, so that members train in separate "
                             "processes or machines against one tracking server; a later `ensemble`/`run` reuses it")
    # --member run by an ensemble's process (ensemble.workers): how many members the worker's slot trains after
    # this one, and the ensemble's run to nest the member's under (none without an active run)
    parser.add_argument("--worker", type=int, metavar="AFTER", help=argparse.SUPPRESS)
    parser.add_argument("--parent-run", metavar="RUN_ID", help=argparse.SUPPRESS)
    # and the budget's plan (JSON file) its member's deadline comes from
    parser.add_argument("--plan", metavar="FILE", help=argparse.SUPPRESS)
    # a probe process of members timed at once (mnist99.training.concurrent_probe): when it was launched
    parser.add_argument("--probe", type=float, metavar="LAUNCHED", help=argparse.SUPPRESS)


def run_name(cfg: Config) -> str:
    return f"ensemble-{cfg.ensemble.size}x-{cfg.model.name}"


def plan_budget(cfg: Config, splits: Splits, started: float, force: bool = False,
                at_once: bool = True) -> tuple[Config, tuple[Plan, str] | None]:
    """``cfg`` with the epochs ``train.budget`` buys each member to train (``ensemble.members`` overrides,
    no budget left), and the plan with its key (None without a budget); see :func:`mnist99.stages.train.plan_budget`.
    ``at_once``: plan for the members to train at once as ``ensemble.workers`` has them (:func:`train_at_once`);
    False for a worker that trains one member (``--member``), which plans for them one after another."""
    from mnist99.delivery.ensemble import member_plan
    from mnist99.stages.train import plan_budget as plan_job
    from mnist99.training import workers
    from mnist99.training.devices import has_gpu

    members = member_plan(cfg)
    to_train = [m for m, run_id in members if run_id is None]
    count = workers.worker_count(cfg.ensemble.workers, len(to_train), workers.cpu_cores(), has_gpu()) if at_once else 1
    budgeted = plan_job(cfg, to_train, splits, started, ensemble_size=len(members), force=force, at_once=count)
    if budgeted is None:
        return cfg, None
    epochs = list(budgeted[0].epochs)
    planned = cfg.model_copy(deep=True)
    planned.train.budget = None
    planned.ensemble.members = []
    for i, spec in enumerate(cfg.ensemble.members or [MemberConfig() for _ in members]):
        if spec.run_id:
            planned.ensemble.members.append(spec)
        elif epochs:  # the plan trains the first of them; the last ones it dropped (train.budget_min_epochs)
            seed = cfg.seed + i if spec.seed is None else spec.seed  # as member_plan seeds it at its place
            planned.ensemble.members.append(MemberConfig(seed=seed, overrides={**spec.overrides, "train.epochs": epochs.pop(0)}))
    planned.ensemble.size = len(planned.ensemble.members)
    return planned, budgeted


def fit_members(cfg: Config, splits: Splits, force: bool = False, budgeted: Plan | None = None) -> tuple[list, list[str]]:
    """Train (each in a nested run) or reuse every member; returns the models and their run ids.

    Reused: the run ids the config names, and (unless ``force``) FINISHED train runs of the same
    member key, e.g. the members an interrupted ensemble had already finished or other processes
    trained (``--member I``). ``budgeted``: the plan the epochs come from (see :func:`fit_member`);
    without one, the first member trained says when the job will end.
    """
    from mnist99.delivery.ensemble import member_plan
    from mnist99.delivery.loading import load_run_model
    from mnist99.stages.train import finish_timer

    models, run_ids = [], []
    plan = member_plan(cfg)
    if train_at_once(cfg, splits, plan, force, budgeted):
        force = False  # the workers retrained what --force asked for: the loop below reuses their runs
    timed = budgeted is not None
    carried = 0.0  # seconds of their deadlines the members trained so far left (see fit_member)
    for i, (member_cfg, run_id) in enumerate(plan, start=1):
        if run_id is None:
            timer = [] if timed else [finish_timer(member_cfg, splits, f"ensemble: member {i}/{len(plan)}",
                                                   members_after=len(plan) - i, ensemble_size=len(plan))]
            out = fit_member(cfg, splits, i, nested=True, force=force, budgeted=budgeted, callbacks=timer,
                             carried=carried)
            carried = out.get("unspent", carried)
            timed = timed or "model" in out
            run_id = out["run_id"]
        else:
            out = {}
        models.append(out["model"] if "model" in out else load_run_model(run_id))
        run_ids.append(run_id)
    return models, run_ids


def train_at_once(cfg: Config, splits: Splits, plan: list, force: bool = False, budgeted: Plan | None = None) -> bool:
    """Train the members left to train in worker processes, ``ensemble.workers`` at a time
    (:mod:`mnist99.training.workers`), when that is more than one; whether they did. Each worker is
    ``mnist99 ensemble --member I`` on ``cfg`` as resolved here, so its member has the key this process
    looks up afterwards. ``budgeted``: the plan, as many at a time as its lanes, each member given the plan
    for its deadline."""
    from mnist99.config import to_yaml
    from mnist99.training import workers
    from mnist99.training.devices import has_gpu

    if budgeted is not None and budgeted.lanes < 2:
        return False
    todo = [i for i, (member_cfg, run_id) in enumerate(plan, start=1)
            if run_id is None and (force or not finished_member(member_cfg, splits))]
    cores = workers.cpu_cores()
    if budgeted is not None:
        count = min(budgeted.lanes, len(todo))
    else:
        count = workers.worker_count(cfg.ensemble.workers, len(todo), cores, has_gpu())
    if count < 2:
        return False
    env = workers.thread_environment(count, cores)
    print(f"ensemble: members {', '.join(map(str, todo))} of {len(plan)} train at once, {count} processes of "
          f"{env['TF_NUM_INTRAOP_THREADS']} thread(s) on {cores} cores (ensemble.workers={cfg.ensemble.workers})", flush=True)
    with tempfile.TemporaryDirectory(prefix="mnist99-workers-") as folder:
        config_file = Path(folder) / "config.yaml"
        config_file.write_text(to_yaml(cfg))
        plan_file = None
        if budgeted is not None:
            plan_file = Path(folder) / "plan.json"
            plan_file.write_text(json.dumps(budgeted.to_dict()))
        parent = tracking.active_run_id()
        jobs = [(f"member {i}", workers.member_command(str(config_file), i, force, parent, (len(todo) - 1 - place) // count,
                                                       plan_file and str(plan_file)))
                for place, i in enumerate(todo)]
        workers.run_workers(jobs, count, env)
    missing = [i for i in todo if not finished_member(plan[i - 1][0], splits)]
    if missing:  # retraining them here would double the job's time (and overrun any budget)
        raise workers.WorkerError(f"member {missing[0]}: its worker exited 0 but no FINISHED train run has the key this process "
                                  "gives it: did mnist99's code or the data change while the workers ran?")
    return True


def finished_member(member_cfg: Config, splits: Splits):
    """The FINISHED train run of ``member_cfg`` on ``splits`` (its cache key: same config, data and code), or None."""
    return tracking.cached_run("train", tracking.cache_key("train", member_cfg, splits.digest))


def fit_member(cfg: Config, splits: Splits, index: int, nested: bool = False, force: bool = False,
               budgeted: Plan | None = None, callbacks: list | None = None, carried: float = 0.0,
               parent_run_id: str | None = None) -> dict:
    """Member ``index`` (from 1) of ``cfg``'s ensemble: its FINISHED train run of the same key (unless
    ``force``), else trained here under its claim (:mod:`mnist99.tracking.claims`), waiting while
    another process trains it. Returns ``run_id``, and the ``model`` and metrics when trained here.

    ``budgeted``: the plan its epochs come from; the member stops at its deadline: its share of the plan
    plus ``carried`` seconds, what the members trained before it in this process left of theirs (a
    member the deadline stops leaves up to an epoch unspent, or overruns by a little, and the job's
    time is one budget), and returns ``unspent``, what it leaves in turn of its share, its scoring and
    saving included. A member that ended
    before its planned epochs says so, and which epoch's weights it keeps. ``parent_run_id``: the ensemble run
    that another process holds open, to nest the member's run under (its worker's).
    """
    from mnist99.delivery.ensemble import member_plan
    from mnist99.stages.train import deadline, stop_note, train_in_run

    plan = member_plan(cfg)
    member_cfg, label = plan[index - 1][0], f"ensemble: member {index}/{len(plan)}"
    key = tracking.cache_key("train", member_cfg, splits.digest)
    found = None if force else tracking.cached_run("train", key)
    if found is None:
        with tracking.claimed(key, label, cfg.tracking.claim) as claim:
            found = None if force else tracking.cached_run("train", key)  # trained while this process waited
            if found is None:
                print(f"{label}: training {member_cfg.model.name}, seed {member_cfg.seed}, "
                      f"{member_cfg.train.epochs} epoch(s) of {len(splits.y_train):,} images", flush=True)
                name = f"member-{index}-{member_cfg.model.name}-s{member_cfg.seed}"
                share = sum(run_id is None for _, run_id in plan[:index - 1])  # the plan covers unnamed members
                limit = deadline(budgeted, share, carried)
                extra = [*(callbacks or []), *limit]
                out = train_in_run(member_cfg, splits, nested=nested, name=name, callbacks=extra, tags=claim.run_tags,
                                   key=key, parent_run_id=parent_run_id)
                if limit:  # the whole member counts: its scoring and saving can overrun their plan too
                    out["unspent"] = limit[0].unspent_by_now(budgeted.after_fit_seconds(share))
                note = stop_note(extra, out["epochs_run"], member_cfg.train.epochs, budgeted=budgeted is not None)
                if note:  # the per-member line a stopped member needs: the ensemble prints no other
                    print(f"{label}: {note}; the weights of epoch {out['best_epoch']} are kept")
                return out
    print(f"{label} reuses FINISHED train run {found.info.run_id} (same config, data and code)")
    return {"run_id": found.info.run_id}


def parent_run(cfg: Config) -> AbstractContextManager:
    """The ensemble's parent MLflow run, a context manager (the ``run`` stage evaluates inside it too)."""
    tags = {"mnist99.model": cfg.model.name, "mnist99.ensemble_size": str(cfg.ensemble.size)}
    return tracking.stage_run(cfg, "ensemble", run_name(cfg), tags=tags)


def build_in_run(cfg: Config, splits: Splits, force: bool = False, budgeted: tuple[Plan, str] | None = None) -> dict:
    """Inside the active parent run: fit the members, combine them, score and log everything.

    ``budgeted``: the plan and key that ``cfg``'s epochs come from, recorded first on the parent run.
    Returns the metrics, ``member_run_ids``, ``weights``, ``seconds``, the combined ``model`` and the
    ``members`` (Keras models).
    """
    from mnist99.delivery.ensemble import combine, for_serving, member_weights, predict_members, score, shift_averaged

    start = time.perf_counter()
    tracking.log_config(cfg)
    tracking.log_dataset(splits)
    if budgeted is not None:
        tracking.record_plan(budgeted[1], budgeted[0].to_dict(), budgeted[0].params())
    models, run_ids = fit_members(cfg, splits, force, budgeted=budgeted[0] if budgeted else None)
    shifts = cfg.ensemble.shifts_for(len(models))
    if shifts:
        key = "tta_shifts" if cfg.ensemble.tta_shifts else "tta_shifts_alone"
        print(f"ensemble: each digit averaged with {len(shifts)} shifted copies of it (ensemble.{key})", flush=True)
    tracking.set_tag("mnist99.tta_views", str(tta_views(cfg, len(models))))  # passes a digit makes through each member
    models = [for_serving(shift_averaged(m, shifts)) for m in models]  # scored as they are exported
    probs = {"val": predict_members(models, splits.x_val), "test": predict_members(models, splits.x_test)}
    labels = {"val": splits.y_val, "test": splits.y_test}
    member_val = [accuracy(p, splits.y_val) for p in probs["val"]]
    weights = member_weights(len(models), member_val if cfg.ensemble.weighting == "val_accuracy" else None)
    metrics = score(probs, labels, weights)
    metrics.update({f"member_{i}_weight": w for i, w in enumerate(weights, start=1)})
    model = combine(models, weights)
    metrics["ensemble_seconds"] = time.perf_counter() - start
    tracking.log_metrics(metrics)
    tracking.set_tag("mnist99.member_run_ids", ",".join(run_ids))
    tracking.log_model_file(model)
    return {**metrics, "member_run_ids": run_ids, "weights": weights, "model": model, "members": models}


def format_table(out: dict) -> str:
    """Members and the ensemble, one line each: run id, validation and test accuracy, weight."""
    lines = [f"{'':10} {'run id':34} {'val_acc':>8} {'test_acc':>8} {'weight':>7}"]
    for i, run_id in enumerate(out["member_run_ids"], start=1):
        lines.append(f"member {i:<3} {run_id:34} {out[f'member_{i}_val_accuracy']:8.4f} "
                     f"{out[f'member_{i}_test_accuracy']:8.4f} {out['weights'][i - 1]:7.3f}")
    lines.append(f"{'ensemble':10} {out['run_id']:34} {out['val_accuracy']:8.4f} {out['test_accuracy']:8.4f}")
    lines.append(f"gain over the best member: {out['ensemble_gain']:+.4f} (test); "
                 f"members disagree on {out['disagreement']:.2%} of test digits")
    return "\n".join(lines)


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Train and combine the ensemble, in ``train.budget`` if set; returns its metrics, run id and member
    run ids (no models). With ``--member I``: only that member, see :func:`run_member`."""
    from mnist99.stages.train import report_budget

    started = getattr(args, "started", None) or time.time()
    force = bool(getattr(args, "force", False))
    member = getattr(args, "member", None)
    if getattr(args, "probe", None) is not None:
        from mnist99.training.concurrent_probe import probe_worker

        return dataclasses.asdict(probe_worker(cfg, args.probe))
    if member is not None:
        plan_file = getattr(args, "plan", None)
        plan = Plan.from_dict(json.loads(Path(plan_file).read_text())) if plan_file else None
        return run_member(cfg, member, started, force, worker=getattr(args, "worker", None),
                          parent_run_id=getattr(args, "parent_run", None), budgeted=plan)
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    cfg, budgeted = plan_budget(cfg, splits, started, force)
    with parent_run(cfg) as active:
        out = build_in_run(cfg, splits, force, budgeted)
    out["run_id"] = active.info.run_id
    print(format_table(out))
    if budgeted is not None:
        report_budget("ensemble", budgeted[0], started, out["run_id"])
    print(f"MLflow UI: {tracking.ui_command(cfg)}")
    out.pop("model")
    out.pop("members")
    return out


def run_member(cfg: Config, index: int, started: float, force: bool = False,
               worker: int | None = None, parent_run_id: str | None = None, budgeted: Plan | None = None) -> dict:
    """Member ``index`` (from 1) alone, as an ordinary (not nested) train run under its claim, or the
    FINISHED run another process trained; returns its run id (and metrics when trained here).

    ``worker``: how many members this worker's slot trains after this one, when an ensemble's process runs it
    (:func:`train_at_once`): it says when the job will end, and the ensemble, not the member, combines them;
    ``parent_run_id``: that ensemble's run, which the member's run nests under. ``budgeted``: the plan of that ensemble's
    budget (``cfg`` is planned): the member's deadline, less what this process took before it (Python, TensorFlow,
    the data: the plan's probe timed them as part of the member's start)."""
    from mnist99.delivery.ensemble import member_plan
    from mnist99.stages.train import finish_timer

    asked = member_plan(cfg)
    size = len(asked)
    if not 1 <= index <= size:
        raise ConfigError(f"--member {index}: the ensemble has members 1..{size}")
    if asked[index - 1][1]:
        raise ConfigError(f"--member {index}: ensemble.members[{index - 1}].run_id names its run; nothing to train")
    tracking.setup(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    if budgeted is None:
        cfg, planned = plan_once(cfg, splits, started, force)
        budgeted = planned[0] if planned else None
    rank = sum(run_id is None for _, run_id in asked[:index])  # its place among the members to train
    if budgeted is not None and rank > len(budgeted.epochs):  # the plan drops the last ones
        print(f"ensemble: member {index}/{size}: nothing to train: the budget's plan trains "
              f"{counted(len(budgeted.epochs), 'member')}, not {len(budgeted.epochs) + budgeted.dropped} "
              f"(train.budget_min_epochs={budgeted.min_epochs})")
        return {"run_id": None}
    label = f"ensemble: member {index}/{size}"
    timer = [] if worker is None or budgeted else [finish_timer(asked[index - 1][0], splits, label, worker, size)]
    carried = -(time.time() - started) if worker is not None and budgeted else 0.0
    out = fit_member(cfg, splits, index, force=force, budgeted=budgeted, callbacks=timer,
                     parent_run_id=parent_run_id, carried=carried)
    out.pop("model", None)
    if worker is None:
        print(f"{label}: run {out['run_id']}; `mnist99 ensemble` or `mnist99 run` with the "
              "same config combines the members once all are FINISHED")
    return out


def plan_once(cfg: Config, splits: Splits, started: float, force: bool = False) -> tuple[Config, tuple[Plan, str] | None]:
    """:func:`plan_budget` for workers that each train one member: the first worker's plan is the plan
    of all. It is made under a claim on the plan's key and recorded on a ``plan`` run of its own
    before the claim is released, where the others (and a later ``run --budget``) find it."""
    if cfg.train.budget is None:
        return cfg, None
    key = tracking.cache_key("ensemble", cfg, splits.digest)
    with tracking.claimed(f"plan-{key}", "ensemble: the budget's plan", cfg.tracking.claim):
        planned, budgeted = plan_budget(cfg, splits, started, force, at_once=False)
        if budgeted is not None and (force or tracking.recorded_plan(budgeted[1]) is None):
            with tracking.stage_run(cfg, "plan", f"budget-plan-{run_name(cfg)}"):
                tracking.record_plan(budgeted[1], budgeted[0].to_dict(), budgeted[0].params())
    return planned, budgeted
