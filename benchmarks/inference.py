"""Inference of an exported model in every runtime: speed, parity with Keras, and MLflow serving.

    MNIST99_DATA=../shared/data/mnist python benchmarks/inference.py --model exports/mnist99-ensemble.keras
    (or --model models:/mnist99-ensemble/latest; -c FILE and --set key=value as the stages take them)

The Keras model at ``--model`` is written in the other export formats by the project's own export
(``staged_export`` into a temporary folder, so each file passed its checks), then each runtime is
measured on the test digits of the config (uint8, as users send them; all 10,000 by default):

- speed: images/s over ``--repeats`` batches of ``--batch`` (256) and p50/p95 milliseconds over
  ``--samples`` one-image calls, each after ``--warmup`` calls. Keras runs two call paths, the eager
  ``model(x, training=False)`` and the same call in a ``tf.function`` with a fixed (None, 28, 28) uint8
  signature (traced once), and reports the faster one for each number (both are in ``paths``);
  SavedModel is ``tf.saved_model.load(...).serve``; ONNX Runtime and LiteRT run the session and the
  interpreter of ``mnist99.load_ensemble`` on the ``.onnx`` and ``.tflite`` files.
- parity: every runtime's probabilities on all the test digits against the Keras model's: max
  absolute difference, argmax agreement, test accuracy; and the LiteRT file's non-builtin ops.
- serving: ``mlflow models serve`` of the model on 127.0.0.1 (an MLflow URI as given; a file is first
  saved as an MLflow model in the temporary folder), one local client sending 1-image and 256-image
  ``POST /invocations``, each up to ``--serve-requests`` requests or ``--serve-seconds``: requests/s,
  p50 ms. ``--serve-requests 0`` leaves serving out.

Prints one JSON line per runtime (``"result": "runtime"``), one per request size (``"serving"``) and
a ``"summary"`` line with the machine. Not a test: timings depend on the machine (and on what else
runs on it), so they are reported. ``--set data.test_limit=N`` and small counts make it a smoke run.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import config_arguments  # noqa: E402

from mnist99.config import Config, load_config  # noqa: E402

RUNTIMES = ("keras", "saved_model", "onnx", "litert")  # export format names; "keras" is the model as loaded
PACKAGES = ("tensorflow", "keras", "onnxruntime", "ai-edge-litert", "mlflow")


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


def runtime_paths(name: str, model, files: dict[str, Path]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Call path name -> batch function for runtime ``name`` (several for Keras, one for the others)."""
    if name == "keras":
        return call_paths(model)
    if name == "saved_model":
        import tensorflow as tf

        saved = tf.saved_model.load(str(files[name]))
        return {"serve": lambda x: saved.serve(tf.constant(x)).numpy()}
    from mnist99.delivery.loading import load_ensemble

    exported = load_ensemble(files[name])
    return {exported.runtime: exported.run}


def measure(paths: dict, images: np.ndarray, args) -> dict:
    """Speed of each call path, and the fastest path's images/s and quickest p50/p95 as the runtime's figures."""
    rows = {name: {**throughput(fn, images, args.batch, args.repeats, args.warmup),
                   **latency(fn, images, args.samples, args.warmup)} for name, fn in paths.items()}
    fastest = max(rows, key=lambda name: rows[name]["images_per_s"])
    quickest = min(rows, key=lambda name: rows[name]["latency_ms_p50"])
    return {"images_per_s": rows[fastest]["images_per_s"], "throughput_path": fastest,
            "latency_ms_p50": rows[quickest]["latency_ms_p50"], "latency_ms_p95": rows[quickest]["latency_ms_p95"],
            "latency_path": quickest, "paths": rows}


def parity(probs: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    """Max |difference| to the Keras probabilities, share of identical argmax, and test accuracy."""
    return {"max_abs_diff": float(np.abs(probs - expected).max()),
            "argmax_agreement": float(np.mean(probs.argmax(1) == expected.argmax(1))),
            "test_accuracy": float(np.mean(probs.argmax(1) == labels))}


def post_load(url: str, body: bytes, requests: int, seconds: float) -> tuple[dict, list]:
    """One client POSTing ``body`` to ``url`` after one warm-up request, until ``requests`` are answered or
    ``seconds`` have passed; returns requests/s and p50/p95 ms, and the last answer's predictions."""
    def post() -> list:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["predictions"]

    answer = post()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < requests and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        answer = post()
        times.append(1000 * (time.perf_counter() - t0))
    return {"requests": len(times), "requests_per_s": len(times) / (time.perf_counter() - start),
            "latency_ms_p50": float(np.percentile(times, 50)), "latency_ms_p95": float(np.percentile(times, 95))}, answer


def serving(cfg: Config, source: str, model, images: np.ndarray, expected: np.ndarray, folder: Path,
            args) -> list[dict]:
    """``mlflow models serve`` of ``source`` under bounded 1-image and ``--batch``-image load (see the module help)."""
    from mnist99 import tracking

    if ":/" not in source:
        source = str(folder / "mlflow-model")
        tracking.save_model(model, source)
    rows = []
    log_path = folder / "serve.log"
    with open(log_path, "w") as log:
        try:
            with tracking.model_serving(cfg, source, stdout=log, stderr=log) as server:
                for size in (1, args.batch):
                    body = json.dumps({"inputs": images[:size].tolist()}).encode()
                    row, answer = post_load(f"{server.url}/invocations", body, args.serve_requests,
                                            args.serve_seconds)
                    rows.append({"result": "serving", "images_per_request": size, **row,
                                 "max_abs_diff": float(np.abs(np.asarray(answer) - expected[:size]).max())})
        except (RuntimeError, TimeoutError) as exc:
            sys.exit(f"inference: serving {source} failed: {exc}\n{log_path.read_text()[-3000:]}")
    return rows


def versions() -> dict:
    found = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def main() -> None:
    parser = config_arguments(__doc__.splitlines()[0])
    parser.add_argument("--model", default="exports/mnist99-ensemble.keras",
                        help="a .keras file, runs:/... or models:/NAME/<version|latest>")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma-separated, of {', '.join(RUNTIMES)}")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per call path")
    parser.add_argument("--samples", type=int, default=200, help="timed single-image calls per call path")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--serve-requests", type=int, default=200, help="most POSTs per request size (0: no serving)")
    parser.add_argument("--serve-seconds", type=float, default=30.0, help="most seconds of POSTs per request size")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    cfg = load_config(args.config, args.overrides)

    from mnist99 import tracking
    from mnist99.data import make_splits
    from mnist99.delivery.export import staged_export
    from mnist99.delivery.formats import install_hint, missing_extra
    from mnist99.delivery.forward import in_batches, predict_probs
    from mnist99.delivery.loading import load_ensemble
    from mnist99.training.devices import cpu_model, device_name

    unknown = [r for r in runtimes if r not in RUNTIMES]
    missing = {r: missing_extra(r) for r in runtimes if r in RUNTIMES and missing_extra(r)}
    if unknown or missing:
        sys.exit(f"inference: unknown runtimes {unknown} (valid: {', '.join(RUNTIMES)})" if unknown else
                 "inference: " + "; ".join(f"{r} needs the {e} extra: {install_hint(e)}" for r, e in missing.items()))
    if ":/" in args.model:
        tracking.setup(cfg)
    model = load_ensemble(args.model)
    splits = make_splits(cfg.data, cfg.seed)
    images, labels = splits.x_test, splits.y_test
    expected = predict_probs(model, images)
    summary: dict = {}
    with tempfile.TemporaryDirectory(prefix="mnist99-inference-") as tmp:
        written = [r for r in runtimes if r != "keras"]
        with staged_export(model, tmp, "model", written) as paths:
            pass
        for name in runtimes:
            paths_of = runtime_paths(name, model, paths.final)
            row = {"result": "runtime", "runtime": name, "batch": args.batch, **measure(paths_of, images, args),
                   **parity(in_batches(next(iter(paths_of.values())), images), expected, labels)}
            if name == "litert":
                row["custom_ops"] = load_ensemble(paths.final[name]).custom_ops()
            summary[name] = row
            print(json.dumps(row), flush=True)
        if args.serve_requests > 0:
            for row in serving(cfg, args.model, model, images, expected, Path(tmp), args):
                summary[f"serve_{row['images_per_request']}"] = row
                print(json.dumps(row), flush=True)
    speed = {name: {"images_per_s": round(row["images_per_s"], 1), "latency_ms_p50": round(row["latency_ms_p50"], 3)}
             for name, row in summary.items() if row["result"] == "runtime"}
    print(json.dumps({
        "result": "summary", "model": args.model, "params": model.count_params(), "test_digits": len(labels),
        "speed": speed, "device": device_name(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "versions": versions(),
    }))


if __name__ == "__main__":
    main()
