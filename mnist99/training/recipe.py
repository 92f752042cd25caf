"""What one model is trained with: its compiled loss and optimiser, and the stock callbacks.

Kept free of TensorFlow so that every Keras backend trains the same recipe: :mod:`mnist99.training.fit`
(TensorFlow, ``tf.data``) and ``benchmarks/gpu.py`` (JAX on a lent GPU) both build from here.
"""
from __future__ import annotations

import contextlib

import keras

from mnist99.config import Config
from mnist99.errors import ConfigError
from mnist99.models import build_model
from mnist99.models.precision import global_policy
from mnist99.training.augmented_net import net_of
from mnist99.training.devices import has_gpu
from mnist99.training.optimizers import build_optimizer


def precision_policy(setting: bool | str) -> str:
    """The Keras dtype policy for ``train.mixed_precision``: false, true (float16) or ``bfloat16``."""
    return {False: "float32", True: "mixed_float16", "bfloat16": "mixed_bfloat16"}[setting]


def configure_runtime(cfg: Config) -> None:
    """Seeds and op determinism (TensorFlow only), set before any model is built."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic and keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def training_precision(cfg: Config) -> contextlib.AbstractContextManager[None]:
    """``train.mixed_precision``'s policy while the net to train is built and compiled; the previous one after.

    The net keeps the policy through its fit; left set, it would make every later layer of the process
    compute in 16 bits (the evaluation's corruptions, a user's own models).
    """
    return global_policy(precision_policy(cfg.train.mixed_precision))


def resolve_jit(setting: str | bool) -> bool | str:
    """``auto`` under TensorFlow means XLA on a GPU only: on a 2-core CPU, XLA makes these convnets up to
    7x slower. Other backends keep Keras' own ``auto`` (JAX always compiles)."""
    if setting != "auto":
        return bool(setting)
    if keras.config.backend() == "tensorflow":
        return has_gpu()
    return "auto"


# "When it fits": 2 GiB of uint8 images is far below any GPU this runs on (MNIST: 47 MB).
DEVICE_DATA_LIMIT_BYTES = 2 * 2**30


def resolve_data_on_device(setting: str | bool, nbytes: int) -> bool:
    """``train.data_on_device``: ``auto`` keeps the images on the device when there is a GPU and they
    fit (:data:`DEVICE_DATA_LIMIT_BYTES`). Not on a CPU: there it trains no faster than the host
    pipeline, which overlaps the augmentation with the step
    (benchmarks/results/cpu-2core/2026-11-26-data-on-device.md)."""
    if setting == "auto":
        return has_gpu() and nbytes <= DEVICE_DATA_LIMIT_BYTES
    if setting and nbytes > DEVICE_DATA_LIMIT_BYTES:
        raise ConfigError(f"train.data_on_device=true: {nbytes / 2**30:.1f} GiB of images exceed the "
                         f"{DEVICE_DATA_LIMIT_BYTES / 2**30:.0f} GiB limit")
    return bool(setting)


def compile_model(cfg: Config, steps_per_epoch: int, jit_compile: bool | str | None = None,
                  model: keras.Model | None = None, stretchable: bool = False) -> keras.Model:
    """Compile ``model`` (default: the configured one, built here) for training: one-hot labels,
    label-smoothed cross-entropy, the configured optimiser and schedule, accuracy.

    ``jit_compile`` None follows ``cfg.train.jit_compile`` (see :func:`resolve_jit`). A caller
    passes ``model`` to train a wrapper around the configured net (a
    :class:`mnist99.training.augmented_net.AugmentedNet`); its ``net`` is then compiled too, with the same
    optimiser, so that the net alone evaluates (and is saved with the optimiser's state). ``stretchable``:
    the schedule's length is a variable, not a constant of the compiled step
    (:func:`mnist99.training.optimizers.build_optimizer`); for a model that is not saved.
    """
    model = build_model(cfg.model) if model is None else model
    net = net_of(model)
    optimizer = build_optimizer(cfg.train.optimizer, cfg.train.schedule, steps_per_epoch, cfg.train.epochs, stretchable)
    if net.dtype_policy.name == "mixed_float16":
        # Keras wraps the optimiser in loss scaling only when the compiled model's own policy is
        # mixed_float16, and a wrapper around the net is float32: without it, float16 gradients
        # underflow to zero while the decoupled weight decay goes on, and a member's validation accuracy
        # falls epoch after epoch (benchmarks/results/h200-jax/2026-12-04-budget-curve.md).
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    settings = dict(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
        metrics=["accuracy"],
        jit_compile=resolve_jit(cfg.train.jit_compile) if jit_compile is None else jit_compile,
    )
    model.compile(**settings)
    if net is not model:
        net.compile(**settings)
    return model


def standard_callbacks(cfg: Config, *extra: keras.callbacks.Callback) -> list[keras.callbacks.Callback]:
    """NaN guard, EMA swap, ``extra`` (e.g. timers), then early stopping on ``val_loss``, in that order.

    With an EMA the averaged weights are swapped in for each epoch's validation, so early stopping
    and every ``extra`` callback's epoch-end logs judge the weights that are kept. Early stopping
    watches only from ``start_from`` of the epochs on: while a one-cycle's rate is high, val_loss
    plateaus for longer than any patience in a long schedule, and the weights worth keeping come
    from the annealing after it.
    """
    tcfg = cfg.train
    cbs: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if tcfg.optimizer.ema is not None:
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    cbs += extra
    if tcfg.early_stopping.enabled:
        cbs.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=tcfg.early_stopping.patience, min_delta=tcfg.early_stopping.min_delta,
            restore_best_weights=True, start_from_epoch=round(tcfg.early_stopping.start_from * tcfg.epochs)))
    return cbs
