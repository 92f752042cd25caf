"""Fitting training into a time budget: the epochs each member gets, and when the job will end.

Pure arithmetic on speeds measured on this machine (:mod:`mnist99.training.probe`, or the first steps
of a fit), with the clock passed in, so tests drive it without waiting. The stages plan once, record
the plan on their run and reuse it on a rerun (:mod:`mnist99.tracking.plans`).

A member costs ``fixed + epochs x epoch`` seconds: an epoch is its training steps plus a validation
pass; ``fixed`` is its start (building, compiling, tracing: timed), the refresh of its BatchNorm
statistics (``train.batchnorm_refresh`` batches, priced as training steps), its final evaluation on the
validation and test splits (forward passes: timed) and saving and logging it (an allowance,
``train.budget_overhead.member``); an epoch also pays its own start (timed) and its backup and
MLflow metrics (``train.budget_overhead.epoch``). After the members an ensemble job predicts every member on the
validation and test splits, then the evaluation pack predicts the test split through the ensemble
and each member again (timed forward passes; once more for each test-time shift, ``EnsembleConfig.shifts_for``),
then combines, draws and exports (``train.budget_overhead.job``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnist99.config import Config, TrainConfig
from mnist99.durations import format_duration
from mnist99.errors import ConfigError

# The job is planned to end at 95% of its budget: the rest absorbs the timing's error (steps on a
# busy machine, allowances).
AIM = 0.95
# A deadline ends a fit on a tenth of an epoch: at 2-4 min a one-member job has 8-12 epochs, each 8-10%
# of its budget, too coarse a step to end it between 85 and 100% of it.
GRAIN = 0.1
# A member's schedule spans a fifth more epochs than the probe's speed fits by the aim; its deadline
# compresses the schedule onto the epochs that do fit. Planned to fit exactly, a member could only end
# early when the machine ran faster than its probe read it: a 20-minute job whose epochs sped up after
# the probe ended at 78% of its budget (2026-12-03-budget-headroom.md).
HEADROOM = 0.2
# An image's forward pass costs about a third of its share of a training step (backpropagation is
# about twice the forward pass): the estimate when only training steps were timed.
FORWARD_SHARE = 1 / 3

Clock = Callable[[], float]  # seconds since the epoch, as time.time (so that a finish time can be shown)


# A revised finish estimate is printed when it moves by both (see worth_revising).
REVISE_SECONDS = 60.0
REVISE_SHARE = 0.1


@dataclass(frozen=True)
class Speed:
    """This machine's speed for one member's config."""

    step_seconds: float  # a training step, once the first ones (tracing, filling buffers) are past
    start_seconds: float  # a member's start beyond its steps: build, compile, the first steps' tracing
    image_seconds: float  # one image through the net at the evaluation batch (validation, evaluation)
    epoch_seconds: float  # an epoch beyond its steps and validation: new iterators, refilling the shuffle
    #                       buffer, swapping the averaged weights in and out

    @classmethod
    def from_steps(cls, step_seconds: float, start_seconds: float, batch_size: int) -> Speed:
        """A speed from training steps alone: forward passes estimated through :data:`FORWARD_SHARE`,
        an epoch's own cost taken as nothing."""
        return cls(step_seconds, start_seconds, step_seconds / batch_size * FORWARD_SHARE, 0.0)


@dataclass(frozen=True)
class MemberCost:
    """Seconds one member takes: ``fixed + epochs * epoch``; ``start``, the part of ``fixed`` spent before
    its first epoch ends (building, compiling, tracing), so ``start + epochs * epoch`` is its fit."""

    epoch: float
    fixed: float
    start: float = 0.0

    def seconds(self, epochs: int) -> float:
        return self.fixed + epochs * self.epoch

    def fit_seconds(self, epochs: int) -> float:
        return self.start + epochs * self.epoch


def member_cost(speed: Speed, train: TrainConfig, train_images: int, val_images: int, test_images: int) -> MemberCost:
    """One member's cost: epochs of training steps (the last partial batch dropped), a validation pass
    and ``train.budget_overhead.epoch``; a start, the BatchNorm refresh, a final evaluation on validation
    and test, and ``train.budget_overhead.member``."""
    steps = max(train_images // train.batch_size, 1)
    overhead = train.budget_overhead
    epoch = steps * speed.step_seconds + val_images * speed.image_seconds + speed.epoch_seconds + overhead.epoch
    # The BatchNorm refresh's batches (mnist99.training.batchnorm) are forward passes in training mode, run
    # eagerly: priced as training steps. Imported here: that module imports Keras, which this pure arithmetic
    # must not load at start-up (the console silences TensorFlow's logs before TensorFlow is imported).
    from mnist99.training.batchnorm import refresh_batches

    refresh = refresh_batches(train.batchnorm_refresh, train_images, train.batch_size) * speed.step_seconds
    fixed = speed.start_seconds + (val_images + test_images) * speed.image_seconds + refresh + overhead.member
    return MemberCost(epoch, fixed, speed.start_seconds)


def after_members_seconds(image_seconds: Sequence[float], val_images: int, test_images: int, overhead: float,
                          robust_images: int = 0, views: int = 1) -> float:
    """Seconds an ensemble job takes after its members (each member's ``image_seconds``; none: one model,
    0 s): scoring each member on validation and test, the evaluation pack's test predictions through
    the ensemble and through each member, its robustness table's ``robust_images`` (clean and corrupted
    digits) through the ensemble, and ``overhead`` for combining, figures and the export. Each of those
    digits passes through a member ``views`` times (:func:`tta_views`)."""
    if not image_seconds:
        return 0.0
    return sum(image_seconds) * views * (val_images + 3 * test_images + robust_images) + overhead


def tta_views(cfg: Config, members: int) -> int:
    """Passes a digit makes through each member once the ``members`` are in an ensemble: the digit
    itself and each of its test-time shifts (``EnsembleConfig.shifts_for``; the ensemble stage scores
    the members as they are exported)."""
    return 1 + len(cfg.ensemble.shifts_for(members))


@dataclass(frozen=True)
class Plan:
    """What a budget bought: epochs per member to train, and the seconds each part is expected to take."""

    budget: float
    epochs: tuple[int, ...]  # per member to train, in order: its config's train.epochs, its schedule's length
    member_seconds: tuple[float, ...]
    after_seconds: float  # after the members (0 for one model)
    planned_at: float  # seconds into the job when it was planned (data, timing probe)
    max_epochs: int
    capped: bool  # train.budget_max_epochs kept the budget from buying more epochs
    fit_seconds: tuple[float, ...] = ()  # per member: its fit's share of member_seconds (none in older plans)
    # members asked for but not trained: with them every member would get under min_epochs epochs
    dropped: int = 0
    min_epochs: int = 1
    # per member: the epochs the probe's speed fits by the aim (the last member's may end partway); none in
    # plans without headroom, whose ``epochs`` fit
    fit_epochs: tuple[int, ...] = ()
    # members training at once (ensemble.workers): member i trains in lane i % lanes, after the lane's earlier members
    lanes: int = 1

    @property
    def fitting(self) -> tuple[int, ...]:
        """Per member, the epochs expected to run at the probed speed (``epochs`` where none are recorded)."""
        return self.fit_epochs or self.epochs

    def fit_allowance(self, member: int) -> float | None:
        """Seconds member ``member`` (0-based, of those to train) may spend in ``fit`` before the deadline
        stops it: its planned fit plus an equal share of what the plan left unspent below the aim; for
        the last member of a plan that goes past the aim (its last epoch does not fit whole), its fit
        less the overshoot. None for a plan recorded without fit times."""
        if not self.fit_seconds:
            return None
        lane = lane_members(len(self.fit_seconds), self.lanes)[member % self.lanes]
        spare = self.budget * AIM - (self.planned_at + sum(self.member_seconds[i] for i in lane) + self.after_seconds)
        if spare >= 0:
            return self.fit_seconds[member] + spare / len(lane)
        return self.fit_seconds[member] + (spare if member == lane[-1] else 0.0)

    def after_fit_seconds(self, member: int) -> float:
        """Seconds member ``member`` is planned to take after its fit: its final evaluation, saving and logging."""
        return self.member_seconds[member] - self.fit_seconds[member] if self.fit_seconds else 0.0

    @property
    def planned_seconds(self) -> float:
        """The job's seconds if every member ran every planned epoch whole: its longest lane's members."""
        lanes = lane_members(len(self.member_seconds), self.lanes)
        return self.planned_at + max(sum(self.member_seconds[i] for i in lane) for lane in lanes) + self.after_seconds

    @property
    def expected_seconds(self) -> float:
        """When the job is expected to end: the planned seconds, or the aim where the last member's
        deadline ends it partway through its last epoch."""
        return min(self.planned_seconds, self.budget * AIM)

    def params(self) -> dict[str, str]:
        """The plan as run params (``budget.*``), for the runs table; the whole plan is in :meth:`to_dict`."""
        return {"budget.seconds": f"{self.budget:g}", "budget.epochs": ",".join(map(str, self.epochs)),
                "budget.fit_epochs": ",".join(map(str, self.fitting)),
                "budget.expected_seconds": f"{self.expected_seconds:.0f}", "budget.capped": str(self.capped).lower()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def lane_members(members: int, lanes: int) -> list[list[int]]:
    """The members (0-based) each of ``lanes`` lanes trains, one after another: member i in lane i % lanes, as a pool
    of that many workers takes members of equal cost in order. Empty lanes (fewer members) are left out."""
    return [list(range(lane, members, lanes)) for lane in range(min(lanes, members))]


def plan_epochs(budget: float, members: Sequence[MemberCost], after_seconds: float, max_epochs: int,
                started: float, clock: Clock = time.time, aim: float = AIM, lanes: int = 1) -> Plan:
    """Epochs per member (1 to ``max_epochs``) for the job to end at ``aim * budget``.

    Every member gets the same epochs, then one more each, in order, while that still fits; then,
    when a tenth of its epoch or more is left, the last member one more that does not fit whole:
    its deadline (:class:`mnist99.training.callbacks.BudgetDeadline`) ends it partway through, at
    the aim, and the schedule is compressed to end there. Planned to the last whole epoch, a job
    of one member with 8-12 epochs ended at 78-81% of a 5-minute budget whenever the machine ran
    faster or slower than its timing probe read it (2026-12-01-budget-carry-a5ecfd4.md). Those are
    ``fit_epochs``; each member's schedule (``epochs``) is :data:`HEADROOM` longer, up to ``max_epochs``,
    so that a machine that speeds up after the probe still fills the budget.
    ``started`` is when the job started on ``clock``; the time since counts against the budget.
    ``lanes``: members that train at once (:func:`lane_members`); the job waits on its longest lane, and each
    lane is planned as above within the time the members leave.

    Raises ConfigError naming the budget and the least that would do when even one epoch each does not fit.
    """
    planned_at = clock() - started
    lanes = lane_members(len(members), lanes)
    room = budget * aim - planned_at - after_seconds  # what each lane's members may take
    costs = [(sum(members[i].fixed for i in lane), sum(members[i].epoch for i in lane)) for lane in lanes]
    fixed, one_round = max(costs, key=lambda cost: cost[0] + cost[1])
    if any(room - f < e for f, e in costs):
        noun = "model" if len(members) == 1 else f"{len(members)} members"
        needed = planned_at + after_seconds + fixed + one_round
        raise ConfigError(f"train.budget={format_duration(budget)} is too small for {noun} on this machine: "
                          f"one epoch each needs ~{format_duration(needed)}, so give at least "
                          f"{format_duration(math.ceil(needed / aim))}")
    rounds = min(int((room - f) // e) for f, e in costs)
    epochs = [min(max_epochs, rounds)] * len(members)
    left = [room - f - epochs[0] * e for f, e in costs]  # per lane
    for i, member in enumerate(members):
        lane = i % len(lanes)
        if epochs[i] < max_epochs and member.epoch <= left[lane]:
            epochs[i] += 1
            left[lane] -= member.epoch
    for lane, held in enumerate(lanes):  # each lane's last member: one epoch more that ends partway
        last = held[-1]
        if epochs[last] < max_epochs and left[lane] >= GRAIN * members[last].epoch:
            epochs[last] += 1
    schedules = tuple(min(max_epochs, math.ceil(round(e * (1 + HEADROOM), 6))) for e in epochs)
    return Plan(budget, schedules, tuple(m.seconds(e) for m, e in zip(members, epochs)), after_seconds,
                planned_at, max_epochs, capped=rounds >= max_epochs,
                fit_seconds=tuple(m.fit_seconds(e) for m, e in zip(members, epochs)), fit_epochs=tuple(epochs),
                lanes=len(lanes))


def plan_members(budget: float, members: Sequence[MemberCost], after_seconds: Callable[[int], float], max_epochs: int,
                 min_epochs: int, started: float, clock: Clock = time.time, aim: float = AIM, lanes: int = 1) -> Plan:
    """:func:`plan_epochs` for the most of ``members`` (the first ones, at least one) that each still get
    ``min_epochs`` epochs; ``after_seconds(n)``: what the job takes after ``n`` of them.

    A short budget shared by every member buys each a few epochs of a one-cycle schedule that has no
    time to anneal, and averaging such members does not make up for it: on a 2-core CPU, 5-minute jobs
    of 3 members x 2-4 epochs reached 99.32 and 99.60% validation accuracy (two draws), of 2 members x
    4-6 epochs 99.54 and 99.58%, of one member x 9-10 epochs 99.50 and 99.72%
    (benchmarks/results/cpu-2core/2026-12-01-budget-members.md). Raises ConfigError (see
    :func:`plan_epochs`) when not even one member gets one epoch. ``lanes``: see :func:`plan_epochs`.
    """
    for count in range(len(members), 1, -1):
        try:
            plan = plan_epochs(budget, members[:count], after_seconds(count), max_epochs, started, clock, aim, lanes)
        except ConfigError:
            continue
        if min(plan.fitting) >= min(min_epochs, max_epochs):
            return dataclasses.replace(plan, dropped=len(members) - count, min_epochs=min_epochs)
    plan = plan_epochs(budget, members[:1], after_seconds(1), max_epochs, started, clock, aim)
    return dataclasses.replace(plan, dropped=len(members) - 1, min_epochs=min_epochs)


def plan_job(cfg: Config, to_train: Sequence[Config], speeds: Sequence[Speed], counts: dict[str, int], started: float,
             ensemble_size: int = 0, robust_images: int = 0, clock: Clock = time.time, lanes: int = 1,
             scoring: float | None = None) -> Plan:
    """:func:`plan_members` for ``cfg.train.budget``, each config of ``to_train`` at its measured speed.

    ``counts``: the images in the ``train``, ``val`` and ``test`` splits. ``ensemble_size``: the job ends
    with an ensemble of that many members (those of ``to_train`` and members reused, not trained), scored,
    evaluated (``robust_images`` for its robustness table) and exported; 0: one model, nothing after it.
    ``lanes``: members that train at once (``speeds`` then timed that way:
    :func:`mnist99.training.concurrent_probe.measure_at_once`);
    ``scoring``: seconds an image takes through a member in this process, after the members (default: the speeds').
    """
    costs = [member_cost(speed, member.train, counts["train"], counts["val"], counts["test"])
             for speed, member in zip(speeds, to_train)]
    # also for members reused, not timed
    image_seconds = scoring if scoring is not None else sum(s.image_seconds for s in speeds) / len(speeds)
    reused = ensemble_size - len(to_train) if ensemble_size else 0

    def after(trained: int) -> float:  # the ensemble's members: those reused and ``trained`` of those to train
        members = [image_seconds] * (reused + trained) if ensemble_size else []
        return after_members_seconds(members, counts["val"], counts["test"], cfg.train.budget_overhead.job,
                                     robust_images, tta_views(cfg, len(members)))

    return plan_members(cfg.train.budget, costs, after, cfg.train.budget_max_epochs, cfg.train.budget_min_epochs,
                        started, clock, lanes=lanes)


def epochs_that_fit(elapsed: float, epoch: float, allowance: float, done: int, end: int) -> float:
    """How many epochs a fit can end with (``done`` to ``end``, on a :data:`GRAIN` of an epoch) when each
    epoch still to come takes ``epoch`` seconds and the fit must end within ``allowance`` seconds of its start.

    The plan's epochs come from the first steps' speed; a machine that slows down (another job, thermal
    limits, a noisy neighbour) makes later epochs longer, and the epochs measured so far are the best
    guess of the next.
    """
    if epoch <= 0:
        return end
    grains = math.floor(max(allowance - elapsed, 0.0) / epoch / GRAIN + 1e-9)
    return min(end, round(done + grains * GRAIN, 6))


def epochs_text(epochs: float) -> str:
    """``7``, ``7.6``: an epoch count as the console shows it, to a tenth."""
    return f"{round(epochs, 1):g}"


def finish_time(seconds: float) -> str:
    """``seconds`` (on the clock, since the epoch) as the local time of day, "14:32"."""
    return time.strftime("%H:%M", time.localtime(seconds))


def counted(n: int, noun: str) -> str:
    """``1 member``, ``3 members``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def span(values: Sequence[int]) -> str:
    """``9``, ``9-10``: the range of per-member epochs."""
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def epochs_phrase(plan: Plan) -> str:
    """``9 epochs (schedules of 11)``: the epochs that fit, and the schedules' where they are longer."""
    schedules = f" (schedules of {span(plan.epochs)})" if plan.epochs != plan.fitting else ""
    return f"{span(plan.fitting)} epochs{schedules}"


def plan_line(plan: Plan, started: float, noun: str = "member") -> str:
    """``budget 10m: 3 members x 9 epochs (schedules of 11), ~3.1 min each; expected finish 14:32 (95% of it)``."""
    each = sum(plan.member_seconds) / len(plan.member_seconds) / 60
    line = (f"budget {format_duration(plan.budget)}: {counted(len(plan.epochs), noun)}{at_once(plan)} x {epochs_phrase(plan)}, "
            f"~{each:.1f} min each; expected finish "
            f"{finish_time(started + plan.expected_seconds)} ({plan.expected_seconds / plan.budget:.0%} of it)")
    if plan.capped:
        line += f"; capped by train.budget_max_epochs={plan.max_epochs}"
    if plan.dropped:
        line += (f"; {counted(len(plan.epochs), noun)}, not {len(plan.epochs) + plan.dropped}: "
                 f"more would get under train.budget_min_epochs={plan.min_epochs} epochs each")
    return line


def reused_line(plan: Plan, run_id: str, noun: str = "member") -> str:
    """The line of a plan found on an earlier run of the same job (a rerun, a resume, another worker)."""
    dropped = f" (not {len(plan.epochs) + plan.dropped})" if plan.dropped else ""
    return (f"budget {format_duration(plan.budget)}: the plan of run {run_id}: {counted(len(plan.epochs), noun)}{dropped}"
            f"{at_once(plan)} x {epochs_phrase(plan)}")


def at_once(plan: Plan) -> str:
    """`` (3 at once)`` where the plan trains its members in lanes, side by side; else nothing."""
    return f" ({plan.lanes} at once)" if plan.lanes > 1 else ""


def used_line(budget: float, seconds: float) -> str:
    """``budget 10m: 9.4 min used (94%)``."""
    return f"budget {format_duration(budget)}: {seconds / 60:.1f} min used ({seconds / budget:.0%})"


def early_stop_note(epochs_run: float, planned: int, deadline_stopped: bool = False,
                    compressed: bool = False, budgeted: bool = True) -> str | None:
    """What to say when a member ended before its planned epochs (else None): early stopping ended it,
    or (``budgeted``) its deadline did, after ``epochs_run`` epochs (a fraction where it ended one
    partway), with its learning-rate schedule ``compressed`` to end there or cut."""
    if epochs_run >= planned:
        return None
    if not budgeted:
        return f"early stopping ended it after epoch {epochs_run} of {planned}"
    if deadline_stopped:
        schedule = "; its learning-rate schedule was shortened to end there" if compressed else ""
        return (f"the budget's deadline ended it after {epochs_text(epochs_run)} of {planned} epochs, "
                f"at its share of the budget{schedule}")
    return f"early stopping ended it after epoch {epochs_run} of {planned}, before its share of the budget"


def finish_estimate(member: MemberCost, epochs: int, member_started: float, members_after: int,
                    after_seconds: float) -> float:
    """When a job ends (on the clock): the member that started at ``member_started``, ``members_after``
    more like it, then ``after_seconds``."""
    return member_started + (1 + members_after) * member.seconds(epochs) + after_seconds


def finish_line(label: str, member: MemberCost, epochs: int, finish: float, after_epoch: int | None = None) -> str:
    """``member 1/3: ~7.4 min per member, expected finish 14:32`` (``label``: the member, or the stage for one
    model), revised: ``... expected finish 14:25 (after epoch 2)``."""
    per = " per member" if "member" in label else ""
    revised = "" if after_epoch is None else f" (after epoch {after_epoch})"
    return f"{label}: ~{member.seconds(epochs) / 60:.1f} min{per}, expected finish {finish_time(finish)}{revised}"


def revised_finish(member: MemberCost, epoch_seconds: float, epochs: int, epochs_left: int, members_after: int,
                   after_seconds: float, now: float) -> tuple[MemberCost, float]:
    """The member's cost with an epoch as measured (``epoch_seconds``), and when the job then ends: this
    member's ``epochs_left``, ``members_after`` more of ``epochs``, then ``after_seconds``."""
    measured = MemberCost(epoch_seconds, member.fixed, member.start)
    return measured, now + epochs_left * epoch_seconds + members_after * measured.seconds(epochs) + after_seconds


def worth_revising(shown: float, finish: float, now: float) -> bool:
    """Whether a revised finish is worth a line: it moved by a minute and by a tenth of the time that was
    left, so a steady machine prints one estimate and a drifting one a few."""
    return abs(finish - shown) >= max(REVISE_SECONDS, REVISE_SHARE * max(shown - now, 0.0))
