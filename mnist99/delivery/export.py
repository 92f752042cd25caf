"""Writing the export: the ``.keras`` file and a TensorFlow SavedModel, all or nothing.

Files are written into a hidden staging folder beside their final place and moved there (a rename on
the same file system) only when the whole export succeeded, so a failure leaves no partial file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras


@dataclass(frozen=True)
class ExportPaths:
    keras_file: Path  # <dir>/<name>.keras, replaced by each export
    saved_model: Path | None  # <dir>/<name>/<1, 2, ...>/: the layout TF Serving's model_base_path expects


def next_version(folder: Path) -> str:
    """One more than the highest numbered version in ``folder`` (TF Serving serves the highest), from 1."""
    numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return str(max(numbers, default=0) + 1)


@contextlib.contextmanager
def staged_export(model: keras.Model, out_dir: str | Path, name: str,
                  saved_model: bool = True) -> Iterator[ExportPaths]:
    """Write ``model`` into a staging folder, yield the final paths, then move the files into place.

    The body of the ``with`` (e.g. registering the model in MLflow) runs before anything becomes
    visible: if it or the writing raises, the staging folder is removed and ``out_dir`` is unchanged
    (apart from being created).
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = ExportPaths(out / f"{name}.keras", out / name / next_version(out / name) if saved_model else None)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-staging-", dir=out))
    try:
        staged_keras = staging / paths.keras_file.name
        model.save(staged_keras)
        if paths.saved_model is not None:
            model.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
        yield paths
        if paths.saved_model is not None:
            paths.saved_model.parent.mkdir(exist_ok=True)
            os.rename(staging / "saved_model", paths.saved_model)  # a new version: never replaces one
        os.replace(staged_keras, paths.keras_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
