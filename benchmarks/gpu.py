"""The GPU path, measured: the baseline and one model's time to 99%, the 3-member ensemble, its inference.

    KERAS_BACKEND=jax MNIST99_DATA=../shared/data/mnist python benchmarks/gpu.py \\
        -c configs/default.yaml -c configs/gpu.yaml [--set k=v] [--out results.jsonl]

Why a script beside ``train_speed.py`` and ``inference.py``: the GPU machines lent to this project
carry JAX but no TensorFlow (whose CUDA wheels, gigabytes, cannot be carried there). So this runs
mnist99's recipe -- the same config, split, model, optimiser and schedule, callbacks, augmentation
layers and ensemble math -- on whichever Keras backend is active, through the same
:class:`mnist99.training.augmented_net.AugmentedNet` that ``mnist99 run`` trains on a GPU (the uint8 images in
device memory, fed as indices, augmented inside the compiled train step). What differs from ``mnist99
run``: no ``tf.data`` (off the device the images come as float arrays, augmented in the step), and
nothing is logged to MLflow, evaluated in depth or exported. Every clock includes the XLA
compilation of each model (``--compile-cache`` lets a second process reuse it, and says so in every
line). Runs on a CPU too, slowly (a test runs it at smoke size); there JAX is no faster path: on a 2-core
AVX2 CPU it trains 0.72x TensorFlow's images/s (benchmarks/results/cpu-2core/2026-12-06-cpu-backends-gpu-path.md).

With ``--set train.budget=1m`` (and ``--skip-baseline``) the ensemble is planned into the budget as
``mnist99 ensemble --budget`` plans it (:func:`mnist99.training.budget.plan_job`, from a probe of the
member's compiled net on this path), each member's schedule is compressed by its deadline onto the
epochs that fit, and a ``plan`` line and the share of the budget used are reported. Under JAX the probe
and members of any epochs compile one train step (their schedules' lengths are variables), which a
compilation cache (``--compile-cache``, or a temporary one) hands from the probe to every member; the
probe then times a second, warm start, which is what each member pays. The clock starts before
the data is read; saving, logging and exporting, which this script does not do, are allowed nothing.

Prints one JSON line per result (and appends it to ``--out``): ``baseline`` and ``member_<i>``
(seconds to 99% validation accuracy, test accuracy, images/s), ``ensemble`` (members' and ensemble's
val/test accuracy, gain, disagreement, ``tta_views``: the passes a digit makes through each member, 1 +
its test-time shifts as the ensemble stage chooses them, ``EnsembleConfig.shifts_for``; wall seconds) and
``inference`` (images/s at batch 256, p50/p95
latency for one image). Not a test: timings are reported (README, benchmarks/results/), never asserted.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
from inference import latency, throughput
from train_speed import baseline, speed_arguments, time_to_99, timing

from mnist99.config import BudgetOverheadConfig, Config, load_config
from mnist99.constants import EVAL_BATCH, NUM_CLASSES
from mnist99.data import make_splits
from mnist99.data.model_input import to_model_input
from mnist99.delivery.ensemble import combine, member_plan, score, shift_averaged
from mnist99.errors import ConfigError
from mnist99.models import build_model
from mnist99.models.twin import serving_twin
from mnist99.reports.metrics import accuracy
from mnist99.training import budget
from mnist99.training.augmented_net import build_augmented_net, net_of
from mnist99.training.batchnorm import refresh_statistics
from mnist99.training.callbacks import BudgetDeadline
from mnist99.training.devices import device_name
from mnist99.training.probe import measure_speeds, time_fit, timed_images
from mnist99.training.recipe import (
    compile_model,
    configure_runtime,
    resolve_data_on_device,
    standard_callbacks,
    training_precision,
)


def build_member(cfg: Config, data: dict, stretchable: bool = False) -> tuple[keras.Model, np.ndarray, np.ndarray, bool]:
    """One member's net, compiled, with augmentation in front of it in the same compiled step, and the
    uint8 images in device memory when ``train.data_on_device`` says so (auto: on a GPU); with its
    training and validation inputs (indices into those images, or the images as floats) and whether the
    images are on the device. ``stretchable``: one compiled train step whatever the member's epochs
    (:func:`mnist99.training.optimizers.build_optimizer`), for a budget's probe and members."""
    configure_runtime(cfg)
    images = data["images"]  # uint8, the train images then the validation ones
    on_device = resolve_data_on_device(cfg.train.data_on_device, images.nbytes)
    n_train = len(data["y_train"])
    # With the images on the device the wrapped model takes indices: train ones, then validation ones.
    x, x_val = (np.arange(n_train), np.arange(n_train, len(images))) if on_device else (data["x_train"], data["x_val"])
    steps = math.ceil(n_train / cfg.train.batch_size)  # fit's steps an epoch
    with training_precision(cfg):
        wrapped = build_augmented_net(cfg, build_model(cfg.model), images if on_device else None)
        compile_model(cfg, steps, jit_compile=True, model=wrapped, stretchable=stretchable)
    return wrapped, x, x_val, on_device


def train_member(cfg: Config, data: dict, every_steps: int, extra: Sequence[keras.callbacks.Callback] = (),
                 stretchable: bool = False) -> tuple[keras.Model, dict]:
    """Train one member (:func:`build_member`); ``extra``: more callbacks for its fit (a budget's deadline)."""
    wrapped, x, x_val, on_device = build_member(cfg, data, stretchable)
    to99 = time_to_99(x_val, data["y_val"], every_steps)  # fit's validation input: one compiled program for both
    start = time.perf_counter()
    history = wrapped.fit(x, data["y_train"], batch_size=cfg.train.batch_size, epochs=cfg.train.epochs, shuffle=True,
                          validation_data=(x_val, data["y_val"]), callbacks=standard_callbacks(cfg, to99, *extra),
                          verbose=cfg.train.verbose)
    seconds = time.perf_counter() - start
    n_train = len(data["y_train"])
    refresh_statistics(wrapped.net, data["images"][:n_train], cfg.train.batchnorm_refresh, cfg.train.batch_size, cfg.seed)
    epochs = len(history.epoch)
    # Scored and combined as the ensemble stage does: as its serving twin (float32, Keras' own layers).
    return serving_twin(wrapped.net), {**timing(to99), "train_seconds": seconds, "epochs_run": epochs,
                         "data_on_device": on_device,
                         "train_images_per_second": n_train * epochs / seconds}


def probe(cfg: Config, data: dict, warm_start: bool = False) -> budget.Speed:
    """This machine's speed for ``cfg``'s member (:func:`mnist99.training.probe.time_fit`): built and
    compiled as a budget's members are (:func:`build_member`, stretchable), fitted on arrays (no
    ``tf.data`` on this path).

    ``warm_start``: compiled programs are cached (JAX's compilation cache), so every member finds the
    probe's: the probe's first epoch also ends on a partial batch and validates on a full and a partial
    one as members' epochs do, and its net predicts the batches that score a member (each shape
    compiles a program of its own); the start it reports is that of a second net built, traced,
    fitted and predicting on those batches, which is what each member pays."""
    began = time.time()
    wrapped, x, x_val, _ = build_member(cfg, data, stretchable=True)
    batch, y, y_val = cfg.train.batch_size, data["y_train"], data["y_val"]
    full, tail = divmod(len(x), batch)  # an epoch's full batches, and its last one's images (0: none)

    def train(steps: int) -> tuple[dict, int]:
        n = min(steps, full) * batch or len(x)  # full batches: the timed steps
        n += tail if warm_start and full > steps else 0  # then the partial one, after them
        return {"x": x[:n], "y": y[:n], "batch_size": batch}, math.ceil(n / batch)

    n_val, n_eval = timed_images(len(x_val))  # one validation batch: fit validates at the training batch size
    if warm_start:
        n_val = min(len(x_val), batch + len(x_val) % batch)  # a full batch, then a partial one
    speed = time_fit(cfg, wrapped, train, (x_val[:n_val], y_val[:n_val]), data["x_val"][:n_eval], n_val, began,
                     net=serving_twin(net_of(wrapped)))  # the net scoring prices: float32, as :func:`train_member` returns
    if not warm_start:
        return speed
    scoring = [images[:EVAL_BATCH + len(images) % EVAL_BATCH] for images in (data["x_val"], data["x_test"])]

    def score(model: keras.Model) -> None:  # a member's scoring (main): a full batch, then its split's last one
        net = serving_twin(net_of(model))
        for images in scoring:
            net.predict(images, batch_size=EVAL_BATCH, verbose=0)

    score(wrapped)
    began = time.time()
    wrapped, x, x_val, _ = build_member(cfg, data, stretchable=True)
    n = min(batch + tail, len(x))
    wrapped.fit(x[:n], y[:n], batch_size=batch, validation_data=(x_val[:n_val], y_val[:n_val]), verbose=0, shuffle=False)
    score(wrapped)
    images = n_val + sum(map(len, scoring))
    start = time.time() - began - math.ceil(n / batch) * speed.step_seconds - images * speed.image_seconds
    return dataclasses.replace(speed, start_seconds=max(start, 0.0))


def plan_budget(cfg: Config, members: list[Config], data: dict, started: float, warm_start: bool = False
                ) -> budget.Plan:
    """The epochs ``cfg.train.budget`` buys each member, planned as ``mnist99 ensemble --budget`` plans
    them (:func:`mnist99.training.budget.plan_job`), from :func:`probe`."""
    speeds = measure_speeds(members, lambda member: probe(member, data, warm_start))
    counts = {"train": len(data["y_train"]), "val": len(data["y_val"]), "test": len(data["x_test"])}
    plan = budget.plan_job(cfg, members, speeds, counts, started, ensemble_size=len(members))
    print(f"gpu.py: {budget.plan_line(plan, started)}", flush=True)
    return plan


def budgeted(cfg: Config, epochs: int) -> Config:
    """``cfg`` with the epochs its budget planned (a schedule a fifth longer than the epochs expected to fit,
    which the deadline compresses onto those that do: :class:`mnist99.training.callbacks.BudgetDeadline`)."""
    planned = cfg.model_copy(deep=True)
    planned.train.budget, planned.train.epochs = None, epochs
    return planned


def main() -> None:
    parser = speed_arguments(__doc__.splitlines()[0], check_every=20)  # 20 steps of 512: 10,240 images
    parser.add_argument("--out", help="also append each JSON line to this file")
    parser.add_argument("--compile-cache", metavar="DIR",
                        help="JAX only: keep compiled XLA programs in DIR across processes (a rerun skips compiling)")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    shared = keras.config.backend() == "jax" and cfg.train.budget is not None
    if shared and not args.compile_cache:
        # A budget's members of any epochs compile one train step (stretchable schedules), and only a
        # compilation cache hands it from one model to the next: without one each compiles its own.
        temporary = tempfile.TemporaryDirectory(prefix="mnist99-xla-")  # removed when main returns
        args.compile_cache = temporary.name
    if args.compile_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    where = {"device": device_name(), "backend": keras.config.backend(), "keras": keras.__version__,
             "compile_cache": args.compile_cache}

    def report(name: str, result: dict) -> None:
        line = json.dumps({"result": name, **result, **where})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as out:
                out.write(line + "\n")

    started = time.time()  # the job's clock (and its budget's) starts with the data
    if cfg.train.budget is not None:
        if not args.skip_baseline:
            raise SystemExit("benchmarks/gpu.py: a budget times the ensemble alone; add --skip-baseline")
        # Nothing here is saved, logged or exported: the allowances that stand for those are zero.
        cfg.train.budget_overhead = BudgetOverheadConfig(epoch=0.0, member=0.0, job=0.0)
    splits = make_splits(cfg.data, cfg.seed)
    onehot = lambda labels: keras.utils.to_categorical(labels, NUM_CLASSES)  # noqa: E731
    data = {"images": np.concatenate([splits.x_train, splits.x_val]),
            "x_train": to_model_input(splits.x_train), "y_train": onehot(splits.y_train),
            "x_val": to_model_input(splits.x_val), "y_val": onehot(splits.y_val), "x_test": to_model_input(splits.x_test)}
    if not args.skip_baseline:
        keras.utils.set_random_seed(cfg.seed)
        report("baseline", baseline(np.concatenate([splits.x_train, splits.x_val]),
                                    np.concatenate([splits.y_train, splits.y_val]),
                                    splits.x_test, splits.y_test, args.baseline_epochs, args.check_every))
        started = time.time()  # the ensemble's wall clock starts after the baseline
    members = []
    for i, (member_cfg, run_id) in enumerate(member_plan(cfg), start=1):
        if run_id is not None:
            raise SystemExit(f"benchmarks/gpu.py trains every member; member {i} names run {run_id!r}")
        members.append(member_cfg)
    plan = None
    if cfg.train.budget is not None:
        try:
            plan = plan_budget(cfg, members, data, started, warm_start=shared)
        except ConfigError as error:  # a budget too small for one epoch: say so in one line
            raise SystemExit(f"benchmarks/gpu.py: {error}") from None
        report("plan", plan.to_dict())
        members = [budgeted(member, epochs) for member, epochs in zip(members, plan.epochs)]
    # Scored, timed and combined through the test-time shifts the ensemble stage gives this many members
    # (an ensemble of one: ensemble.tta_shifts_alone), which the plan priced.
    shifts = cfg.ensemble.shifts_for(len(members))
    nets, probs, carried = [], {"val": [], "test": []}, 0.0
    for i, member_cfg in enumerate(members, start=1):
        # A budgeted member stops at its deadline: its share of the plan and what those before it left.
        limit = [] if plan is None else [BudgetDeadline(plan.fit_allowance(i - 1) + carried)]
        # Mid-epoch validation checks are not in a budget's plan: a budgeted run checks at epoch ends.
        net, result = train_member(member_cfg, data, 0 if plan else args.check_every, limit, stretchable=bool(plan))
        net = shift_averaged(net, shifts)
        nets.append(net)
        for split in ("val", "test"):
            probs[split].append(np.asarray(net.predict(data[f"x_{split}"], batch_size=EVAL_BATCH, verbose=0)))
        if limit:
            carried = limit[0].unspent_by_now(plan.after_fit_seconds(i - 1))
            result |= {"planned_epochs": member_cfg.train.epochs, "deadline_stopped_after": limit[0].stopped_after,
                       "schedule_compressed": limit[0].compressed}
        report(f"member_{i}", {**result, "test_accuracy": accuracy(probs["test"][-1], splits.y_test), "seed": member_cfg.seed})
    metrics = score(probs, {"val": splits.y_val, "test": splits.y_test}, None)
    wall = time.time() - started
    used = {} if plan is None else {"budget_seconds": plan.budget, "budget_used": wall / plan.budget}
    report("ensemble", {**metrics, "members": len(nets), "tta_views": 1 + len(shifts), "wall_seconds": wall, **used})
    if plan is not None:
        print(f"gpu.py: {budget.used_line(plan.budget, wall)}", flush=True)
    ensemble = combine(nets)
    images = splits.x_test
    report("inference", {"batch": 256, **throughput(ensemble.predict_on_batch, images, 256, 50, 5),
                         **latency(ensemble.predict_on_batch, images, 200, 5)})


if __name__ == "__main__":
    main()
