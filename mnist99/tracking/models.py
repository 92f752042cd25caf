"""Logging a Keras model as an MLflow model with its signature, and registering it."""
from __future__ import annotations

import contextlib
import io
import logging
from importlib import metadata
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec


def keras_signature(model: keras.Model) -> ModelSignature:
    """The tensor signature of a one-input, one-output Keras model, with a free batch dimension."""
    def spec(tensor) -> TensorSpec:
        return TensorSpec(np.dtype(tensor.dtype), (-1, *tensor.shape[1:]))

    return ModelSignature(inputs=Schema([spec(model.inputs[0])]), outputs=Schema([spec(model.outputs[0])]))


def pinned_requirements() -> list[str]:
    """The running versions of what serving a Keras model needs: letting MLflow infer them reloads the
    model in a subprocess (15 s on 2 cores)."""
    return [f"{pkg}=={metadata.version(pkg)}" for pkg in ("mlflow", "keras", "tensorflow", "numpy")]


def save_model(model: keras.Model, path: str | Path) -> None:
    """``model`` as an MLflow Keras model folder at ``path`` (signature, pinned requirements), outside any store:
    what ``mlflow models serve -m PATH`` takes for a model that was never registered."""
    mlflow.keras.save_model(model, str(path), signature=keras_signature(model), pip_requirements=pinned_requirements())


def log_registered_model(model: keras.Model, registered_name: str, tags: dict[str, str],
                         name: str = "model") -> str:
    """Log ``model`` as an MLflow Keras model with its signature, register it, tag the new version; returns it.

    Requirements are pinned (:func:`pinned_requirements`). No ``input_example=``: in MLflow 3.17.2 it
    raises FileNotFoundError (the example is written before the model folder exists), so callers log
    the example as an artifact.
    """
    requirements = pinned_requirements()
    # MLflow prints "Successfully registered model ..." to stderr itself, not through logging: keep
    # the console quiet unless MLflow's logger is at INFO (the CLI's --verbose).
    quiet = logging.getLogger("mlflow").getEffectiveLevel() > logging.INFO
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        info = mlflow.keras.log_model(model, name=name, signature=keras_signature(model),
                                      registered_model_name=registered_name, pip_requirements=requirements)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version
