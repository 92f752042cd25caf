"""Timing this machine before a budgeted job: a few real training steps, epochs and forward passes of each member's net.

The probe builds and fits the member's net exactly as training will (:func:`mnist99.training.fit.set_up`),
so the steps it times are the steps the budget pays for, on this CPU or GPU, with this config's
batch, augmentation and data placement. It costs a few seconds a distinct net, counted in the budget.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from mnist99.config import Config
from mnist99.constants import EVAL_BATCH
from mnist99.data import Splits
from mnist99.data.model_input import to_model_input
from mnist99.delivery.forward import predict_probs
from mnist99.models.twin import serving_twin
from mnist99.training.budget import Clock, Speed
from mnist99.training.callbacks import StepClock

TIMED_EVAL_BATCHES = 4  # forward passes at the evaluation batch (2,048 images), once the predict step is traced


def measure_speed(cfg: Config, splits: Splits, clock: Clock = time.time) -> Speed:
    """Build, compile and fit ``cfg``'s net for two short epochs (a few steps and one validation batch
    each), then time the forward passes of the net the stages score (:func:`time_fit`): its serving twin
    (:func:`~mnist99.models.twin.serving_twin`: float32, Keras' own layers), not the net as trained. The twin is made
    before the fit, with the weights it has then: a forward pass costs the same whatever the weights."""
    from mnist99.training.fit import set_up

    began = clock()
    return time_set_up(cfg, splits, set_up(cfg, splits), began, clock)


def time_set_up(cfg: Config, splits: Splits, setup, began: float, clock: Clock = time.time) -> Speed:
    """:func:`time_fit` on a :class:`~mnist99.training.fit.Setup` of ``cfg`` made since ``began``."""

    def train(steps: int) -> tuple[dict, int]:
        taken = setup.train_ds.take(steps)
        return {"x": taken}, int(taken.cardinality())

    val_images, eval_images = timed_images(len(splits.y_val))
    return time_fit(cfg, setup.fitted, train, setup.val_ds.take(1), to_model_input(splits.x_val[:eval_images]),
                    val_images=val_images, began=began, clock=clock, net=serving_twin(setup.model))


def time_forward(net, evaluation, clock: Clock = time.time) -> tuple[float, float]:
    """Seconds per image of ``net``'s forward passes over ``evaluation`` through
    :func:`~mnist99.delivery.forward.predict_probs`, and the seconds its first batch took beyond that (tracing the
    predict step, which each member's first scoring pays too)."""
    began = clock()
    predict_probs(net, evaluation[:EVAL_BATCH])  # traces the predict step
    traced = clock()
    predict_probs(net, evaluation)
    image_seconds = (clock() - traced) / len(evaluation)
    return image_seconds, traced - began - min(len(evaluation), EVAL_BATCH) * image_seconds


def timed_images(n_val: int) -> tuple[int, int]:
    """Of ``n_val`` validation images, those of the probe's one validation batch and those of its timed
    forward passes (:data:`TIMED_EVAL_BATCHES` at the evaluation batch): one rule for every probe."""
    return min(n_val, EVAL_BATCH), min(n_val, TIMED_EVAL_BATCHES * EVAL_BATCH)


def time_fit(cfg: Config, model, train: Callable[[int], tuple[dict, int]], validation, evaluation,
             val_images: int, began: float, clock: Clock = time.time, net=None) -> Speed:
    """Fit a compiled ``model`` for two short epochs, then time forward passes of ``net`` (default: ``model``)
    over ``evaluation``: a :class:`Speed`.

    ``train(steps)`` gives ``fit``'s input arguments for about ``steps`` training steps and the steps they
    hold (a ``tf.data`` pipeline, or arrays and a batch size: any Keras backend); ``validation`` is one
    batch of ``val_images``; ``evaluation``, model inputs (float digits) for the forward passes. Those run
    through :func:`~mnist99.delivery.forward.predict_probs`, the call with which the stages score members
    and ensembles, so ``image_seconds`` is the rate they get: on a 2-core CPU 8,600 images/s (median of 8)
    against the stages' 9,000, where ``model.evaluate`` over the same 2,048 digits read 7,500 and once, in a
    5-minute job, half the stages' rate, pricing what follows its member at 99 s where it took ~50 s
    (2026-12-06-probe-forward-rates.md). Its first batch traces the predict step, as each member's first
    scoring does; that is timed apart and counted in ``start_seconds``.
    The first epoch's steps after the first few give ``step_seconds``; the second epoch, whole and
    steady, gives ``epoch_seconds`` (its time beyond steps and validation) and, subtracted from all
    that came before it since ``began``, ``start_seconds``: what each member pays again before its steps are
    steady (building, compiling, tracing the training, evaluation and predict steps).
    """
    import keras

    from mnist99.training.recipe import standard_callbacks

    timer = StepClock(clock=clock)
    fit_input, steps = train(timer.skip + timer.steps)
    marks: list[float] = []  # the clock at each epoch's start and end
    edges = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: marks.append(clock()),
                                           on_epoch_end=lambda epoch, logs: marks.append(clock()))
    model.fit(**fit_input, validation_data=validation, epochs=2, verbose=0, shuffle=False,
              callbacks=[*standard_callbacks(cfg, timer), edges])  # last: its epoch spans the others'
    image_seconds, tracing = time_forward(model if net is None else net, evaluation, clock)
    steady = marks[3] - marks[2]
    beyond = steady - steps * timer.step_seconds - val_images * image_seconds
    return Speed(timer.step_seconds, start_seconds=max(marks[1] - began - steady + tracing, 0.0),
                 image_seconds=image_seconds, epoch_seconds=max(beyond, 0.0))


def measure_speeds(cfgs: Sequence[Config], measure: Callable[[Config], Speed]) -> list[Speed]:
    """One :class:`Speed` per config, from ``measure`` (e.g. :func:`measure_speed` on the job's splits);
    configs that differ only in seed and epochs share one probe."""
    from mnist99.config import to_yaml

    measured: dict[str, Speed] = {}
    speeds = []
    for cfg in cfgs:
        shape = cfg.model_copy(deep=True)
        shape.seed, shape.train.epochs = 0, 1
        key = to_yaml(shape)
        if key not in measured:
            measured[key] = measure(cfg)
        speeds.append(measured[key])
    return speeds
