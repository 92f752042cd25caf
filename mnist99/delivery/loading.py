"""Loading an exported model in one line, from a ``.keras`` path or an MLflow URI, always in Keras safe mode."""
from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from mnist99.constants import RUN_MODEL_ARTIFACT
from mnist99.errors import ModelLoadError, first_line

MLFLOW_SCHEMES = ("runs:/", "models:/")


def load_ensemble(source: str | Path) -> keras.Model:
    """Load the model at ``source``: a ``.keras`` file, ``runs:/<id>/<path>`` or ``models:/<name>/<version|latest>``.

    MLflow URIs are downloaded first; a folder (an MLflow model) must hold exactly one ``.keras`` file.
    Safe mode refuses models that would run arbitrary code (Lambda layers, pickled functions).

    Raises:
        ModelLoadError: one line naming ``source`` when it is missing, unknown to MLflow, corrupt or unsafe.
    """
    return load_keras(local_keras_file(source), source)


def load_run_model(run_id: str) -> keras.Model:
    """The model a FINISHED train or ensemble run logged (its :data:`RUN_MODEL_ARTIFACT`), in safe mode.

    Raises ModelLoadError naming the run when the store has no such run or it did not finish.
    """
    from mnist99 import tracking

    tracking.finished_run(run_id)
    return load_ensemble(f"runs:/{run_id}/{RUN_MODEL_ARTIFACT}")


def local_keras_file(source: str | Path) -> Path:
    """The local ``.keras`` file behind ``source`` (downloading MLflow URIs); ModelLoadError if there is none."""
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
    if path.suffix != ".keras":
        raise ModelLoadError(f"{source} is not a .keras file (export a model with `mnist99 export`)")
    return path


def load_keras(path: Path, source: str | Path) -> keras.Model:
    """``keras.saving.load_model(path, safe_mode=True)``, its failures turned into one ModelLoadError line."""
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        reason = first_line(exc)
        if "safe_mode" in str(exc):
            reason = f"refused by Keras safe mode (it would run arbitrary code): {reason}"
        raise ModelLoadError(f"cannot load model {source}: {reason[:300]}") from None
