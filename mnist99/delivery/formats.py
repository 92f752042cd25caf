"""The export formats by name (``export.formats``): how each is written, where it goes, the extra it needs.

Every writer uses Keras' own exporters (``model.save``, ``model.export``); ONNX and LiteRT need
converters and runtimes that are optional extras, checked when the config is validated so that a
missing one fails before anything trains. Importing this module loads no heavy library.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def write_keras(model: keras.Model, path: Path) -> None:
    model.save(path)


def write_saved_model(model: keras.Model, path: Path) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def write_onnx(model: keras.Model, path: Path) -> None:
    """ONNX through Keras' exporter (tf2onnx); the input keeps the model's name and type: ``digits``, uint8 (N, 28, 28).

    The input signature is given because a model loaded from disk has never been called, which the
    exporter refuses otherwise. tf2onnx's numpy FutureWarning on import is not the user's concern.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False, input_signature=[model.inputs[0]])


def write_litert(model: keras.Model, path: Path) -> None:
    """A LiteRT (``.tflite``) file of builtin ops only.

    Keras' exporter also allows ``SELECT_TF_OPS``, which would let the file silently depend on
    TensorFlow's kernels (Flex ops) that the plain LiteRT runtime lacks; with builtins only, a model
    that needs one fails here instead.
    """
    import tensorflow as tf

    model.export(str(path), format="litert", verbose=False,
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})


@dataclass(frozen=True)
class ExportFormat:
    write: Callable[[keras.Model, Path], None]
    suffix: str  # the file's ending; "" for a folder
    versioned: bool = False  # a new numbered folder per export (<dir>/<name>/<n>/) instead of one replaced file
    extra: str | None = None  # the setup.cfg extra that installs its converter and runtime
    modules: tuple[str, ...] = ()  # the modules that extra provides (looked up, not imported)
    artifact: bool = False  # also logged as an artifact of the export run (the MLflow model is the Keras one)


FORMATS: dict[str, ExportFormat] = {
    "keras": ExportFormat(write_keras, ".keras"),
    # TF Serving's layout: it serves the highest version under <dir>/<name>/
    "saved_model": ExportFormat(write_saved_model, "", versioned=True),
    "onnx": ExportFormat(write_onnx, ".onnx", extra="onnx", modules=("tf2onnx", "onnx", "onnxruntime"), artifact=True),
    "litert": ExportFormat(write_litert, ".tflite", extra="litert", modules=("ai_edge_litert",), artifact=True),
}


def missing_extra(name: str) -> str | None:
    """The extra to install before format ``name`` can be written and run here, or None when nothing is missing."""
    spec = FORMATS[name]
    if all(importlib.util.find_spec(module) is not None for module in spec.modules):
        return None
    return spec.extra


def install_hint(extra: str) -> str:
    return f"pip install 'mnist99[{extra}]'"
