"""Members trained at once, each in a process of its own with a share of the CPU's threads (``ensemble.workers``).

TensorFlow spreads each op of one training step over the cores, and the default net's ops are small (32-64 channels
at 14x14 and 7x7), so the cores wait on each other between ops. Single-threaded processes, each a member, keep every
core busy: side by side on 2 Intel Xeon cores, three trained 1.28-1.66x the images/s of one process with
TensorFlow's default threads (median 1.45 over six rounds of short fits;
benchmarks/results/cpu-2core/2026-12-07-members-at-once.md), 1.28 and 1.33x in whole epochs of ``mnist99 train``
(2026-12-07-members-at-once-real-epochs.md). Each worker is ``mnist99 ensemble --member I``, the
command that trains a member on another machine: its own train run under its claim, nested under the ensemble's
run, the same arithmetic as a member trained in the ensemble's process; the ensemble then reuses the FINISHED runs.
A GPU trains members one after another: it is one device. A budget's plan times the members at once as they will
train (:mod:`mnist99.training.concurrent_probe`).
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mnist99.errors import Mnist99Error

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class WorkerError(Mnist99Error):
    """A member's worker process failed; the message names the member and the worker's own last error line."""


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_count(setting: str | int, to_train: int, cores: int, gpu: bool) -> int:
    """How many members train at once: ``setting`` (an int) as given, at most ``to_train``; ``auto``: one on a GPU
    or on one core, else every member to train up to cores + 1 (3 members on 2 cores finish
    together; 2 workers then 1 would leave a core idle at the end)."""
    if to_train < 2:
        return 1
    if setting != "auto":
        return max(1, min(int(setting), to_train))
    if gpu or cores < 2:
        return 1
    return min(to_train, cores + 1)


def thread_environment(workers: int, cores: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each worker: TensorFlow's thread pools sized to its share of the cores (one inter-op
    thread; intra-op threads ``cores // workers``, at least one), unless the user set them; and Python's output
    unbuffered, so that its epoch lines reach the console as they are printed, not when a pipe's buffer fills."""
    env = dict(os.environ if environ is None else environ)
    shares = {"TF_NUM_INTRAOP_THREADS": str(max(1, cores // workers)), "TF_NUM_INTEROP_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}
    for name, value in shares.items():
        env.setdefault(name, value)
    return env


@dataclass
class _Worker:
    label: str
    process: subprocess.Popen
    errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    readers: list[threading.Thread] = field(default_factory=list)


def run_workers(jobs: Sequence[tuple[str, list[str]]], workers: int, env: dict[str, str],
                show: Callable[[str], None] = print) -> None:
    """Run each ``(label, command)`` of ``jobs``, ``workers`` at a time, until all have exited 0.

    Each worker's output lines reach ``show`` as they come (its indented epoch lines prefixed with ``label``);
    its stderr is kept for the error. The first failure stops the others (SIGTERM, so their runs end KILLED) and
    raises :class:`WorkerError` with its label and last stderr line. Ctrl-C or SIGTERM of this process (a
    KeyboardInterrupt here) stops them the same way and goes on.
    """
    pending, running = list(jobs), []
    done = threading.Condition()
    try:
        while pending or running:
            while pending and len(running) < workers:
                label, command = pending.pop(0)
                running.append(_start(label, command, env, show, done))
            with done:
                done.wait_for(lambda: any(w.process.poll() is not None for w in running), timeout=1.0)
            for worker in [w for w in running if w.process.poll() is not None]:
                running.remove(worker)
                for reader in worker.readers:
                    reader.join()
                if worker.process.returncode != 0:
                    raise WorkerError(f"{worker.label}: its worker exited with status {worker.process.returncode}: "
                                      f"{last_error_line(worker.errors)}")
    finally:
        for worker in running:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in running:
            try:
                worker.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.process.kill()


def last_error_line(lines: Sequence[str]) -> str:
    """A child process's last non-blank stderr line (its one-line error), stripped."""
    return next((line.strip() for line in reversed(lines) if line.strip()), "no error output")


def _start(label: str, command: list[str], env: dict[str, str], show: Callable[[str], None],
           done: threading.Condition) -> _Worker:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    worker = _Worker(label, process)

    def relay(stream, keep: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if keep:
                worker.errors.append(line)
            elif line:
                show(f"  {label}:{line[1:]}" if line.startswith("  ") else line)
        with done:
            done.notify_all()

    worker.readers = [threading.Thread(target=relay, args=(process.stdout, False), daemon=True),
                      threading.Thread(target=relay, args=(process.stderr, True), daemon=True)]
    for reader in worker.readers:
        reader.start()
    return worker


def cli_command(*args: str) -> list[str]:
    """``mnist99 ARGS`` in a child process of this Python. ``-P``: the child does not put its working folder first
    on its import path, where a folder named ``mnist99`` (an MLflow artifact root named after the experiment) would
    shadow the package."""
    return [sys.executable, "-P", "-m", "mnist99.cli", *args]


def member_command(config_file: str, index: int, force: bool, parent_run_id: str | None = None, after: int = 0,
                   plan_file: str | None = None) -> list[str]:
    """The worker command that trains member ``index`` of the ensemble in ``config_file`` (the resolved config),
    its run nested under ``parent_run_id`` (None: not nested); ``after``: how many members its slot trains after it
    (for the finish time it prints); ``plan_file``: the budget's plan (JSON) its deadline comes from."""
    return cli_command("ensemble", "-c", config_file, "--member", str(index), "--worker", str(after),
                       *(["--parent-run", parent_run_id] if parent_run_id else []),
                       *(["--plan", plan_file] if plan_file else []), *(["--force"] if force else []))
