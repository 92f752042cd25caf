"""Keras callbacks of our own: only what Keras' built-in callbacks do not already do."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
from keras.optimizers.schedules import LearningRateSchedule

from mnist99.constants import EVAL_BATCH, TARGET_ACCURACY
from mnist99.files import write_atomic
from mnist99.training.budget import GRAIN, epochs_text, epochs_that_fit
from mnist99.training.optimizers import Compressible


class TimeToAccuracy(keras.callbacks.Callback):
    """Records the seconds from the start of training until validation accuracy first reaches ``target``.

    By default it reads the ``val_accuracy`` of each epoch's validation pass, so the time is only
    known to within an epoch. With ``validation_data`` and ``every_steps`` it also evaluates every
    ``every_steps`` training steps (on the weights' moving average when the optimiser keeps one, as
    the epoch-end validation does) and stops its clock while doing so: the benchmark gives the
    baseline and mnist99 the same finer check. ``epoch`` is then fractional (1.5: half-way
    through epoch 2); ``epoch_end_seconds``/``epoch_end`` keep the epoch-granular figure, on the
    same clock. Keras' ``evaluate`` resets the compiled metrics, so the epoch's logged *training*
    accuracy covers only the steps after the last check.
    """

    def __init__(self, target: float = TARGET_ACCURACY, validation_data=None, every_steps: int | None = None) -> None:
        """``validation_data``: a dataset or a tuple of arrays (x, one-hot y), in the form the fitted
        model takes (index batches for a :class:`mnist99.training.augmented_net.AugmentedNet` holding the
        images): with ``fit``'s own validation data the check reuses the program ``fit`` compiled."""
        super().__init__()
        if every_steps is not None and (validation_data is None or every_steps < 1):
            raise ValueError(f"every_steps={every_steps!r} needs validation_data and must be >= 1")
        self.target = target
        self.validation_data = validation_data
        self.every_steps = every_steps
        self.seconds: float | None = None
        self.epoch: float | None = None
        self.epoch_end_seconds: float | None = None
        self.epoch_end: int | None = None
        self.checks = 0
        self._start = self._paused = 0.0
        self._epoch = 0

    def on_train_begin(self, logs=None) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch

    def _training_seconds(self) -> float:
        return time.perf_counter() - self._start - self._paused

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.seconds is not None or not self.every_steps or (batch + 1) % self.every_steps:
            return
        seconds, began = self._training_seconds(), time.perf_counter()
        # A fresh SwapEMAWeights swaps the averaged weights in for this evaluation only.
        swap = [keras.callbacks.SwapEMAWeights()] if getattr(self.model.optimizer, "use_ema", False) else []
        x, y = self.validation_data if isinstance(self.validation_data, tuple) else (self.validation_data, None)
        accuracy = self.model.evaluate(x, y, batch_size=None if y is None else EVAL_BATCH, callbacks=swap, verbose=0,
                                       return_dict=True)["accuracy"]
        self.checks += 1
        self._paused += time.perf_counter() - began
        if accuracy >= self.target:
            self.seconds, self.epoch = seconds, self._epoch + (batch + 1) / self.params["steps"]

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.epoch_end is None and (logs or {}).get("val_accuracy", 0.0) >= self.target:
            self.epoch_end_seconds, self.epoch_end = self._training_seconds(), epoch + 1
            if self.seconds is None:
                self.seconds, self.epoch = self.epoch_end_seconds, self.epoch_end


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` whose backup is whole however the process dies.

    Keras overwrites ``latest.weights.h5`` in place and then writes the epoch beside it, so a
    SIGKILL during the write leaves a truncated HDF5 file that every rerun fails to open (CI hit
    it: "bad object header version number"). Here each backup's weights go to a new file, and the
    atomic rename of the metadata naming that file is what commits it; the previous file is
    removed only after. A rerun so finds the previous backup or this one, never half of one.
    It replaces Keras 3.15's private ``_save_model``/``_load_model`` (setup.cfg pins keras < 3.16;
    ``tests/test_callbacks.py`` kills a backup half-way and fails if these hooks move).
    """

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"backup-{self._current_epoch:05d}-{self._last_batch_seen:07d}.weights.h5"
        self.model.save_weights(str(folder / name), overwrite=True)
        meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        write_atomic(Path(self._training_metadata_path), json.dumps(meta))
        for stale in folder.glob("backup-*.weights.h5"):  # older backups, and any a kill cut short
            if stale.name != name:
                stale.unlink(missing_ok=True)

    def _load_model(self):
        meta_path = Path(self._training_metadata_path)
        if not meta_path.is_file():
            return  # nothing committed yet: start from epoch 0
        meta = json.loads(meta_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(Path(self.backup_dir) / meta["weights"]))
        self.model._initial_epoch = meta["epoch"]


class EpochTimer(keras.callbacks.Callback):
    """Times each epoch (``epoch_seconds()`` at its end): the base of the callbacks that report epochs."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._t0 = time.perf_counter()

    def epoch_seconds(self) -> float:
        return time.perf_counter() - self._t0


class EpochLine(EpochTimer):
    """One console line per epoch: ``  epoch 3/24  loss 0.4182  val_accuracy 0.9921  17.9 s`` (``train.verbose: 2``).

    Keras' own verbose=2 prints two lines an epoch with every metric and the learning rate; this keeps
    what a person follows while a run trains.
    """

    def __init__(self, prefix: str = "  ") -> None:
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.params.get('epochs', '?')}"]
        parts += [f"{key} {logs[key]:.4f}" for key in ("loss", "val_accuracy") if key in logs]
        parts.append(f"{self.epoch_seconds():.1f} s")
        print(self.prefix + "  ".join(parts), flush=True)


class BudgetDeadline(keras.callbacks.Callback):
    """Re-plans a budgeted fit's remaining epochs at each epoch end from the epochs' measured length, so the
    fit ends within ``allowance`` seconds of its start (see :func:`mnist99.training.budget.epochs_that_fit`).

    The plan fixes a member's epochs (and its cache key) from the first steps' speed: a schedule a fifth
    longer than the epochs that fit (:data:`mnist99.training.budget.HEADROOM`). The learning-rate
    schedule is compressed onto the epochs that fit, to a tenth of an epoch
    (:class:`mnist99.training.optimizers.Compressible`), so a one-cycle still anneals to its end value
    by the last step, and the fit stops there, partway through an epoch if need be (Keras still
    validates it); when the machine speeds up, the schedule stretches back, never past the planned
    epochs. An epoch slower than those before it is cut at the step where the allowance runs out. Its
    clock starts when it is made, so make it just before the member's model is built: the allowance
    counts the build, as the plan does. An epoch's length is the mean of the fit's epochs after its
    first, steady against a machine whose epochs alternate between fast and slow. The first epoch alone
    only decides whether one more whole epoch fits, judged without what its first training step and its
    first validation batch took beyond the batches after them: they trace and compile the train and
    test steps (on a GPU under XLA, seconds each against epochs of under a second; the record in
    docs/BUDGET.md), time spent once, not an epoch's length. A constant rate is not compressed: the fit
    just stops where the time runs out. ``stopped_after`` is the epochs it let run (7.6: six tenths into epoch 8;
    None when it did not stop the fit); ``compressed``, whether the schedule was shortened;
    :meth:`unspent_by_now` what it leaves of its allowance (negative when it overran), plus, given them,
    the seconds planned for scoring and saving the member: what an ensemble passes on to its next member.
    A resumed fit gets the whole allowance for its remaining epochs.
    ``clock`` is injected so tests drive it.
    """

    def __init__(self, allowance: float, clock=time.monotonic) -> None:
        super().__init__()
        self.allowance, self.clock = allowance, clock
        self.stopped_after: float | None = None
        self.compressed = False
        self._began, self._epoch_began = clock(), 0.0
        self._lengths: list[float] = []  # this fit's epochs, in seconds
        self._end: float = 0  # the epochs the fit now ends after (7.6: six tenths into epoch 8)
        self._last_steps: int | None = None  # the steps of a last epoch that runs partway; None: whole
        self._epoch = 0
        self._first_steps, self._first_validation = FirstBatches(), FirstBatches()  # the fit's first epoch's
        self._schedule: Compressible | None = None
        self._original = self._optimizer = None

    def unspent_by_now(self, after_fit: float = 0.0) -> float:
        """Seconds left now of the allowance plus ``after_fit``, the seconds planned for what follows the fit
        (negative when the member overran them)."""
        return self.allowance + after_fit - (self.clock() - self._began)

    def on_train_begin(self, logs=None) -> None:
        self._end = self.params.get("epochs", 0)
        # Mixed precision wraps the optimiser (LossScaleOptimizer) that holds the schedule. Keras gives no
        # public getter for a schedule (``learning_rate`` is its current value).
        self._optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        original = getattr(self._optimizer, "_learning_rate", None)
        if isinstance(original, Compressible):  # built stretchable: its warp is already the optimiser's
            self._original = self._schedule = original
        elif isinstance(original, LearningRateSchedule):
            steps = self.params.get("steps")
            self._original = original
            self._schedule = Compressible(original, base_steps=self._end * (steps or 0))
            self._optimizer.learning_rate = self._schedule
            # Under JAX the compiled step reads the warp only when the optimiser holds it (from the next epoch on).
            self._schedule.track_in(self._optimizer)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_began, self._epoch = self.clock(), epoch
        if not self._lengths:
            self._first_steps.began = self._epoch_began

    def on_test_begin(self, logs=None) -> None:
        if not self._lengths:  # the first epoch's validation (fit's validation calls the fit's callbacks)
            self._first_validation.began = self.clock()

    def on_test_batch_end(self, batch: int, logs=None) -> None:
        if not self._lengths:
            self._first_validation.ended(self.clock())

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        now = self.clock()
        if not self._lengths:
            self._first_steps.ended(now)
        if self._last_steps is not None and self._epoch + 1 == math.ceil(self._end) and batch + 1 >= self._last_steps:
            self.model.stop_training = True  # Keras ends the epoch here and still validates it
        elif not self.model.stop_training and now - self._began >= self.allowance:
            # The time ran out before the planned step: this epoch runs slower than the ones the plan came from.
            steps = self.params.get("steps")
            self.model.stop_training, self.stopped_after = True, self._epoch + ((batch + 1) / steps if steps else 1)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now, done, planned = self.clock(), epoch + 1, self.params.get("epochs", epoch + 1)
        self._lengths.append(now - self._epoch_began)
        if self.stopped_after is not None:  # cut mid-epoch where the time ran out
            return
        if done >= math.ceil(self._end):
            if self._end < planned:
                self.model.stop_training, self.stopped_after = True, self._end
            return
        later = self._lengths[1:] or [self._first_epoch_steady()]
        length = sum(later) / len(later)
        fits = epochs_that_fit(now - self._began, length, self.allowance, done, planned)
        if not self.params.get("steps"):  # an epoch of unknown length ends only whole
            fits = math.floor(fits)
        if fits < done + (1 if len(self._lengths) == 1 else GRAIN):
            self.model.stop_training, self.stopped_after = True, done
        elif round(fits, 1) != round(self._end, 1) and len(self._lengths) > 1:
            self._replan(done, fits, planned, length)

    def _first_epoch_steady(self) -> float:
        """The first epoch's length less what its first training step and its first validation batch
        took beyond the batches after them (tracing and compiling each step)."""
        return self._lengths[0] - self._first_steps.excess() - self._first_validation.excess()

    def _replan(self, done: int, fits: float, planned: int, length: float) -> None:
        steps = self.params.get("steps")
        line = f"  budget: {epochs_text(fits)} epochs fit, not {epochs_text(self._end)} (epochs take {length:.1f} s)"
        to_run = max(round((fits - done) * steps), 1) if steps else 0
        fits = done + to_run / steps if steps else fits  # on a step: the epochs the fit runs, exactly
        if self._schedule is not None and steps:
            step = int(keras.ops.convert_to_numpy(self._optimizer.iterations))
            self._schedule.compress(step, step + to_run)
            line += f"; the learning-rate schedule now ends after {epochs_text(fits)} epochs"
        if math.ceil(fits) != math.ceil(self._end):  # a tenth more or less within the same last epoch goes unsaid
            print(line, flush=True)
        self._last_steps = (to_run % steps or None) if steps else None
        self._end, self.compressed = fits, self._schedule is not None and fits < planned

    def on_train_end(self, logs=None) -> None:
        if self._original is not None:  # the model is saved with the schedule it was built with
            self._optimizer.learning_rate = self._original


class FirstBatches:
    """The batches of one phase of an epoch (training steps, or a validation pass): when it began, when
    its first batch ended and its latest, and how many ended."""

    def __init__(self) -> None:
        self.began = self.first_end = self.last_end = 0.0
        self.count = 0

    def ended(self, now: float) -> None:
        self.first_end = self.first_end if self.count else now
        self.last_end, self.count = now, self.count + 1

    def excess(self) -> float:
        """Seconds the first batch took beyond the mean batch after it (0 with fewer than two batches)."""
        if self.count < 2:
            return 0.0
        steady = (self.last_end - self.first_end) / (self.count - 1)
        return max(self.first_end - self.began - steady, 0.0)


class StepClock(keras.callbacks.Callback):
    """Times a fit's training steps: the mean of ``steps`` steps after the first ``skip`` (tracing, filling
    the shuffle buffer), then calls ``on_timed(self)`` once; an epoch too short for that times the steps it had.

    ``clock`` is injected (seconds, as ``time.time``) so tests drive it. After timing: ``step_seconds``,
    ``began`` (the clock when ``fit`` started), ``warm_at`` (when the skipped steps ended), ``skipped``
    and ``first_epoch`` (the 0-based epoch ``fit`` started at: past 0 on a resume).
    Defaults: 3 skipped steps trace the step and fill the shuffle buffer; 20 timed steps take ~1 s
    for the default net on 2 cores, a steady mean.

    The first steps can run slower than the epochs after them (docs/BUDGET.md links the measurement),
    so ``on_epoch(self, epoch, seconds)`` is called at each epoch end from
    the fit's second on, with the seconds since the previous epoch ended (its steps, its validation and
    every callback's epoch-end work).
    """

    def __init__(self, skip: int = 3, steps: int = 20, clock=time.time, on_timed=None, on_epoch=None) -> None:
        super().__init__()
        self.skip, self.steps, self.clock, self.on_timed, self.on_epoch = skip, steps, clock, on_timed, on_epoch
        self.step_seconds: float | None = None
        self._epoch_end_at: float | None = None
        self.began = self.warm_at = self._last_at = 0.0
        self.skipped = self.first_epoch = self._seen = 0

    def on_train_begin(self, logs=None) -> None:
        self.began = self.warm_at = self.clock()
        per_epoch = self.params.get("steps") or self.skip + self.steps
        self.skipped = min(self.skip, max(per_epoch - 2, 0))  # leave at least two steps to time

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self._seen == 0:
            self.first_epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.step_seconds is not None:
            return
        self._seen += 1
        self._last_at = self.clock()
        if self._seen == self.skipped:
            self.warm_at = self._last_at
        elif self._seen == self.skipped + self.steps:
            self._timed(self.steps)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.step_seconds is None and self._seen > self.skipped:
            self._timed(self._seen - self.skipped)
        now = self.clock()
        if self._epoch_end_at is not None and self.on_epoch is not None:
            self.on_epoch(self, epoch, now - self._epoch_end_at)
        self._epoch_end_at = now

    def _timed(self, steps: int) -> None:
        self.step_seconds = (self._last_at - self.warm_at) / steps
        if self.on_timed is not None:
            self.on_timed(self)
