"""Surviving interruption: a checkpoint folder per training job, and the MLflow run it belongs to.

A job's folder is named by its key: a train job's is its cache key (what the model learns from, the
data and the code: :func:`~mnist99.tracking.keys.cache_key`), so running it again after a kill, alone
or as the member of an ensemble of another size, evaluation or export, finds the folder, resumes the
same MLflow run and lets the epoch backup (Keras' BackupAndRestore made atomic,
:class:`~mnist99.training.callbacks.AtomicBackupAndRestore`) continue from the last finished
epoch. A finished job removes it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mnist99.config import Config
from mnist99.files import write_atomic

RUN_ID_FILE = "run_id"


def checkpoint_dir(cfg: Config, key: str) -> Path:
    """Where the job named ``key`` keeps its epoch backups and the id of its MLflow run."""
    return Path(cfg.train.checkpoint_dir).expanduser() / key


def pending_run_id(folder: Path) -> str | None:
    """The MLflow run an interrupted job was logging to, if the job left its folder behind."""
    path = folder / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def remember_run(folder: Path, run_id: str) -> None:
    write_atomic(folder / RUN_ID_FILE, run_id)


def clear(folder: Path) -> None:
    """Remove a finished job's checkpoints."""
    shutil.rmtree(folder, ignore_errors=True)
