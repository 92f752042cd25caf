"""Timing members that will train at once: the probe (:mod:`mnist99.training.probe`) run in as many worker processes
as will train, side by side, with the threads each worker gets (``ensemble.workers``).

A budget's plan divides the time by each member's speed; members at once share the cores, so each one's steps are
slower than one process's on every core, and their sum faster (the record in :mod:`mnist99.training.workers`). Only
processes that time their steps together measure that. Each probe process builds its net, says ``ready`` and waits;
once every one is ready, all are told to go, so their timed steps overlap instead of one process's steps running
beside another's TensorFlow import. A probe's start is counted from its launch (its TensorFlow import and data
included, less the wait), as a worker pays them before its member's first step.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mnist99.config import Config, to_yaml
from mnist99.training.budget import Clock, Speed
from mnist99.training.workers import WorkerError, cli_command, last_error_line

READY = "probe: ready"
SPEED = "probe: speed "


class ProbeTimeout(WorkerError):
    """The probe processes gave no speed within the time allowed them (they are killed)."""


def measure_at_once(cfg: Config, workers: int, env: dict[str, str], clock: Clock = time.time,
                    limit: float | None = None) -> Speed:
    """``cfg``'s :class:`Speed` in each of ``workers`` processes timed together (environment ``env``: the workers'
    threads), their mean. Raises :class:`WorkerError` with a process's last error line when one fails, and
    :class:`ProbeTimeout` when they have not all given their speed ``limit`` seconds after their launch (a process
    that hangs would otherwise hold every other at the barrier, and the job, for good)."""
    with tempfile.TemporaryDirectory(prefix="mnist99-probe-") as folder:
        config_file = Path(folder) / "member.yaml"
        config_file.write_text(to_yaml(cfg))
        launched = clock()
        processes = []
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            for process, _ in processes:
                process.kill()  # its stdout ends: the read below returns

        timer = threading.Timer(limit, expire) if limit is not None else None
        try:
            for i in range(workers):
                errors = open(Path(folder) / f"stderr-{i}", "w+")  # noqa: SIM115 - closed with its process below
                processes.append((subprocess.Popen(probe_command(str(config_file), launched), env=env, text=True,
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors), errors))
            if timer is not None:
                timer.start()
            for process, errors in processes:
                _read_until(process, errors, READY)
            for process, _ in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            speeds = [Speed(**json.loads(_read_until(process, errors, SPEED)[len(SPEED):])) for process, errors in processes]
        except (WorkerError, OSError):
            if expired.is_set():
                raise ProbeTimeout(f"timing the members at once: the {workers} probe processes gave no speed within "
                                   f"{limit:.0f} s") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            for process, errors in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()
                errors.close()
    fields = [f.name for f in dataclasses.fields(Speed)]
    return Speed(**{name: sum(getattr(s, name) for s in speeds) / len(speeds) for name in fields})


def probe_command(config_file: str, launched: float) -> list[str]:
    """The hidden worker command that probes the member in ``config_file`` (see :func:`probe_worker`)."""
    return cli_command("ensemble", "-c", config_file, "--probe", repr(launched))


def _read_until(process: subprocess.Popen, errors, prefix: str) -> str:
    for line in process.stdout:
        if line.startswith(prefix):
            return line.rstrip("\n")
    process.wait()
    errors.seek(0)
    raise WorkerError(f"timing the members at once: a probe process exited with status {process.returncode}: "
                      f"{last_error_line(errors.read().splitlines())}")


def probe_worker(cfg: Config, launched: float, go=sys.stdin.readline, clock: Clock = time.time) -> Speed:
    """In a probe process: set ``cfg``'s member up as training will, say :data:`READY`, wait for ``go``, then time it
    (:func:`mnist99.training.probe.time_set_up`) and print its speed after :data:`SPEED` (JSON). ``launched``: when the
    process was started, on ``clock``."""
    from mnist99.data import make_splits
    from mnist99.training.fit import set_up
    from mnist99.training.probe import time_set_up

    splits = make_splits(cfg.data, cfg.seed)
    setup = set_up(cfg, splits)
    ready = clock()
    print(READY, flush=True)
    go()
    speed = time_set_up(cfg, splits, setup, began=launched + clock() - ready, clock=clock)
    print(SPEED + json.dumps(dataclasses.asdict(speed)), flush=True)
    return speed
