"""Cache keys and provenance: digests of the code, the config and the data that a result depends on.

A stage run is tagged with its cache key (``mnist99.cache_key``); a FINISHED run with the same key is
reused instead of computed again (``mnist99 run``'s skipped stages, an ensemble's finished members).
The code part is a digest of the package's own ``.py`` files: the same in a checkout and in an
installed wheel, and unchanged by commits that touch only docs, tests, configs or benchmarks.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import yaml

from mnist99 import __version__
from mnist99.config import Config

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CACHE_KEY_TAG = "mnist99.cache_key"
CODE_DIGEST_TAG = "mnist99.code_digest"

# The config sections each stage's result depends on (besides the data, the code, and for export the
# ensemble run it exports). Tracking, tuning and study settings change no result of any stage. A train
# run (alone or an ensemble's member) is what it learned: the ensemble around it, its evaluation and its
# export change nothing in it, so a larger ensemble reuses the members of a smaller one, and an ensemble
# without the robustness table the members of one with it.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("data", "seed"),
    "train": ("data", "augment", "model", "train", "diagnostics", "seed"),
    "ensemble": ("data", "augment", "model", "train", "ensemble", "seed"),
    "export": ("export",),
    "study": ("data", "augment", "model", "train", "diagnostics", "seed", "study"),  # its parent run
}
# Settings inside those sections that say where files are and how a run reports, not what it computes
# (the data's own digest is in every key) or how many processes train the members: watching a rerun with
# `train.verbose=1`, reading MNIST from another folder, or training members at once reuses what is done.
UNKEYED: dict[str, set[str]] = {"data": {"path", "cache_dir"}, "train": {"verbose", "checkpoint_dir"},
                                "ensemble": {"workers"}}


@functools.cache
def code_digest() -> str:
    """sha256 over the package's ``.py`` files (relative path and bytes, in path order); computed once a process."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the code runs from, for provenance tags only (None in a wheel install)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=PACKAGE_DIR)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def job_key(payload: str, data_digest: str) -> str:
    """A short, stable key for (what is computed, on which data, by which mnist99 version)."""
    return hashlib.sha256(f"{payload}\n{data_digest}\n{__version__}".encode()).hexdigest()[:16]


def cache_key(stage: str, cfg: Config, data_digest: str, upstream: str = "") -> str:
    """The cache key of ``stage`` run on ``cfg``: the config sections it reads (:data:`STAGE_SECTIONS`, less
    :data:`UNKEYED`), ``upstream`` (a run it reads, e.g. the ensemble an export exports), the data and the code."""
    sections = cfg.model_dump(include=set(STAGE_SECTIONS[stage]), exclude=UNKEYED)
    payload = yaml.safe_dump(sections, sort_keys=True)
    return job_key(f"{stage}\n{payload}\n{upstream}\n{code_digest()}", data_digest)
