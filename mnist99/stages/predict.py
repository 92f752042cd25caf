"""Stage ``predict``: classify image files (PNG, JPEG, ... any size) with an exported model.

Reads: ``--model SOURCE`` (a ``.keras``, ``.onnx`` or ``.tflite`` path, ``runs:/...`` or
``models:/mnist99-ensemble/<version|latest>``;
default ``<export.dir>/<export.registered_name>.keras``) and FILE... Writes: one JSON line per
file on stdout: {"file", "digit", "confidence", "top3": [[digit, probability], ...]}.
Every file is read and preprocessed before the model is loaded: one bad file stops the command
with a one-line error and nothing printed, so the output never holds half an answer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mnist99.config import Config
from mnist99.delivery.forward import predict_probs

TOP_K = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="SOURCE", default=None,
                        help="a .keras, .onnx or .tflite file, runs:/RUN/PATH or models:/NAME/<version|latest> "
                             "(default: <export.dir>/<export.registered_name>.keras)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="image files; each becomes an MNIST-style digit")


def default_source(cfg: Config) -> str:
    return str(Path(cfg.export.dir) / f"{cfg.export.registered_name}.keras")


def prediction(file: str, probs: np.ndarray) -> dict:
    """The JSON record for one file: best digit, its probability and the ``TOP_K`` most likely digits."""
    order = np.argsort(-probs, kind="stable")[:TOP_K]
    return {"file": file, "digit": int(order[0]), "confidence": round(float(probs[order[0]]), 6),
            "top3": [[int(d), round(float(probs[d]), 6)] for d in order]}


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Preprocess every file (InputError on the first bad one), load the model, print one JSON line per file."""
    from mnist99.data.images import check_batch, load_image
    from mnist99.delivery.loading import load_ensemble

    batch = check_batch(np.stack([load_image(f) for f in args.files]))
    source = args.model or default_source(cfg)
    if ":/" in source:  # runs:/ and models:/ resolve against the configured store (nothing is created there)
        from mnist99 import tracking

        tracking.use_store(cfg)
    model = load_ensemble(source)
    probs = predict_probs(model, batch)
    records = [prediction(f, p) for f, p in zip(args.files, probs)]
    for record in records:
        print(json.dumps(record), flush=True)
    return {"predictions": records}
