"""Fitting one model: seeds, precision, device strategy, data placement, compile, fit with early stopping, evaluate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist99.config import Config
from mnist99.constants import EVAL_BATCH, TARGET_ACCURACY
from mnist99.data import Splits
from mnist99.data.augment import build_augmenter
from mnist99.data.batches import make_dataset, make_index_dataset
from mnist99.models import build_model
from mnist99.models.twin import serving_twin
from mnist99.training.augmented_net import build_augmented_net
from mnist99.training.batchnorm import refresh_statistics
from mnist99.training.callbacks import AtomicBackupAndRestore, EpochLine, TimeToAccuracy
from mnist99.training.devices import gpu_names
from mnist99.training.recipe import (
    compile_model,
    configure_runtime,
    resolve_data_on_device,
    standard_callbacks,
    training_precision,
)


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, float | None] = field(default_factory=dict)
    time_to_accuracy: TimeToAccuracy | None = None  # the 99% clock, for benchmarks that report all of it
    data_on_device: bool = False  # what train.data_on_device resolved to


def distribution_strategy(setting: str) -> tf.distribute.Strategy:
    """MirroredStrategy when asked, or on ``auto`` when several GPUs are visible; else the default."""
    if setting == "mirrored" or (setting == "auto" and len(gpu_names()) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass
class Setup:
    """What ``fit`` runs: the compiled ``fitted`` model (the net itself, or an AugmentedNet around it) and its data."""

    model: keras.Model  # the net: evaluated, logged, exported
    fitted: keras.Model  # what fit trains: ``model``, or an AugmentedNet holding the images on the device
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset  # in the wrapped model's input form (index batches with the images on the device)

    @property
    def data_on_device(self) -> bool:
        """Whether the images sit on the device: then, and only then, an AugmentedNet wraps the net."""
        return self.fitted is not self.model


def fit_datasets(cfg: Config, splits: Splits, on_device: bool) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """What ``fit`` takes: image batches augmented in ``tf.data`` on the host, or, with the data on
    the device, index batches into the train images followed by the validation images."""
    tcfg = cfg.train
    if on_device:
        return (make_index_dataset(0, splits.y_train, tcfg.batch_size, training=True, seed=cfg.seed),
                make_index_dataset(len(splits.y_train), splits.y_val, EVAL_BATCH))
    return (make_dataset(splits.x_train, splits.y_train, tcfg.batch_size, training=True,
                         augmenter=build_augmenter(cfg.augment, cfg.seed), seed=cfg.seed),
            make_dataset(splits.x_val, splits.y_val, EVAL_BATCH))


def set_up(cfg: Config, splits: Splits) -> Setup:
    """Runtime (seeds; the precision policy while the net is built), data placement, datasets, the net and
    the compiled model that fits: everything before ``fit``, shared by :func:`train_model` and ``benchmarks/input_bound.py``."""
    configure_runtime(cfg)
    tcfg = cfg.train
    on_device = resolve_data_on_device(tcfg.data_on_device, splits.x_train.nbytes + splits.x_val.nbytes)
    train_ds, val_ds = fit_datasets(cfg, splits, on_device)
    with distribution_strategy(tcfg.strategy).scope(), training_precision(cfg):
        model = build_model(cfg.model)
        wrapped = build_augmented_net(cfg, model, np.concatenate([splits.x_train, splits.x_val])) if on_device else model
        compile_model(cfg, int(train_ds.cardinality()), model=wrapped)
        # Built here, eagerly: left to fit, Keras creates the optimizer's slots inside the traced
        # train step, where each variable costs a lifted initialiser graph (~2.5 s of a smoke fit).
        wrapped.optimizer.build(wrapped.trainable_variables)
    return Setup(model, wrapped, train_ds, val_ds)


def kept_epoch(callbacks: list[keras.callbacks.Callback], epochs: list[int], val_losses: list[float]) -> int:
    """The epoch (from 1) whose weights the fit ends with: early stopping's best among the epochs it
    watched, or the last epoch where it watched none (a fit cut before ``start_from``); with early
    stopping off, the epoch of the lowest val_loss (the weights kept are the last, but the curve's best
    is what a study compares)."""
    stopping = [cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping)]
    if not stopping:
        return epochs[min(range(len(epochs)), key=val_losses.__getitem__)] + 1
    return (stopping[0].best_epoch if stopping[0].best_weights is not None else epochs[-1]) + 1


def train_model(cfg: Config, splits: Splits, callbacks: list[keras.callbacks.Callback] | None = None,
                backup_dir: Path | None = None, check_every: int | None = None) -> TrainResult:
    """Train one model on ``splits.train``, early-stopping on ``val_loss``; evaluate on val and test.

    ``check_every``: also check for 99% validation accuracy every this many steps, not only at
    epoch ends (the benchmark's finer clock; see :class:`TimeToAccuracy`).

    Returns the model (best weights restored), the Keras history and the summary metrics
    (``test_accuracy``, ``val_accuracy``, ``best_epoch``, ``train_seconds``, ``seconds_to_val_99`` ...).
    """
    setup = set_up(cfg, splits)
    tcfg, model, wrapped = cfg.train, setup.model, setup.fitted
    to99 = TimeToAccuracy(TARGET_ACCURACY, validation_data=setup.val_ds if check_every else None, every_steps=check_every)
    cbs = standard_callbacks(cfg, to99)
    cbs += callbacks or []
    if tcfg.verbose == 2:  # one line an epoch; 1 keeps Keras' progress bar
        cbs.append(EpochLine())
    if backup_dir is not None:  # last, so an epoch is logged before it counts as done
        cbs.append(AtomicBackupAndRestore(str(backup_dir), delete_checkpoint=True))
    start = time.perf_counter()
    history = wrapped.fit(setup.train_ds, validation_data=setup.val_ds, epochs=tcfg.epochs, callbacks=cbs,
                          verbose=int(tcfg.verbose == 1), shuffle=False)  # tf.data shuffles
    train_seconds = time.perf_counter() - start
    if tcfg.batchnorm_refresh:  # the kept weights' own statistics, before anything scores them
        refresh_statistics(model, splits.x_train, tcfg.batchnorm_refresh, tcfg.batch_size, cfg.seed)
    kept = serving_twin(model)  # scored, saved and exported as float32 stock Keras layers, whatever trained it
    if kept is not model:  # with the loss, metrics and optimiser it trained with (its state saves with it)
        kept.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    model = kept
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    val_loss, val_acc = model.evaluate(make_dataset(splits.x_val, splits.y_val, EVAL_BATCH), verbose=0)
    test_loss, test_acc = model.evaluate(make_dataset(splits.x_test, splits.y_test, EVAL_BATCH), verbose=0)
    epochs = history.epoch  # the epoch indices this call ran: after a resume they start past 0
    best_epoch = kept_epoch(cbs, epochs, hist["val_loss"])
    metrics = {
        "test_accuracy": test_acc, "test_loss": test_loss, "val_accuracy": val_acc, "val_loss": val_loss,
        "best_epoch": best_epoch, "epochs_run": epochs[-1] + 1, "first_epoch": epochs[0] + 1, "train_seconds": train_seconds,
        "seconds_to_val_99": to99.seconds, "epoch_to_val_99": to99.epoch,
        "train_images_per_second": len(splits.y_train) * len(epochs) / train_seconds,
    }
    return TrainResult(model, hist, metrics, to99, setup.data_on_device)
