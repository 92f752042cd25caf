"""Surviving interruption: a checkpoint folder per training job, and the MLflow run it belongs to.

A job is keyed by a hash of its resolved config, the data digest and the package version, so
running the same command again after a kill finds the folder, resumes the same MLflow run and
lets the epoch backup (Keras' BackupAndRestore made atomic,
:class:`~mnist99.training.callbacks.AtomicBackupAndRestore`) continue from the last finished
epoch. A finished job removes it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mnist99.config import Config, to_yaml
from mnist99.files import write_atomic
from mnist99.tracking.keys import job_key

RUN_ID_FILE = "run_id"


def checkpoint_dir(cfg: Config, data_digest: str) -> Path:
    """Where this training job keeps its epoch backups and the id of its MLflow run."""
    return Path(cfg.train.checkpoint_dir).expanduser() / job_key(to_yaml(cfg), data_digest)


def pending_run_id(folder: Path) -> str | None:
    """The MLflow run an interrupted job was logging to, if the job left its folder behind."""
    path = folder / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def remember_run(folder: Path, run_id: str) -> None:
    write_atomic(folder / RUN_ID_FILE, run_id)


def clear(folder: Path) -> None:
    """Remove a finished job's checkpoints."""
    shutil.rmtree(folder, ignore_errors=True)
