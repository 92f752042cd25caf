"""Surviving interruption: a checkpoint folder per training job, and the MLflow run it belongs to.

A job is keyed by a hash of its resolved config, the data digest and the package version, so
running the same command again after a kill finds the folder, resumes the same MLflow run and
lets the epoch backup (Keras' BackupAndRestore made atomic,
:class:`~mnist99.training.callbacks.AtomicBackupAndRestore`) continue from the last finished
epoch. A finished job removes it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from mnist99 import __version__
from mnist99.config import Config, to_yaml

RUN_ID_FILE = "run_id"


def job_key(payload: str, data_digest: str) -> str:
    """A short, stable key for (what is computed, on which data, by which mnist99 version)."""
    return hashlib.sha256(f"{payload}\n{data_digest}\n{__version__}".encode()).hexdigest()[:16]


def checkpoint_dir(cfg: Config, data_digest: str) -> Path:
    """Where this training job keeps its epoch backups and the id of its MLflow run."""
    return Path(cfg.train.checkpoint_dir).expanduser() / job_key(to_yaml(cfg), data_digest)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pending_run_id(folder: Path) -> str | None:
    """The MLflow run an interrupted job was logging to, if the job left its folder behind."""
    path = folder / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def remember_run(folder: Path, run_id: str) -> None:
    write_atomic(folder / RUN_ID_FILE, run_id)


def clear(folder: Path) -> None:
    """Remove a finished job's checkpoints."""
    shutil.rmtree(folder, ignore_errors=True)
