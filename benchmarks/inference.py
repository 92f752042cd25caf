"""Inference speed of an exported model: images/s at batch 256 and one-image latency (p50/p95).

    MNIST99_DATA=../shared/data/mnist python benchmarks/inference.py [--model exports/mnist99-ensemble.keras]

Feeds real MNIST test digits (uint8, as users send them). Two call paths are measured, each after
a warm-up: the eager ``model(x, training=False)`` and the same call inside a ``tf.function`` with a
fixed (None, 28, 28) uint8 signature (traced once, then no Python per layer). The faster path is
reported for each number, and both are in ``paths``. Prints one JSON line, with the device it ran
on. Not a test: timings depend on the machine (and on what else runs on it), so they are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from mnist99.config import load_config
from mnist99.data.sources import load_mnist


def call_paths(model) -> dict:
    """Name -> function from a uint8 batch to numpy probabilities (the numpy copy waits for the result)."""
    import tensorflow as tf  # here, so that benchmarks/gpu.py can reuse the timers on a backend without it

    compiled = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8)])
    return {"eager": lambda x: np.asarray(model(x, training=False)),
            "tf.function": lambda x: np.asarray(compiled(tf.constant(x)))}


def throughput(predict, images: np.ndarray, batch: int, repeats: int, warmup: int) -> dict:
    """Images/s over ``repeats`` timed batches (successive slices of the test set) after ``warmup`` batches."""
    starts = [(i * batch) % (len(images) - batch + 1) for i in range(warmup + repeats)]
    for start in starts[:warmup]:
        predict(images[start: start + batch])
    seconds = []
    for start in starts[warmup:]:
        t0 = time.perf_counter()
        predict(images[start: start + batch])
        seconds.append(time.perf_counter() - t0)
    return {"images_per_s": batch * repeats / sum(seconds), "best_images_per_s": batch / min(seconds)}


def latency(predict, images: np.ndarray, samples: int, warmup: int) -> dict:
    """p50/p95 milliseconds for one image per call, over ``samples`` different digits."""
    for i in range(warmup):
        predict(images[i: i + 1])
    times = []
    for i in range(samples):
        t0 = time.perf_counter()
        predict(images[i: i + 1])
        times.append(1000 * (time.perf_counter() - t0))
    return {"latency_ms_p50": float(np.percentile(times, 50)), "latency_ms_p95": float(np.percentile(times, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="exports/mnist99-ensemble.keras",
                        help="a .keras file, runs:/... or models:/NAME/<version|latest>")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per path")
    parser.add_argument("--samples", type=int, default=200, help="timed single-image calls per path")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    import tensorflow as tf

    from mnist99 import tracking
    from mnist99.delivery.loading import load_ensemble
    from mnist99.training.devices import device_name

    cfg = load_config()
    if ":/" in args.model:
        tracking.setup(cfg)
    model = load_ensemble(args.model)
    images = load_mnist(cfg.data.path, cfg.data.cache_dir)[0]["x_test"]
    paths = {name: {**throughput(fn, images, args.batch, args.repeats, args.warmup),
                    **latency(fn, images, args.samples, args.warmup)}
             for name, fn in call_paths(model).items()}
    fastest = max(paths, key=lambda name: paths[name]["images_per_s"])
    quickest = min(paths, key=lambda name: paths[name]["latency_ms_p50"])
    print(json.dumps({
        "model": args.model, "params": model.count_params(), "batch": args.batch,
        "images_per_s": round(paths[fastest]["images_per_s"], 1), "throughput_path": fastest,
        "latency_ms_p50": round(paths[quickest]["latency_ms_p50"], 3),
        "latency_ms_p95": round(paths[quickest]["latency_ms_p95"], 3), "latency_path": quickest,
        "paths": {name: {k: round(v, 3) for k, v in row.items()} for name, row in paths.items()},
        "device": device_name(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }))


if __name__ == "__main__":
    main()
