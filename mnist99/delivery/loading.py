"""Loading an exported model in one line, from a ``.keras``, ``.onnx`` or ``.tflite`` path or an MLflow URI.

Keras models load in safe mode; ONNX and LiteRT files come back behind the same ``predict`` (see
:mod:`mnist99.delivery.runtimes`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import keras

from mnist99.constants import RUN_MODEL_ARTIFACT
from mnist99.errors import ModelLoadError, first_line

if TYPE_CHECKING:
    from mnist99.delivery.runtimes import ExportedModel

MLFLOW_SCHEMES = ("runs:/", "models:/")
RUNTIME_SUFFIXES = (".onnx", ".tflite")  # mnist99.delivery.runtimes.RUNTIMES, named here without importing it


def load_ensemble(source: str | Path) -> keras.Model | ExportedModel:
    """Load the model at ``source``: a ``.keras``, ``.onnx`` or ``.tflite`` file, ``runs:/<id>/<path>`` or
    ``models:/<name>/<version|latest>``.

    MLflow URIs are downloaded first; a folder (an MLflow model) must hold exactly one ``.keras`` file.
    Safe mode refuses Keras models that would run arbitrary code (Lambda layers, pickled functions).

    Returns:
        A keras.Model, or for ``.onnx``/``.tflite`` an :class:`~mnist99.delivery.runtimes.ExportedModel`;
        either way ``predict(uint8 (N, 28, 28), batch_size=...) -> (N, 10)`` probabilities, and
        ``predict_on_batch`` for one batch (:func:`mnist99.delivery.forward.predict_probs` loops it).
    Raises:
        ModelLoadError: one line naming ``source`` when it is missing, unknown to MLflow, corrupt, unsafe,
        or needs an extra that is not installed.
    """
    path = local_model_file(source)
    return load_runtime(path, source) if path.suffix in RUNTIME_SUFFIXES else load_keras(path, source)


def load_run_model(run_id: str) -> keras.Model:
    """The model a FINISHED train or ensemble run logged (its :data:`RUN_MODEL_ARTIFACT`), in safe mode.

    Raises ModelLoadError naming the run when the store has no such run or it did not finish.
    """
    from mnist99 import tracking

    tracking.finished_run(run_id)
    return load_ensemble(f"runs:/{run_id}/{RUN_MODEL_ARTIFACT}")


def local_model_file(source: str | Path) -> Path:
    """The local model file behind ``source`` (downloading MLflow URIs); ModelLoadError if there is none."""
    if str(source).startswith(MLFLOW_SCHEMES):
        from mnist99 import tracking

        path = tracking.download(str(source))
    else:
        path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(path.rglob("*.keras"))
        if len(found) != 1:
            raise ModelLoadError(f"{source} is a folder with {len(found)} .keras files, expected exactly one")
        path = found[0]
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {source}")
    if path.suffix not in (".keras", *RUNTIME_SUFFIXES):
        raise ModelLoadError(f"{source} is not a .keras, .onnx or .tflite file (export a model with `mnist99 export`)")
    return path


def load_runtime(path: Path, source: str | Path) -> ExportedModel:
    """An ``.onnx`` or ``.tflite`` file opened by its runtime; ModelLoadError naming the extra when it is missing."""
    from mnist99.delivery.formats import install_hint, missing_extra
    from mnist99.delivery.runtimes import RUNTIMES

    export_format, runtime = RUNTIMES[path.suffix]
    extra = missing_extra(export_format)
    if extra:
        raise ModelLoadError(f"cannot load model {source}: {path.suffix} files need the {extra} extra: "
                             f"{install_hint(extra)}")
    try:
        return runtime(path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types (InvalidProtobuf, Fail, ...)
        raise ModelLoadError(f"cannot load model {source}: {first_line(exc)[:300]}") from None


def load_keras(path: Path, source: str | Path) -> keras.Model:
    """``keras.saving.load_model(path, safe_mode=True)``, its failures turned into one ModelLoadError line."""
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        reason = first_line(exc)
        if "safe_mode" in str(exc):
            reason = f"refused by Keras safe mode (it would run arbitrary code): {reason}"
        raise ModelLoadError(f"cannot load model {source}: {reason[:300]}") from None
