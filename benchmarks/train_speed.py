"""Time to 99% validation accuracy: the usual Keras example convnet against mnist99's default, one process.

    MNIST99_DATA=../shared/data/mnist python benchmarks/train_speed.py [-c configs/default.yaml] [--set k=v]

Prints one JSON line per model (seconds to first reach 99.0% validation accuracy, final test
accuracy, training images/s, peak process RSS) and a ratio line. Not a test: timings depend on the
machine, so they are reported (README, benchmarks/results/), never asserted. Costs ~12 min on 2 CPU cores.

Both models are checked the same two ways: at each epoch's end (Keras' validation pass:
``seconds_to_val_99_epoch_end``), and every ``--check-every`` training steps of 128 images
(``seconds_to_val_99``, the clock stopped while checking; 0 turns it off). The default 100 steps
(12,800 images, about a quarter of an epoch for either model) tells when 99% is first reached
within an epoch instead of rounding up to the epoch's end.
"""
from __future__ import annotations

import argparse
import json
import platform
import threading
import time

import keras
import numpy as np
import psutil

from mnist99.config import load_config
from mnist99.constants import NUM_CLASSES, TARGET_ACCURACY
from mnist99.data import make_splits
from mnist99.data.model_input import to_model_input
from mnist99.models import build_model
from mnist99.training.callbacks import TimeToAccuracy


class PeakRss:
    """Samples this process's resident memory every 0.1 s while the block runs."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def time_to_99(val_x, val_y, every_steps: int) -> TimeToAccuracy:
    return TimeToAccuracy(TARGET_ACCURACY, validation_data=(val_x, val_y) if every_steps else None,
                          every_steps=every_steps or None)


def timing(to99: TimeToAccuracy) -> dict:
    return {"seconds_to_val_99": to99.seconds, "epoch_to_val_99": to99.epoch,
            "seconds_to_val_99_epoch_end": to99.epoch_end_seconds, "epoch_end_to_val_99": to99.epoch_end,
            "val_checks": to99.checks}


def baseline_model() -> keras.Model:
    """keras.io's MNIST convnet as most users write it, compiled: Adam, categorical cross-entropy, dropout 0.5."""
    model = build_model(load_config([], ["model.name=convnet", "model.dropout=0.5"]).model)  # keras.io's dropout
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def baseline(x_train, y_train, x_test, y_test, epochs: int, every_steps: int, model: keras.Model | None = None) -> dict:
    """Train :func:`baseline_model` (or ``model``, which the caller keeps) as keras.io does: batch 128, 10%
    validation split.

    The split is made as ``validation_split=0.1`` makes it (the last 10%, unshuffled), explicitly so
    that the finer check sees the same validation images as Keras' epoch-end pass.
    """
    model = baseline_model() if model is None else model
    x = to_model_input(x_train)
    y = keras.utils.to_categorical(y_train, NUM_CLASSES)
    cut = int(len(x) * 0.9)
    to99 = time_to_99(x[cut:], y[cut:], every_steps)
    start = time.perf_counter()
    model.fit(x[:cut], y[:cut], batch_size=128, epochs=epochs, validation_data=(x[cut:], y[cut:]),
              callbacks=[to99], verbose=2)
    seconds = time.perf_counter() - start
    _, test_acc = model.evaluate(to_model_input(x_test), keras.utils.to_categorical(y_test, NUM_CLASSES), verbose=0)
    return {**timing(to99), "test_accuracy": test_acc, "train_seconds": seconds, "epochs": epochs,
            "train_images_per_second": cut * epochs / seconds}


def config_arguments(description: str) -> argparse.ArgumentParser:
    """Every benchmark's config options, as the CLI takes them: ``-c FILE`` (repeatable), ``--set key=value``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    return parser


def speed_arguments(description: str, check_every: int) -> argparse.ArgumentParser:
    """The options this script and ``benchmarks/gpu.py`` share: configs, overrides, baseline, check interval."""
    parser = config_arguments(description)
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--check-every", type=int, default=check_every, metavar="STEPS",
                        help="also check validation accuracy every STEPS training steps (0: only at epoch ends)")
    return parser


def main() -> None:
    args = speed_arguments(__doc__.splitlines()[0], check_every=100).parse_args()
    from mnist99.training.fit import train_model  # TensorFlow: imported here so benchmarks/gpu.py can reuse
    # this module's helpers on a backend without it

    cfg = load_config(args.config, args.overrides + ["train.verbose=2"])
    splits = make_splits(cfg.data, cfg.seed)
    machine = f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores"
    results = {}
    if not args.skip_baseline:
        keras.utils.set_random_seed(cfg.seed)
        x_all = np.concatenate([splits.x_train, splits.x_val])
        y_all = np.concatenate([splits.y_train, splits.y_val])
        with PeakRss() as rss:
            results["baseline"] = baseline(x_all, y_all, splits.x_test, splits.y_test, args.baseline_epochs,
                                           args.check_every)
        results["baseline"]["peak_rss_mb"] = rss.peak / 2**20
    with PeakRss() as rss:
        trained = train_model(cfg, splits, check_every=args.check_every or None)
    out = trained.metrics
    results["mnist99"] = {**timing(trained.time_to_accuracy),
                          **{k: out[k] for k in ("test_accuracy", "train_seconds", "epochs_run", "train_images_per_second")}}
    results["mnist99"].update(peak_rss_mb=rss.peak / 2**20, data_on_device=trained.data_on_device)
    for name, res in results.items():
        print(json.dumps({"model": name, "machine": machine, **res}))
    if "baseline" in results:
        ratios = {}
        for key in ("seconds_to_val_99", "seconds_to_val_99_epoch_end"):
            b, m = results["baseline"][key], results["mnist99"][key]
            ratios[f"ratio_{key}"] = (b / m) if b and m else None
        print(json.dumps({**ratios, "test_accuracy_gain":
                          results["mnist99"]["test_accuracy"] - results["baseline"]["test_accuracy"]}))


if __name__ == "__main__":
    main()
