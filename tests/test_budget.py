"""A time budget: durations, the --budget shorthand, the planner on an injected clock, the step timer,
the plan recorded and found again, and one real budgeted run at smoke size."""
from __future__ import annotations

import json
import re
import time

import keras
import mlflow
import numpy as np
import pytest

from mnist99.config import defaults, load_config, with_overrides
from mnist99.durations import format_duration, parse_duration
from mnist99.errors import ConfigError
from mnist99.training import budget
from mnist99.training.budget import MemberCost, Plan, Speed, plan_epochs, plan_members
from tests.conftest import SMOKE


def clock_at(seconds: float):
    return lambda: seconds


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2.5h", 9000),
                                               ("1h0m5s", 3605), (" 10M ", 600), ("600", 600), (45, 45), (7.5, 7.5)])
def test_durations_read_back_as_seconds(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.5)


@pytest.mark.parametrize("bad", ["10x", "m", "1m1h", "-5m", "0s", "0", "nan", "inf", "10 m", "true"])
def test_a_bad_budget_fails_in_one_line_naming_it(bad):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"train.budget={bad}"])
    message = str(err.value)
    assert message.startswith("invalid config value train.budget=") and "expected a duration such as 90s, 10m" in message
    assert "\n" not in message


def test_the_budget_is_validated_into_seconds_and_defaults_to_none():
    assert defaults().train.budget is None
    assert load_config(None, ["train.budget="]).train.budget is None  # an empty value is YAML's null
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("")
    assert load_config(None, ["train.budget=1h30m"]).train.budget == 5400.0


@pytest.mark.parametrize("stage", ["train", "ensemble", "run"])
def test_budget_flag_is_a_shorthand_for_set_train_budget(stage):
    from mnist99.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([stage, "--set", "train.budget=5m", "--budget", "10m", "--set", "seed=3"])
    assert args.overrides == ["train.budget=5m", "train.budget=10m", "seed=3"]
    assert load_config(args.config, args.overrides).train.budget == 600.0  # the later wins, as with --set
    assert parser.parse_args([stage]).overrides == []


def test_a_budget_typo_on_the_command_line_is_one_line_and_exit_2(capsys):
    from mnist99.cli import main

    assert main(["train", "--budget", "10x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "mnist99 train: error: invalid config value train.budget='10x': expected a duration such as 90s, 10m, "
        "1h30m or 2.5h (h, m, s in that order), or a number of seconds\n")


def test_stages_that_do_not_train_have_no_budget_flag(capsys):
    from mnist99.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["prepare", "--budget", "10m"])
    assert "unrecognized arguments: --budget" in capsys.readouterr().err


def test_the_plan_fills_the_budget_to_its_aim_with_whole_epochs():
    plan = plan_epochs(600, [MemberCost(epoch=10, fixed=20)], after_seconds=0, max_epochs=100, started=0,
                       clock=clock_at(30))
    # 0.95 * 600 = 570 s: 30 s already spent, 20 s fixed, 52 epochs of 10 s
    assert plan.fitting == (52,) and plan.planned_at == 30 and not plan.capped
    assert plan.expected_seconds == pytest.approx(570)
    assert plan.epochs == (63,)  # the schedule: a fifth more (62.4, up to a whole epoch), for a machine that speeds up


def test_members_share_the_room_the_rest_goes_one_epoch_at_a_time_and_the_last_takes_one_it_ends_partway():
    members = [MemberCost(epoch=10, fixed=5)] * 3
    plan = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=100, clock=clock_at(100))
    # room = 570 - 30 (after) - 15 (fixed) = 525: 17 rounds of 30 s, 15 s left buys member 1 one more epoch,
    # and the 5 s then left (half an epoch) member 3 one that its deadline ends halfway, at 570 s
    assert plan.fitting == (18, 17, 18) and plan.epochs == (22, 21, 22)
    assert plan.member_seconds == (185, 175, 185) and plan.after_seconds == 30
    assert plan.planned_seconds == pytest.approx(575) and plan.expected_seconds == pytest.approx(570)
    # under a tenth of an epoch left (0.5 s here): no epoch more
    close = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=100, clock=clock_at(104.5))
    assert close.fitting == (18, 17, 17) and close.expected_seconds == pytest.approx(569.5)


@pytest.mark.parametrize("budget_seconds", [300, 417, 600, 1111, 1200])
def test_a_plan_ends_between_85_and_95_percent_of_the_budget(budget_seconds):
    members = [MemberCost(epoch=17.3, fixed=9.1)] * 3  # the default net's epoch on an AVX-512 2-core CPU
    plan = plan_epochs(budget_seconds, members, after_seconds=25, max_epochs=48, started=0, clock=clock_at(12))
    assert 0.85 <= plan.expected_seconds / budget_seconds <= budget.AIM + 1e-9


def test_time_already_spent_and_fixed_costs_take_epochs_away():
    members = [MemberCost(epoch=10, fixed=0)]
    fresh = plan_epochs(200, members, 0, 100, started=0, clock=clock_at(0))
    later = plan_epochs(200, members, 0, 100, started=0, clock=clock_at(50))
    with_after = plan_epochs(200, members, 50, 100, started=0, clock=clock_at(0))
    assert fresh.fitting == (19,) and later.fitting == (14,) and with_after.fitting == (14,)


def test_at_least_one_epoch_then_too_small_is_an_error_naming_the_budget():
    members = [MemberCost(epoch=10, fixed=5)] * 2
    assert plan_epochs(32, members, 0, 100, started=0, clock=clock_at(0)).fitting == (1, 1)  # 30 <= 0.95 * 32
    with pytest.raises(ConfigError, match=r"train\.budget=30s is too small for 2 members on this machine: "
                                          r"one epoch each needs ~30s, so give at least 32s"):
        plan_epochs(30, members, 0, 100, started=0, clock=clock_at(0))


def test_max_epochs_caps_a_long_budget_and_the_line_says_so():
    plan = plan_epochs(3600, [MemberCost(10, 5)] * 2, 0, 5, started=0, clock=clock_at(0))
    assert plan.epochs == plan.fitting == (5, 5) and plan.capped  # the cap holds the schedules too
    assert plan.expected_seconds == pytest.approx(110)
    assert plan_epochs(3600, [MemberCost(10, 5)], 0, 500, started=0, clock=clock_at(0)).capped is False
    assert "capped by train.budget_max_epochs=5" in budget.plan_line(plan, started=0)


def test_the_plan_line_says_what_was_chosen_and_when_it_ends():
    started = time.mktime((2026, 11, 30, 14, 0, 0, 0, 0, -1))
    plan = plan_epochs(600, [MemberCost(10, 5)] * 3, 30, 100, started=started, clock=clock_at(started + 90))
    assert plan.fitting == (15, 14, 15)  # 90 s spent, members of 155, 145 and 155 s, 30 s after them: 575 s
    assert plan.expected_seconds == 570  # member 3's deadline ends it half-way through its epoch 15
    assert budget.plan_line(plan, started) == ("budget 10m: 3 members x 14-15 epochs (schedules of 17-18), ~2.5 min "
                                               "each; expected finish 14:09 (95% of it)")
    assert budget.reused_line(plan, "abc") == ("budget 10m: the plan of run abc: 3 members x 14-15 epochs "
                                               "(schedules of 17-18)")
    assert budget.used_line(600, 564) == "budget 10m: 9.4 min used (94%)"


def test_a_short_budget_trains_fewer_members_so_that_each_gets_its_min_epochs():
    members = [MemberCost(epoch=10, fixed=5)] * 3

    def plan(budget_seconds, min_epochs, max_epochs=100):
        return plan_members(budget_seconds, members, lambda n: 10 * n, max_epochs, min_epochs, started=0, clock=clock_at(0))

    # 190 s to spend: 3 members cost 45 s fixed and 30 s a round, 2 members 30 s and 20 s, one 15 s and 10 s
    assert plan(200, min_epochs=4).fitting == (5, 5, 5) and plan(200, min_epochs=4).dropped == 0  # member 3's 5th partway
    assert plan(200, min_epochs=6).fitting == (8, 8) and plan(200, min_epochs=6).dropped == 1
    assert plan(200, min_epochs=9).fitting == (18,) and plan(200, min_epochs=9).dropped == 2
    assert plan(200, min_epochs=6).expected_seconds == pytest.approx(190)
    assert plan(200, min_epochs=6, max_epochs=3).fitting == (3, 3, 3)  # a cap under the minimum keeps every member
    assert plan(60, min_epochs=6).fitting == (5,)  # 3 members get no epoch, 2 members one each
    assert plan(200, min_epochs=7).fitting == (8, 8)  # the epochs that fit count, not the longer schedules (10)
    with pytest.raises(ConfigError, match=r"train\.budget=20s is too small for model on this machine"):
        plan(20, min_epochs=6)
    line = budget.plan_line(plan(200, min_epochs=6), started=0)
    assert line.endswith("; 2 members, not 3: more would get under train.budget_min_epochs=6 epochs each")
    assert budget.reused_line(plan(200, min_epochs=9), "abc") == ("budget 3m20s: the plan of run abc: 1 member (not 3) "
                                                                  "x 18 epochs (schedules of 22)")
    assert "not 3" not in budget.plan_line(plan(200, min_epochs=4), started=0)


def test_a_plan_survives_its_json_round_trip():
    plan = plan_epochs(600, [MemberCost(10, 5)] * 2, 30, 100, started=0, clock=clock_at(12))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    dropped = plan_members(100, [MemberCost(10, 5)] * 2, lambda n: 0, 100, 8, started=0, clock=clock_at(0))
    assert dropped.dropped == 1 and Plan.from_dict(json.loads(json.dumps(dropped.to_dict()))) == dropped
    assert plan.params()["budget.epochs"] == ",".join(map(str, plan.epochs))
    assert plan.params()["budget.fit_epochs"] == ",".join(map(str, plan.fitting)) != plan.params()["budget.epochs"]
    older = Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "fit_epochs"})  # recorded without them
    assert older.fitting == older.epochs


def test_members_at_once_are_planned_in_lanes_each_filling_the_room_the_job_leaves():
    members = [MemberCost(epoch=10, fixed=5, start=2)] * 3
    plan = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=0, clock=clock_at(0), lanes=3)
    # each lane holds one member: 540 s (570 less the 30 after), 5 s fixed, 53 epochs, and 5 s left: one more
    # that ends halfway, for every member (each is its lane's last)
    assert plan.lanes == 3 and plan.fitting == (54, 54, 54)
    assert plan.planned_seconds == pytest.approx(575) and plan.expected_seconds == pytest.approx(570)
    assert [plan.fit_allowance(i) for i in range(3)] == pytest.approx([542 - 5] * 3)  # each its fit less the overshoot
    one_by_one = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=0, clock=clock_at(0))
    assert max(one_by_one.fitting) < 20 and one_by_one.lanes == 1
    # a fourth member trains after the first, in its lane: that lane is the job's longest and sets the rounds
    four = plan_epochs(600, [MemberCost(epoch=10, fixed=5, start=2)] * 4, 30, 100, started=0, clock=clock_at(0), lanes=3)
    assert four.fitting[0] + four.fitting[3] <= 53 and four.fitting[1] > four.fitting[0]
    assert four.planned_seconds <= 600 and Plan.from_dict(four.to_dict()) == four
    assert "3 members (3 at once) x 54 epochs" in budget.plan_line(plan, started=0)
    assert "at once" not in budget.plan_line(one_by_one, started=0)
    assert "3 members (3 at once) x 54 epochs" in budget.reused_line(plan, "abc")  # a rerun says how its members train
    assert "at once" not in budget.reused_line(one_by_one, "abc")


def test_each_member_may_fit_its_planned_share_plus_an_equal_part_of_the_spare_room_and_the_last_less_its_overshoot():
    members = [MemberCost(epoch=10, fixed=5, start=2)] * 3
    plan = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=100, clock=clock_at(104.5))
    assert plan.fitting == (18, 17, 17) and plan.expected_seconds == pytest.approx(569.5)
    assert plan.fit_seconds == (182, 172, 172)  # start + the epochs that fit x epoch, not the longer schedules
    assert [plan.after_fit_seconds(i) for i in range(3)] == [3, 3, 3]  # fixed less start: scoring and saving
    spare = (0.95 * 600 - 569.5) / 3
    assert [plan.fit_allowance(i) for i in range(3)] == pytest.approx([182 + spare, 172 + spare, 172 + spare])
    over = plan_epochs(600, members, after_seconds=30, max_epochs=100, started=100, clock=clock_at(100))
    assert over.fitting == (18, 17, 18) and over.planned_seconds == pytest.approx(575)  # 5 s past the aim
    assert [over.fit_allowance(i) for i in range(3)] == pytest.approx([182, 172, 182 - 5])
    older = Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "fit_seconds"})  # recorded without it
    assert older.fit_allowance(0) is None


def test_the_epochs_that_fit_count_an_epochs_length_into_what_the_allowance_leaves():
    assert budget.epochs_that_fit(elapsed=40, epoch=10, allowance=50, done=4, end=5) == 5
    assert budget.epochs_that_fit(elapsed=40, epoch=10.5, allowance=50, done=4, end=5) == 4.9  # to a tenth
    assert budget.epochs_that_fit(elapsed=20, epoch=9, allowance=50, done=2, end=9) == 5.3
    assert budget.epochs_that_fit(elapsed=40, epoch=10.5, allowance=40.9, done=4, end=5) == 4  # under a tenth left
    assert budget.epochs_that_fit(elapsed=10, epoch=1, allowance=50, done=1, end=9) == 9  # never past the plan
    assert budget.epochs_that_fit(elapsed=60, epoch=10, allowance=50, done=5, end=9) == 5  # already over


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Takes(keras.callbacks.Callback):
    """Advances ``clock`` by each epoch's given length at the epoch's end (before the deadline looks)."""

    def __init__(self, clock: FakeClock, seconds: list[float]) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds[epoch]


class Rates(keras.callbacks.Callback):
    """The learning rate each step reads (the optimiser's current value before the step)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class StepsTake(keras.callbacks.Callback):
    """Advances ``clock`` by ``seconds[epoch]`` at each step's end (before the deadline looks), and by
    ``compile`` more at the fit's first step."""

    def __init__(self, clock: FakeClock, seconds: list[float], compile: float = 0.0, validation_compile: float = 0.0):
        super().__init__()
        self.clock, self.seconds, self.epoch = clock, seconds, 0
        self.compile, self.validation_compile = compile, validation_compile

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds[self.epoch] + self.compile
        self.compile = 0.0

    def on_test_batch_end(self, batch, logs=None):  # validation batches take no time, the first one's compiling aside
        self.clock.now += self.validation_compile
        self.validation_compile = 0.0


def fit_with_deadline(seconds: list[float], allowance: float, schedule=None, per_step: bool = False,
                      compile: float = 0.0, validation_compile: float | None = None):
    """A fit of len(seconds) planned epochs of 4 steps, epoch i taking seconds[i] on a fake clock (with
    ``per_step``, each of its steps does), under a BudgetDeadline; SGD runs ``schedule`` (a constant rate
    when None). The loss is the mean output of a
    one-weight linear model fed ones, starting at 0, so each step lowers the weight by exactly that step's
    rate: the weight tells which rates the compiled step used. Returns the guard, the epochs run, the
    rates the steps read and the model. ``compile``: seconds more the fit's first step takes (with ``per_step``);
    ``validation_compile``: validate each epoch on 2 batches, the first of the fit taking that long."""
    from mnist99.training.callbacks import BudgetDeadline

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.01 if schedule is None else schedule),
                  loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    clock, rates = FakeClock(), Rates()
    guard = BudgetDeadline(allowance=allowance, clock=clock)
    validation = None if validation_compile is None else (np.ones((4, 1)), np.zeros((4, 1)))
    takes = StepsTake(clock, seconds, compile, validation_compile or 0.0) if per_step else Takes(clock, seconds)
    history = model.fit(np.ones((8, 1)), np.zeros((8, 1)), batch_size=2, epochs=len(seconds), verbose=0, shuffle=False,
                        validation_data=validation, validation_batch_size=2, callbacks=[takes, guard, rates])
    return guard, len(history.history["loss"]), rates.rates, model


@pytest.mark.parametrize(("seconds", "epochs_run", "steps_run", "stopped_after"), [
    ([10, 10, 10, 10, 10], 5, 20, None),  # as planned: 40 s + another 10 s still ends at the 50 s allowed
    # slower from epoch 3: epochs after the first average 15 s, and the 10 s left at 40 s hold 0.6 of one:
    # 2 of epoch 4's 4 steps (0.6 x 4 = 2.4), then Keras validates the epoch and the fit ends
    ([10, 10, 20, 20, 20], 4, 14, 3.5),
])
def test_the_deadline_ends_a_fit_partway_through_the_epoch_where_its_time_runs_out(seconds, epochs_run, steps_run,
                                                                                  stopped_after):
    from mnist99.stages.train import stop_note

    guard, run, rates, _ = fit_with_deadline(seconds, allowance=50)
    assert run == epochs_run and len(rates) == steps_run and guard.stopped_after == stopped_after
    assert guard.unspent_by_now() == pytest.approx(50 - sum(seconds[:epochs_run]))  # what the next member may spend
    note = stop_note([guard], epochs_run, planned=5)
    assert note == (None if stopped_after is None else
                    "the budget's deadline ended it after 3.5 of 5 epochs, at its share of the budget")


def test_an_epoch_slower_than_the_plan_is_cut_at_the_step_where_the_time_runs_out():
    """After 3 epochs of 10 s, 1.5 more fit in the 45 s allowed; epoch 4 then runs at 5 s a step, not 2.5:
    the fit stops after its 3rd step, at 45 s, not at the 2 steps of epoch 5 the plan said (55 s)."""
    guard, run, rates, _ = fit_with_deadline([2.5, 2.5, 2.5, 5.0, 5.0], allowance=45, per_step=True)
    assert run == 4 and len(rates) == 15 and guard.clock.now == 45
    assert guard.stopped_after == 3.75 and guard.unspent_by_now() == 0


def test_the_first_steps_and_validations_compilation_is_not_taken_for_an_epochs_length():
    """Under XLA on a GPU the first step compiles for 10-25 s and an epoch then takes under a second: 20 s of
    compiling and epochs of 1 s (4 steps of 0.25 s) fit the 28.5 s allowed, 8 epochs. Judged by its whole
    first epoch (20.75 s), no second epoch would fit and the fit would stop after one."""
    guard, run, rates, _ = fit_with_deadline([0.25] * 8, allowance=28.5, per_step=True, compile=20)
    assert run == 8 and len(rates) == 32 and guard.stopped_after is None
    assert guard.unspent_by_now() == pytest.approx(0.5)
    # time that is truly gone still counts: 26 s of compiling leave room for 2.5 of the 8 epochs
    guard, run, _, _ = fit_with_deadline([0.25] * 8, allowance=28.5, per_step=True, compile=26)
    assert run == 3 and guard.stopped_after == 2.5
    # and the first validation pass compiles the test step: 12 + 8 s of compiling, the same 8 epochs
    guard, run, _, _ = fit_with_deadline([0.25] * 8, allowance=28.5, per_step=True, compile=12, validation_compile=8)
    assert run == 8 and guard.stopped_after is None


def test_each_member_may_spend_what_the_members_trained_before_it_left_of_their_deadlines(monkeypatch):
    """A member the deadline stops leaves up to an epoch of its share; the next member's deadline gets it
    (and loses what an earlier one overran), so the job spends its budget, not each member its share."""
    from mnist99.stages import ensemble
    from mnist99.stages.train import deadline

    plan = plan_epochs(600, [MemberCost(10, 5, start=2)] * 3, 30, 100, started=0, clock=clock_at(0))
    assert deadline(plan, 1, carried=7.5)[0].allowance == pytest.approx(plan.fit_allowance(1) + 7.5)
    seen = []

    def fake_fit_member(cfg, splits, index, nested=False, force=False, budgeted=None, callbacks=None, carried=0.0):
        seen.append(carried)
        return {"run_id": f"r{index}", "model": object(), "unspent": carried + [12.5, -20.0, 4.0][index - 1]}

    monkeypatch.setattr(ensemble, "fit_member", fake_fit_member)
    _, run_ids = ensemble.fit_members(load_config(None, ["ensemble.size=3"]), splits=None, budgeted=plan)
    assert run_ids == ["r1", "r2", "r3"] and seen == [0.0, 12.5, -7.5]


def test_costs_add_up_from_the_measured_speed():
    train = defaults().train  # batch 128, overhead: epoch 0.1 s, member 3 s, job 20 s
    speed = Speed(step_seconds=0.04, start_seconds=4.0, image_seconds=0.0001, epoch_seconds=0.5)
    cost = budget.member_cost(speed, train, train_images=55_000, val_images=5_000, test_images=10_000)
    assert cost.epoch == pytest.approx(429 * 0.04 + 0.5 + 0.5 + train.budget_overhead.epoch)
    assert cost.fixed == pytest.approx(4.0 + 1.5 + train.batchnorm_refresh * 0.04 + train.budget_overhead.member)
    refreshed = budget.member_cost(speed, train.model_copy(update={"batchnorm_refresh": 50}), 55_000, 5_000, 10_000)
    assert refreshed.fixed == pytest.approx(4.0 + 1.5 + 50 * 0.04 + train.budget_overhead.member)  # batches as steps
    few = budget.member_cost(speed, train.model_copy(update={"batchnorm_refresh": 50}), 1_280, 5_000, 10_000)
    assert few.fixed == pytest.approx(4.0 + 1.5 + 10 * 0.04 + train.budget_overhead.member)  # no more than it has
    assert budget.after_members_seconds([0.0001] * 3, 5_000, 10_000, 20) == pytest.approx(3 * 3.5 + 20)
    assert budget.after_members_seconds([], 5_000, 10_000, 20) == 0.0
    # the evaluation pack's robustness table: its 2,000 digits clean and under 19 corruptions, through the ensemble
    assert budget.after_members_seconds([0.0001] * 3, 5_000, 10_000, 20, robust_images=40_000) == pytest.approx(3 * 7.5 + 20)
    # test-time shifts: every digit after the members passes through each member once more per shift
    assert budget.after_members_seconds([0.0001] * 3, 5_000, 10_000, 20, views=5) == pytest.approx(5 * 3 * 3.5 + 20)
    assert Speed.from_steps(0.03, 2.0, batch_size=100).image_seconds == pytest.approx(0.0001)


def test_a_plan_prices_the_test_time_shifts_of_the_members_it_scores():
    plain = load_config(None, ["train.budget=10m", "evaluate.robustness=false"])
    shifted = with_overrides(plain, {"ensemble.tta_shifts": [[0, 1], [0, -1], [1, 0], [-1, 0]]})
    assert budget.tta_views(plain, 3) == 1 and budget.tta_views(shifted, 3) == 5
    speed = Speed(step_seconds=0.04, start_seconds=4.0, image_seconds=0.0001, epoch_seconds=0.5)
    counts = {"train": 55_000, "val": 5_000, "test": 10_000}
    plans = [budget.plan_job(cfg, [cfg] * 3, [speed] * 3, counts, started=0.0, ensemble_size=3, clock=lambda: 0.0)
             for cfg in (plain, shifted)]
    assert plans[1].after_seconds - plans[0].after_seconds == pytest.approx(4 * 3 * 3.5)  # 4 more passes of 35,000
    assert plans[1].expected_seconds <= 0.95 * 600 and sum(plans[1].epochs) <= sum(plans[0].epochs)


def test_a_plan_of_one_member_prices_the_shifts_a_lone_member_is_scored_with():
    """A budget that leaves one member (too short for more) scores it with ``ensemble.tta_shifts_alone``:
    the plan prices those passes for that member count only."""
    cfg = load_config(None, ["train.budget=5m", "evaluate.robustness=false"])
    assert budget.tta_views(cfg, 1) == 1 + len(cfg.ensemble.tta_shifts_alone) > 1 and budget.tta_views(cfg, 2) == 1
    speed = Speed(step_seconds=0.08, start_seconds=4.0, image_seconds=0.0001, epoch_seconds=0.5)  # ~35 s an epoch
    counts = {"train": 55_000, "val": 5_000, "test": 10_000}
    lone = budget.plan_job(cfg, [cfg] * 3, [speed] * 3, counts, started=0.0, ensemble_size=3, clock=lambda: 0.0)
    assert len(lone.epochs) == 1 and lone.dropped == 2  # 5 minutes of these members: one gets 6 epochs or more
    assert lone.after_seconds == pytest.approx(budget.tta_views(cfg, 1) * 3.5 + cfg.train.budget_overhead.job)
    unshifted = with_overrides(cfg, {"ensemble.tta_shifts_alone": []})
    alone = budget.plan_job(unshifted, [cfg] * 3, [speed] * 3, counts, started=0.0, ensemble_size=3, clock=lambda: 0.0)
    assert alone.after_seconds == pytest.approx(3.5 + cfg.train.budget_overhead.job)


def test_the_robustness_tables_digits_count_only_when_the_evaluation_pack_makes_one():
    from mnist99.stages.train import robust_images

    assert robust_images(defaults()) == 40_000  # 2,000 digits, clean and under 19 corruptions
    assert robust_images(load_config(None, ["evaluate.robustness=false"])) == 0
    assert robust_images(load_config(None, ["evaluate.robustness_size=100"])) == 2_000


def test_a_machine_faster_than_its_probe_still_fills_the_members_share():
    """The schedule spans a fifth more epochs than the probe's speed fits: epochs 16% faster than planned
    run on into the extra ones until the share is spent; a schedule of the fitting epochs only ends at 84%."""
    plan = plan_epochs(100, [MemberCost(epoch=19, fixed=0)], after_seconds=0, max_epochs=100, started=0,
                       clock=clock_at(0))
    assert plan.fitting == (5,) and plan.epochs == (6,) and plan.fit_allowance(0) == pytest.approx(95)
    _, run, _, _ = fit_with_deadline([16.0] * plan.epochs[0], allowance=plan.fit_allowance(0))
    assert 0.9 <= run * 16.0 / plan.fit_allowance(0) <= 1.02
    _, exact, _, _ = fit_with_deadline([16.0] * plan.fitting[0], allowance=plan.fit_allowance(0))
    assert exact * 16.0 / plan.fit_allowance(0) < 0.85


def test_a_deadline_counts_from_when_it_is_made_and_passes_on_what_the_whole_member_left():
    """Made just before the member's model is built, the deadline counts the build (the plan's ``start``);
    what it passes on counts the member's scoring and saving after the fit against their planned seconds."""
    from mnist99.training.callbacks import BudgetDeadline

    clock = FakeClock()
    guard = BudgetDeadline(allowance=50, clock=clock)
    clock.now = 30.0  # building, compiling, then the fit
    assert guard.unspent_by_now() == 20 and guard.unspent_by_now(after_fit=5) == 25
    clock.now = 60.0  # scoring and saving ran over their 5 s
    assert guard.unspent_by_now(after_fit=5) == -5


def test_an_ensemble_member_passes_on_what_it_left_scoring_and_saving_included(store, tiny_splits, monkeypatch):
    from mnist99 import tracking
    from mnist99.stages import ensemble, train

    cfg = load_config(None, ["ensemble.size=3"])
    tracking.setup(cfg)
    plan = plan_epochs(600, [MemberCost(10, 5, start=2)] * 3, 30, 100, started=0, clock=clock_at(0))

    def fake_train_in_run(member_cfg, splits, nested=False, name=None, callbacks=(), budgeted=None, tags=None, key=None,
                          parent_run_id=None):
        guard = callbacks[-1]
        guard.clock = lambda: guard._began + 40  # the member took 40 s, fit, scoring and saving
        return {"run_id": "r1", "model": object(), "epochs_run": member_cfg.train.epochs, "best_epoch": 1}

    monkeypatch.setattr(train, "train_in_run", fake_train_in_run)
    out = ensemble.fit_member(cfg, tiny_splits, 2, nested=True, budgeted=plan, carried=2.5)
    assert out["unspent"] == pytest.approx(plan.fit_allowance(1) + 2.5 + plan.after_fit_seconds(1) - 40)


def test_early_stopping_before_the_plan_is_said_and_the_finish_is_estimated():
    assert budget.early_stop_note(7, 9) == "early stopping ended it after epoch 7 of 9, before its share of the budget"
    assert budget.early_stop_note(9, 9) is None
    assert budget.early_stop_note(7, 9, budgeted=False) == "early stopping ended it after epoch 7 of 9"
    member = MemberCost(epoch=10, fixed=20)
    assert budget.finish_estimate(member, 4, member_started=1000, members_after=2, after_seconds=30) == 1000 + 3 * 60 + 30
    assert budget.finish_line("ensemble: member 1/3", member, 4, 0).startswith("ensemble: member 1/3: ~1.0 min per member, "
                                                                                "expected finish ")
    assert budget.finish_line("train", member, 4, 0).startswith("train: ~1.0 min, expected finish ")


def test_step_clock_times_the_steps_after_the_first_ones_on_its_clock():
    from mnist99.training.callbacks import StepClock

    now = [100.0]
    timed = []
    timer = StepClock(skip=3, steps=4, clock=lambda: now[0], on_timed=timed.append)
    timer.set_params({"steps": 50, "epochs": 2})
    timer.on_train_begin()
    timer.on_epoch_begin(1)  # a resumed fit starts past epoch 0
    for seconds in [5.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 9.0]:  # tracing first, a slow step after the timed ones
        now[0] += seconds
        timer.on_train_batch_end(0)
    assert timed == [timer] and timer.step_seconds == pytest.approx(0.5)
    assert timer.warm_at == pytest.approx(107.0) and timer.skipped == 3 and timer.first_epoch == 1

    short = StepClock(skip=3, steps=20, clock=lambda: now[0])
    short.set_params({"steps": 4})  # an epoch of 4 steps: skip 2, time the 2 left at the epoch's end
    short.on_train_begin()
    for seconds in [5.0, 1.0, 0.25, 0.25]:
        now[0] += seconds
        short.on_train_batch_end(0)
    short.on_epoch_end(0)
    assert short.skipped == 2 and short.step_seconds == pytest.approx(0.25)


def fake_speeds(cfgs, measure):
    return [Speed(step_seconds=0.01, start_seconds=1.0, image_seconds=0.0001, epoch_seconds=0.1) for _ in cfgs]


def test_the_step_clock_reports_each_epoch_from_the_fits_second_end_to_end():
    from mnist99.training.callbacks import StepClock

    now, seen = [0.0], []
    timer = StepClock(skip=1, steps=2, clock=lambda: now[0], on_epoch=lambda t, epoch, s: seen.append((epoch, s)))
    timer.set_params({"steps": 5, "epochs": 3})
    timer.on_train_begin()
    for epoch, seconds in enumerate([40.0, 30.0, 31.0]):  # the first epoch holds the tracing: no report
        timer.on_epoch_begin(epoch)
        now[0] += seconds
        timer.on_epoch_end(epoch)
    assert seen == [(1, 30.0), (2, 31.0)]


def test_a_revised_finish_counts_the_measured_epoch_and_is_said_only_when_it_moves_enough():
    member = MemberCost(epoch=40, fixed=20)
    measured, finish = budget.revised_finish(member, 30, epochs=24, epochs_left=22, members_after=2,
                                             after_seconds=25, now=1000)
    assert measured == MemberCost(epoch=30, fixed=20)
    assert finish == 1000 + 22 * 30 + 2 * (20 + 24 * 30) + 25
    assert budget.worth_revising(shown=5000, finish=4500, now=1000)  # 500 s of 4,000 left: said
    assert not budget.worth_revising(shown=5000, finish=4700, now=1000)  # 300 s: under a tenth
    assert not budget.worth_revising(shown=1300, finish=1250, now=1000)  # under a minute
    line = budget.finish_line("ensemble: member 1/3", measured, 24, 0, after_epoch=2)
    assert line.startswith("ensemble: member 1/3: ~12.3 min per member, expected finish ") and line.endswith(" (after epoch 2)")


def test_without_a_budget_the_finish_is_said_after_the_first_steps_and_again_when_the_epochs_run_faster(tiny_splits, capsys):
    """As on a 2-core EPYC: the first steps gave ~41 s an epoch, the epochs took ~30 s; a steady machine gets one line."""
    from mnist99.stages.train import finish_timer

    cfg = load_config([SMOKE], ["train.epochs=24", "train.batch_size=10", "evaluate.robustness=false"])
    steps = len(tiny_splits.y_train) // 10

    def lines(epoch_seconds):
        now = [1000.0]
        timer = finish_timer(cfg, tiny_splits, "ensemble: member 1/3", members_after=2, ensemble_size=3,
                             clock=lambda: now[0])
        timer.set_params({"steps": steps, "epochs": 24})
        timer.on_train_begin()
        for epoch, seconds in enumerate(epoch_seconds):
            timer.on_epoch_begin(epoch)
            for _ in range(steps):  # the timed steps at 2 s: an epoch of 20 steps ~41 s with validation
                now[0] += 2.0
                timer.on_train_batch_end(0)
            now[0] += seconds - 2.0 * steps
            timer.on_epoch_end(epoch)
        return [line for line in capsys.readouterr().out.splitlines() if "expected finish" in line]

    steady = lines([41.0] * 4)
    assert len(steady) == 1 and "(after" not in steady[0]
    faster = lines([45.0, 30.0, 30.0, 30.0])
    assert len(faster) == 2 and faster[1].endswith("(after epoch 2)")
    first, revised = (float(re.search(r"~([0-9.]+) min", line).group(1)) for line in faster)
    assert revised < first
    # epochs of 26 and 37 s in turn (as on 2 cores): their mean settles, and so does the estimate; the
    # last epoch alone moved it by over a minute at every epoch end
    noisy = lines([41.0] + [26.0, 37.0] * 6)
    assert 2 <= len(noisy) <= 3


def test_an_ensemble_plan_is_recorded_found_again_and_forced_afresh(store, tiny_splits, monkeypatch, capsys):
    """The plan's epochs become member overrides; a rerun finds the plan on the run that recorded it
    (whatever its status: here KILLED) without timing anything; ``--force`` times and plans again."""
    from mnist99 import tracking
    from mnist99.stages import ensemble
    from mnist99.training import probe

    cfg = load_config(None, ["ensemble.size=3", "train.budget=2m", "train.budget_max_epochs=1000", "ensemble.workers=1",
                             "ensemble.members=[{seed: 7}, {run_id: abc}, {overrides: {model.width: 8}}]"])
    monkeypatch.setattr(probe, "measure_speeds", fake_speeds)
    tracking.setup(cfg)
    planned, (plan, key) = ensemble.plan_budget(cfg, tiny_splits, started=time.time())
    assert len(plan.epochs) == 2 and planned.train.budget is None  # the reused run_id member is not planned
    members = planned.ensemble.members
    assert members[0].seed == 7 and members[0].overrides == {"train.epochs": plan.epochs[0]}
    assert members[1].run_id == "abc" and members[1].overrides == {}
    assert members[2].overrides == {"model.width": 8, "train.epochs": plan.epochs[1]}
    assert key == tracking.cache_key("ensemble", cfg, tiny_splits.digest)
    assert "ensemble: budget 2m: 2 members x " in capsys.readouterr().out

    with pytest.raises(KeyboardInterrupt), tracking.stage_run(planned, "ensemble", "killed"):
        tracking.record_plan(key, plan.to_dict(), plan.params())
        raise KeyboardInterrupt
    monkeypatch.setattr(probe, "measure_speeds", lambda *a, **k: pytest.fail("a recorded plan was timed again"))
    again, (reused, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time())
    assert reused == plan and again == planned
    assert "the plan of run" in capsys.readouterr().out
    monkeypatch.setattr(probe, "measure_speeds", fake_speeds)
    assert ensemble.plan_budget(cfg, tiny_splits, started=time.time() - 30, force=True)[1][0] != plan
    assert ensemble.plan_budget(defaults(), tiny_splits, started=0) == (defaults(), None)


def test_an_ensemble_plan_that_drops_members_keeps_the_named_ones_and_the_seeds(store, tiny_splits, monkeypatch, capsys):
    """Members the budget cannot give ``train.budget_min_epochs`` are dropped from the end of those to
    train; a reused member stays, and the kept ones keep the seeds their places give them."""
    from mnist99 import tracking
    from mnist99.stages import ensemble
    from mnist99.training import probe

    cfg = load_config(None, ["ensemble.size=3", "train.budget=2m", "train.budget_max_epochs=1000",
                             "train.budget_min_epochs=1000", "seed=5", "ensemble.workers=1",
                             "ensemble.members=[{}, {run_id: abc}, {overrides: {model.width: 8}}]"])
    monkeypatch.setattr(probe, "measure_speeds", fake_speeds)
    tracking.setup(cfg)
    planned, (plan, _) = ensemble.plan_budget(cfg, tiny_splits, started=time.time())
    assert len(plan.epochs) == 1 and plan.dropped == 1
    assert planned.ensemble.size == 2 and [m.run_id for m in planned.ensemble.members] == [None, "abc"]
    assert planned.ensemble.members[0].seed == 5 and planned.ensemble.members[0].overrides == {"train.epochs": plan.epochs[0]}
    assert "ensemble: budget 2m: 1 member x " in capsys.readouterr().out

    monkeypatch.setattr(ensemble, "make_splits", lambda *a, **k: tiny_splits)
    monkeypatch.setattr(ensemble, "fit_member", lambda *a, **k: pytest.fail("a dropped member was trained"))
    assert ensemble.run_member(cfg, 3, started=time.time()) == {"run_id": None}
    assert ("ensemble: member 3/3: nothing to train: the budget's plan trains 1 member, not 2 "
            "(train.budget_min_epochs=1000)") in capsys.readouterr().out


@pytest.mark.integration
def test_a_budgeted_train_run_logs_its_plan_and_ends_within_it(smoke_cfg, store, capsys):
    """One real budgeted run at smoke size: timed, planned, capped, logged, inside the budget; the same
    command again finds the plan (a resume's first step) and keys the same model."""
    from mnist99 import tracking
    from mnist99.config import with_overrides
    from mnist99.data import make_splits
    from mnist99.stages import train

    cfg = with_overrides(smoke_cfg, {"train.budget": "40s", "train.budget_max_epochs": 3})
    started = time.time()
    out = train.run(cfg)
    wall = time.time() - started
    printed = capsys.readouterr().out
    assert "train: budget 40s: 1 model x 3 epochs" in printed and "capped by train.budget_max_epochs=3" in printed
    assert re.search(r"^train: budget 40s: [\d.]+ min used \(\d+%\)$", printed, re.MULTILINE)
    run = mlflow.MlflowClient(store).get_run(out["run_id"])
    assert run.data.params["budget.epochs"] == "3" and run.data.params["train.epochs"] == "3"
    assert run.data.params["train.budget"] == ""  # the model is keyed by its planned epochs, not the budget
    plan = Plan.from_dict(json.loads(run.data.tags["mnist99.budget_plan"]))
    assert plan.epochs == (3,) and plan.budget == 40
    assert out["epochs_run"] == 3 and wall <= 40 + 5
    assert 0 < run.data.metrics["budget_used"] <= wall / 40

    splits = make_splits(cfg.data, cfg.seed)
    found = train.plan_budget(cfg, [cfg], splits, started=time.time())
    assert found[0] == plan and found[1] == run.data.tags["mnist99.budget_key"]
    assert tracking.cache_key("train", train.with_epochs(cfg, 3), splits.digest) == run.data.tags["mnist99.cache_key"]


def test_a_compressed_schedule_reaches_its_own_last_step_at_the_new_end_however_often_it_is_compressed():
    from mnist99.training.optimizers import Compressible

    schedule = Compressible(keras.optimizers.schedules.CosineDecay(1.0, decay_steps=12, alpha=0.01), base_steps=12)
    assert [float(schedule.base_step(s)) for s in (0, 4, 11)] == [0, 4, 11]  # as built until compressed
    schedule.compress(now=4, end=8)  # the remaining 8 steps in 4
    assert [float(schedule.base_step(s)) for s in (3, 4, 6, 8)] == [3, 4, 8, 12]
    schedule.compress(now=6, end=7)  # again: what remains (base 8 to 12) in 1 step
    assert float(schedule.base_step(7)) == 12
    assert float(schedule(7)) == pytest.approx(0.01)  # the schedule's end value
    with pytest.raises(ValueError, match="end step 6 must come after step 6"):
        schedule.compress(now=6, end=6)


@pytest.mark.parametrize("name", ["onecycle", "cosine", "step", "exponential"])
def test_a_stretchable_schedule_runs_the_rates_of_the_fits_own_and_compresses_the_same(name):
    """Built over SCHEDULE_STEPS of its own, its length a variable (one compiled step for members of any
    epochs): the rates of the schedule built for the fit, step by step, and compressed, the same end."""
    from mnist99.training.optimizers import Compressible, build_optimizer

    cfg = load_config([], [f"train.schedule.name={name}", "train.schedule.step_every=2"]).train
    steps_per_epoch, epochs = 100, 5
    own = build_optimizer(cfg.optimizer, cfg.schedule, steps_per_epoch, epochs)._learning_rate
    stretched = build_optimizer(cfg.optimizer, cfg.schedule, steps_per_epoch, epochs, stretchable=True)._learning_rate
    assert isinstance(stretched, Compressible) and not isinstance(own, Compressible)
    # steps next to a warm-up's end or a step boundary may land either side of it: compare away from those
    steps = [0, 5, 20, 100, 150, 250, 350, 450, 499]
    assert [float(stretched(s)) for s in steps] == pytest.approx([float(own(s)) for s in steps], rel=1e-4)
    stretched.compress(now=100, end=200)  # the last 400 steps in 100
    assert float(stretched(200)) == pytest.approx(float(own(500)), rel=1e-4)


def test_a_deadline_that_fits_fewer_epochs_compresses_the_schedule_so_the_fit_still_ends_on_its_last_rate(capsys):
    from mnist99.stages.train import stop_note

    base = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=20, alpha=0.01)
    # epoch 3 takes 15 s: epochs after the first average 12.5 s, and at 35 s the 18.75 s left hold 1.5 epochs
    guard, run, rates, model = fit_with_deadline([10, 10, 15, 12.5, 12.5], allowance=53.75, schedule=base)
    assert run == 5 and guard.stopped_after == 4.5 and guard.compressed
    # steps 0-11 as built; epoch 4's 4 steps and epoch 5's first 2 run the schedule's last 8 (base 12 to 20)
    expected = [float(base(s)) for s in [*range(12), *(12 + k * 8 / 6 for k in range(6))]]
    assert rates == pytest.approx(expected, rel=1e-5)
    assert -float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(sum(expected), rel=1e-5)
    assert model.optimizer._learning_rate is base  # saved with the schedule it was built with
    assert "budget:" not in capsys.readouterr().out  # it still ends in epoch 5: the stop note says how far
    assert stop_note([guard], 5, planned=5) == ("the budget's deadline ended it after 4.5 of 5 epochs, at its share "
                                                 "of the budget; its learning-rate schedule was shortened to end there")


def test_a_constant_rate_runs_the_epochs_that_still_fit_then_stops():
    from mnist99.stages.train import stop_note

    # after epoch 3 epochs take 12.5 s on average (10, 15): at 35 s, 2.4 more fit in 65 s (2.5 on a step);
    # after epoch 4, 13.3 s: 1.1 more at 50 s, which on 4 steps an epoch is one whole epoch
    guard, run, rates, _ = fit_with_deadline([10, 10, 15, 15, 15, 15], allowance=65)
    assert run == 5 and len(rates) == 20 and guard.stopped_after == 5 and not guard.compressed
    assert stop_note([guard], 5, planned=6) == "the budget's deadline ended it after 5 of 6 epochs, at its share of the budget"


def test_the_first_epochs_tracing_does_not_shorten_the_schedule():
    base = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=20)
    # epoch 1 (25 s, tracing included) alone would leave room for one more in 65 s; the later ones show four
    guard, run, rates, _ = fit_with_deadline([25, 10, 10, 10, 10], allowance=65, schedule=base)
    assert run == 5 and guard.stopped_after is None and not guard.compressed
    assert rates == pytest.approx([float(base(s)) for s in range(20)], rel=1e-5)


def test_the_schedule_stretches_back_when_the_epochs_speed_up_again(capsys):
    base = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=32)
    # epoch 3 takes 30 s: 5 epochs fit in 100 s; then 5-s epochs bring the mean down and all 8 fit again
    guard, run, rates, _ = fit_with_deadline([10, 10, 30, 5, 5, 5, 5, 5], allowance=100, schedule=base)
    assert run == 8 and guard.stopped_after is None and not guard.compressed
    printed = capsys.readouterr().out
    assert ("budget: 5.5 epochs fit, not 8 (epochs take 20.0 s); the learning-rate schedule now ends after 5.5 "
            "epochs") in printed and "budget: 8 epochs fit, not 7" in printed
    assert float(guard._schedule.base_step(32)) == pytest.approx(32)  # the schedule's own end, on time
    assert rates[-1] > float(base(32))  # and not past it


def test_members_that_differ_only_in_seed_and_epochs_share_one_probe():
    from mnist99.training.probe import measure_speeds

    timed = []

    def measure(cfg):
        timed.append(cfg)
        return Speed(step_seconds=0.01 * len(timed), start_seconds=1.0, image_seconds=0.0001, epoch_seconds=0.1)

    members = [load_config(None, [f"seed={seed}", f"train.epochs={epochs}"]) for seed, epochs in ((1, 9), (2, 12))]
    members.append(load_config(None, ["seed=3", "model.width=40"]))
    speeds = measure_speeds(members, measure)
    assert [cfg.seed for cfg in timed] == [1, 3]  # the second member's net is the first's: not timed again
    assert speeds[0] is speeds[1] and speeds[2].step_seconds == 0.02


def test_the_probe_times_forward_passes_through_the_stages_call_and_counts_their_tracing_in_the_start():
    """``image_seconds`` is the rate of :func:`~mnist99.delivery.forward.predict_probs` (the stages' scoring call)
    on the net it is given; the first batch's tracing goes to ``start_seconds``."""
    from mnist99.constants import EVAL_BATCH
    from mnist99.training.probe import time_fit

    clock = {"now": 0.0}

    def tick() -> float:
        clock["now"] += 0.001
        return clock["now"]

    class Net:  # forward passes that cost 1 ms an image on the clock, the first call ``tracing`` s more
        def __init__(self, tracing: float) -> None:
            self.tracing, self.calls = tracing, 0

        def predict_on_batch(self, images):
            self.calls += 1
            clock["now"] += 0.001 * len(images) + (self.tracing if self.calls == 1 else 0.0)
            return np.zeros((len(images), 10), np.float32)

    cfg = load_config([SMOKE], ["train.optimizer.ema=null"])  # the fit's callbacks, for a plain compiled model
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = np.zeros((64 * 30, 28, 28, 1), np.float32), np.eye(10, dtype=np.float32)[np.arange(64 * 30) % 10]

    def train(steps: int) -> tuple[dict, int]:
        return {"x": x[:steps * 64], "y": y[:steps * 64], "batch_size": 64}, steps

    def probed(net: Net) -> Speed:
        clock["now"] = 0.0
        return time_fit(cfg, model, train, (x[:64], y[:64]), np.zeros((3000, 28, 28, 1), np.float32), val_images=64,
                        began=0.0, clock=tick, net=net)

    traced, untraced = Net(tracing=5.0), Net(tracing=0.0)
    speed, plain = probed(traced), probed(untraced)
    batches = -(-3000 // EVAL_BATCH)
    assert speed.image_seconds == pytest.approx(0.001, rel=0.01) and traced.calls == 1 + batches  # traced on 1, then timed
    assert speed.start_seconds - plain.start_seconds == pytest.approx(5.0, abs=0.1)


def test_a_mixed_precision_probe_prices_the_forward_passes_of_the_float32_twin_the_stages_score(tiny_splits, monkeypatch):
    """Trained in bfloat16, a member is scored as its float32 twin (``mnist99.training.fit.train_model``): the probe
    times that twin's forward passes, not the 16-bit net's, or a budget prices scoring at the wrong rate."""
    from mnist99.models.precision import mixed_layers
    from mnist99.training import probe

    timed = []

    def recording(net, images, *args, **kwargs):
        timed.append(mixed_layers(net))
        return real(net, images, *args, **kwargs)

    real = probe.predict_probs
    monkeypatch.setattr(probe, "predict_probs", recording)
    cfg = load_config([SMOKE], ["model.width=4", "model.depth=1", "train.mixed_precision=bfloat16", "train.verbose=0"])
    speed = probe.measure_speed(cfg, tiny_splits)
    assert timed and all(found == [] for found in timed)  # every timed pass ran on a float32 net
    assert speed.image_seconds > 0
