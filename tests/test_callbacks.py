"""Our callbacks on a tiny separable problem (seconds): TimeToAccuracy's epoch-end and within-epoch
checks, and a backup that a kill in the middle of its write does not spoil."""
from pathlib import Path

import keras
import numpy as np
import pytest

from mnist99.training.callbacks import AtomicBackupAndRestore, TimeToAccuracy


def separable(n=512, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)).astype("float32") + 3.0 * y[:, None]
    return x, keras.utils.to_categorical(y, 2)


def fit(callbacks, ema=False, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=ema, ema_momentum=0.9),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = separable()
    cbs = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []
    model.fit(x, y, batch_size=32, epochs=epochs, validation_data=separable(256, 1), callbacks=cbs + callbacks,
              verbose=0, shuffle=False)
    return model


def test_epoch_end_only_reports_whole_epochs():
    to = TimeToAccuracy(0.9)
    fit([to])
    assert to.epoch == to.epoch_end and isinstance(to.epoch, int) and to.checks == 0
    assert 0 < to.seconds == to.epoch_end_seconds


def test_within_epoch_checks_find_the_target_before_the_epoch_ends():
    to = TimeToAccuracy(0.9, validation_data=separable(256, 1), every_steps=2)
    fit([to])
    steps = to.epoch * 16  # 512 / 32 = 16 steps an epoch; checked every 2nd step, until reached
    assert steps == round(steps) and steps % 2 == 0 and to.checks == steps // 2
    assert to.epoch < to.epoch_end and 0 < to.seconds < to.epoch_end_seconds


def test_unreachable_target_is_none():
    to = TimeToAccuracy(1.01, validation_data=separable(256, 1), every_steps=4)
    fit([to], epochs=1)
    assert to.seconds is None and to.epoch is None and to.epoch_end is None and to.checks == 4


@pytest.mark.parametrize("ema", [False, True])
def test_checks_leave_training_unchanged(ema):
    """The check swaps the moving average in and back out: the trained weights are the same without it."""
    plain = fit([], ema=ema)
    checked = fit([TimeToAccuracy(1.01, validation_data=separable(256, 1), every_steps=3)], ema=ema)
    for a, b in zip(plain.get_weights(), checked.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_every_steps_without_data_is_refused():
    with pytest.raises(ValueError, match="every_steps=5 needs validation_data"):
        TimeToAccuracy(0.99, every_steps=5)


def small_net():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def test_a_kill_while_the_backup_is_written_resumes_from_the_previous_epoch(tmp_path):
    """The CI failure: SIGKILL half-way through a weights file; the rerun must not trip on it."""
    x, y = separable()
    model, backup = small_net(), tmp_path / "backup"
    real_save, saved = model.save_weights, []

    def killed_on_third(filepath, overwrite=True):
        real_save(filepath, overwrite=overwrite)
        saved.append([w.copy() for w in model.get_weights()])
        if len(saved) == 3:  # the process dies with the third epoch's file half on disk
            data = Path(filepath).read_bytes()
            Path(filepath).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt

    model.save_weights = killed_on_third
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[AtomicBackupAndRestore(str(backup))])

    rerun, first = small_net(), []
    probe = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: first.append(rerun.get_weights()))
    history = rerun.fit(x, y, epochs=5, verbose=0, callbacks=[AtomicBackupAndRestore(str(backup)), probe])
    assert history.epoch == [2, 3, 4]  # epochs 1-2 were backed up whole; the third is run again
    for restored, kept in zip(first[0], saved[1]):
        np.testing.assert_array_equal(restored, kept)
    assert not backup.exists()  # a finished fit removes its backup


@pytest.mark.parametrize("start_from, stops_after", [(0.0, 4), (0.5, 14)])
def test_early_stopping_watches_from_its_share_of_the_epochs(start_from, stops_after):
    """A val_loss that never improves after epoch 1 (the one-cycle's plateau) stops training ``patience``
    epochs after the first epoch watched: after epoch 4 of 20 with start_from 0, after epoch 14 with 0.5
    (epochs 11-14 watched); the kept weights are then from a watched epoch."""
    from mnist99.config import load_config
    from mnist99.training.recipe import standard_callbacks

    cfg = load_config([], ["train.epochs=20", "train.optimizer.ema=null", "train.early_stopping.patience=3",
                           f"train.early_stopping.start_from={start_from}"])
    [stopping] = [cb for cb in standard_callbacks(cfg) if isinstance(cb, keras.callbacks.EarlyStopping)]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.stop_training = False  # what fit sets before the first epoch
    stopping.set_model(model)
    stopping.on_train_begin()
    epoch = 0
    while not model.stop_training and epoch < 20:
        stopping.on_epoch_end(epoch, {"val_loss": 0.5 if epoch == 0 else 0.6})
        epoch += 1
    assert epoch == stops_after
    assert stopping.best_epoch == (0 if start_from == 0 else 10)


def test_the_kept_epoch_is_early_stoppings_best_or_the_last_where_it_watched_none():
    """best_epoch names the weights the fit ends with: early stopping's best of the epochs it watched;
    the last epoch when a fit ended before start_from (nothing restored); with no early stopping, the
    curve's lowest val_loss."""
    from mnist99.training.fit import kept_epoch

    watched = keras.callbacks.EarlyStopping(restore_best_weights=True)
    watched.best_epoch, watched.best_weights = 5, [np.zeros(1)]
    unwatched = keras.callbacks.EarlyStopping(restore_best_weights=True, start_from_epoch=10)
    unwatched.best_epoch, unwatched.best_weights = 0, None
    epochs, losses = [3, 4, 5, 6, 7], [0.5, 0.4, 0.45, 0.6, 0.7]
    assert kept_epoch([watched], epochs, losses) == 6
    assert kept_epoch([unwatched], epochs, losses) == 8
    assert kept_epoch([], epochs, losses) == 5
