"""Tracking under load: N concurrent writer processes logging metric points to three stores.

    python benchmarks/tracking_load.py                       (N = 2, 4, 8; 2,000 points each; one by one)
    python benchmarks/tracking_load.py --writers 2 --points 50 --out /tmp/load.md      (a smoke run)

Stores: ``server-postgres`` (``mnist99 server``'s pair: mlflow server on a private PostgreSQL cluster,
as :mod:`mnist99.tracking.teamserver` starts it), ``server-sqlite`` (mlflow server on a SQLite file)
and ``sqlite-direct`` (each writer opens the SQLite file itself, as the stages do by default). Each
writer creates a run and logs ``--points`` values of one metric, one ``log_metric`` call per point by
default: one HTTP request (or SQLite transaction) per point, the realistic stress of per-epoch and
per-batch logging from many jobs; ``--batch K`` sends ``log_batch`` calls of K points instead.

Per store and N: points lost (written without an error but not read back; must be 0), errors (calls
that failed after MLflow's own retries), and points/s (all writers' points over the wall time from the
first writer's first point to the last one's last: starting the processes is left out). Prints one
JSON line per row and writes the markdown table to ``--out`` (default: tracking_load.md here). Not a test: the figures depend
on the machine and what else runs on it; measure on an idle one and put ``lscpu``'s model beside them.
Needs PostgreSQL's programs and ``pip install 'mnist99[server]'`` for ``server-postgres``.
"""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ... at" per writer

import argparse
import contextlib
import json
import multiprocessing
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mnist99.config import load_config
from mnist99.tracking import loadtest, server, teamserver

STORES = ("server-postgres", "server-sqlite", "sqlite-direct")


@contextlib.contextmanager
def store(kind: str, folder: Path) -> Iterator[str]:
    """The tracking URI of a fresh store of ``kind`` under ``folder``, its server running meanwhile."""
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # as root, PostgreSQL runs as the user postgres, who must reach its folder
    sqlite = f"sqlite:///{folder / 'mlflow.db'}"
    if kind == "sqlite-direct":
        yield sqlite
        return
    port = server.free_port()
    quiet = {"stdout": open(folder / "server.log", "wb"), "stderr": subprocess.STDOUT}
    if kind == "server-postgres":
        cfg = load_config([], [f"server.dir={folder / 'server'}"])
        with teamserver.serving(cfg, "127.0.0.1", port, None, **quiet) as running:
            yield running.url
        return
    loadtest.new_experiment(sqlite, "migrate")  # create and migrate the file before the server opens it
    cfg = load_config([], [f"tracking.uri={sqlite}"])
    with server.serving(cfg, "127.0.0.1", port, **quiet) as running:
        yield running.url


def writer(args: tuple) -> dict:
    return loadtest.write_points(*args)


def measure(uri: str, writers: int, points: int, batch: int) -> dict:
    """``writers`` processes at once, each writing ``points`` points to its own run; what came back."""
    experiment = loadtest.new_experiment(uri, f"load-{writers}-{time.time_ns()}")
    jobs = [(uri, experiment, f"writer-{i}", points, batch) for i in range(writers)]
    with multiprocessing.get_context("spawn").Pool(writers) as pool:
        results = pool.map(writer, jobs)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)  # without the processes' start
    found = sum(loadtest.count_points(uri, r["run_id"]) for r in results)
    errors = sum(r["errors"] for r in results)
    return {"writers": writers, "points": writers * points, "errors": errors,
            "lost": writers * points - errors - found, "points_per_s": round(writers * points / seconds, 1),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), "")}


def table(rows: list[dict], points: int, batch: int) -> str:
    mode = f"log_batch of {batch}" if batch else "one log_metric call per point"
    lines = [f"{points:,} points per writer, {mode}; {platform.processor() or platform.machine()}, "
             f"{multiprocessing.cpu_count()} CPUs", "",
             "| store | writers | points | lost | errors | points/s | first error |",
             "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['store']} | {r['writers']} | {r['points']:,} | {r['lost']} | {r['errors']} | {r['points_per_s']:,} "
              f"| {r['first_error'] or '-'} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--points", type=int, default=2000, help="metric points per writer (default 2,000)")
    parser.add_argument("--batch", type=int, default=0, help="points per log_batch call (0: one log_metric call each)")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--out", type=Path, default=Path("tracking_load.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tracking-load-") as tmp:
        Path(tmp).chmod(0o755)
        for kind in args.stores:
            with store(kind, Path(tmp) / kind) as uri:
                for n in args.writers:
                    row = {"store": kind, **measure(uri, n, args.points, args.batch)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    args.out.write_text(table(rows, args.points, args.batch))
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
