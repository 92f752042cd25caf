"""Optimisers and learning-rate schedules by name, built from Keras' own classes."""
from __future__ import annotations

import keras

from mnist99.config import OptimizerConfig, ScheduleConfig
from mnist99.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


@OPTIMIZERS.register("sgd")
def _sgd(cfg: OptimizerConfig, lr, **common) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)


@OPTIMIZERS.register("adamw")
def _adamw(cfg: OptimizerConfig, lr, **common) -> keras.optimizers.Optimizer:
    return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay, **common)


@OPTIMIZERS.register("adam")
def _adam(cfg: OptimizerConfig, lr, **common) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(lr, **common)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(cfg: OptimizerConfig, lr, **common) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(lr, momentum=cfg.momentum, **common)


@OPTIMIZERS.register("adagrad")
def _adagrad(cfg: OptimizerConfig, lr, **common) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adagrad(lr, **common)


@SCHEDULES.register("constant")
def _constant(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    return lr


@SCHEDULES.register("step")
def _step(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    """Step decay: multiply by ``step_factor`` every ``step_every`` epochs."""
    boundaries = [steps_per_epoch * e for e in range(cfg.step_every, epochs, cfg.step_every)]
    values = [lr * cfg.step_factor**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return lr
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@SCHEDULES.register("exponential")
def _exponential(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    """Smooth decay by ``step_factor`` per ``step_every`` epochs."""
    return keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch * cfg.step_every, cfg.step_factor)


def _warm_cosine(cfg: ScheduleConfig, lr: float, total: int, start: float):
    warmup = int(total * cfg.warmup)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=start, decay_steps=max(total - warmup, 1), alpha=cfg.final_fraction,
        warmup_target=lr if warmup else None, warmup_steps=warmup,
    )


@SCHEDULES.register("cosine")
def _cosine(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    """Linear warm-up from 0 to ``lr`` over ``warmup`` of the steps, then cosine to lr*final_fraction."""
    return _warm_cosine(cfg, lr, steps_per_epoch * epochs, start=0.0 if cfg.warmup else lr)


@SCHEDULES.register("onecycle")
def _onecycle(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    """One-cycle: warm up from lr/25 to ``lr``, then anneal by cosine to lr*final_fraction."""
    return _warm_cosine(cfg, lr, steps_per_epoch * epochs, start=lr / 25.0 if cfg.warmup else lr)


# A stretchable schedule's own length in its own steps, whatever the fit's. Any length would do: at 2**20 a
# float32 step of it is exact to an eighth, a small fraction of a fit's step for any fit under 2**20 steps.
SCHEDULE_STEPS = 2**20


def build_optimizer(opt: OptimizerConfig, sched: ScheduleConfig, steps_per_epoch: int, epochs: int,
                    stretchable: bool = False):
    """The optimiser named by ``opt.name`` driven by the schedule named by ``sched.name``.

    ``stretchable`` builds the schedule over :data:`SCHEDULE_STEPS` of its own and maps the fit's
    ``steps_per_epoch * epochs`` onto them through the variables of a :class:`Compressible`: the rates are
    the same, but the fit's length lives in a variable, not in constants of the compiled train step, so
    members of different epochs compile one program (one-cycle, cosine; a step schedule's count of steps
    still depends on the epochs), which a compilation cache then serves to them all (under XLA a train
    step compiles for seconds; ``benchmarks/gpu.py``'s budgeted members). The warp's
    variables are tracked by the optimiser on a backend whose compiled step reads only the variables it
    is handed (JAX); TensorFlow reads them without (tracked there, they would be saved with the optimiser).
    """
    make_opt = OPTIMIZERS.get(opt.name)
    schedule = SCHEDULES.get(sched.name)
    lr = schedule(sched, opt.lr, SCHEDULE_STEPS / epochs if stretchable else steps_per_epoch, epochs)
    warp = None
    if stretchable and isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = warp = Compressible(lr, SCHEDULE_STEPS, steps=steps_per_epoch * epochs)
    # Options every Keras optimiser takes, set once here rather than in each builder.
    common = dict(clipnorm=opt.clipnorm, use_ema=opt.ema is not None, ema_momentum=opt.ema or 0.99)
    optimizer = make_opt(opt, lr, **common)
    if warp is not None:
        warp.track_in(optimizer)
    return optimizer


class Compressible(keras.optimizers.schedules.LearningRateSchedule):
    """``base``, a schedule of ``base_steps``, run over ``steps`` (default: as built), until :meth:`compress`
    makes the rest of it run faster so that it ends sooner.

    A budgeted fit whose epochs run slower than planned ends before its planned epochs
    (:class:`mnist99.training.callbacks.BudgetDeadline`); cut there, a one-cycle or step schedule would
    stop before its last, lowest-rate steps. Compressed, the same schedule still reaches its end value
    at the new last step. The warp lives in variables that the compiled train step reads, so it changes
    mid-fit without retracing (under JAX only when :meth:`track_in` the optimiser, and from the next
    epoch on); a fit that saves its model puts ``base`` back first (Keras saves no custom schedule).
    """

    def __init__(self, base, base_steps: float, steps: float | None = None) -> None:
        self.base, self.base_steps = base, base_steps
        # Step s reads base at ``s * stretch`` before step ``pivot``, at ``base_at_pivot + (s - pivot) * rate``
        # from it on: until compressed, the pivot is 0 and the rate the stretch.
        stretch = base_steps / steps if steps else 1.0
        self.stretch = keras.Variable(stretch, trainable=False, name="compress_stretch")
        self.pivot = keras.Variable(0.0, trainable=False, name="compress_pivot")
        self.base_at_pivot = keras.Variable(0.0, trainable=False, name="compress_base_at_pivot")
        self.rate = keras.Variable(stretch, trainable=False, name="compress_rate")

    def base_step(self, step):
        step = keras.ops.cast(step, "float32")
        return keras.ops.where(step < self.pivot, step * self.stretch,
                               self.base_at_pivot + (step - self.pivot) * self.rate)

    def __call__(self, step):
        return self.base(self.base_step(step))

    def track_in(self, optimizer) -> None:
        """Hand the warp's variables to ``optimizer`` when the backend's compiled step reads only those
        (not TensorFlow's, which reads them anyway and would save them with the optimiser)."""
        if keras.backend.backend() != "tensorflow":
            for variable in (self.stretch, self.pivot, self.base_at_pivot, self.rate):
                optimizer._track_variable(variable)  # Keras has no public way to add one

    def compress(self, now: int, end: int) -> None:
        """From step ``now`` on, run the rest of the schedule so that its last step falls on step ``end``."""
        if end <= now:
            raise ValueError(f"compress: end step {end} must come after step {now}")
        base_now = float(keras.ops.convert_to_numpy(self.base_step(now)))
        self.pivot.assign(float(now))
        self.base_at_pivot.assign(base_now)
        self.rate.assign((self.base_steps - base_now) / (end - now))
