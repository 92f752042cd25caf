"""The ``mnist99`` command: one sub-command per stage, each a thin shell around ``stages.<name>.run``."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator

from mnist99.errors import Mnist99Error

# Sub-command -> module under mnist99.stages. Each module has a docstring (its help text), a
# ``run(cfg) -> dict`` entry function and, if it takes options beyond -c/--set, ``add_arguments(parser)``
# plus ``run(cfg, args)``. Adding a stage is adding a module and a line here.
STAGES = ["prepare", "train", "ensemble", "export", "run", "ui", "evaluate", "predict", "tune", "study"]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                        help="YAML config; repeat to merge in order (the later wins) over configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one dotted key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist99", description="MNIST past 99%: a staged, tracked Keras 3 pipeline.")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        module = stage_module(name)
        doc = (module.__doc__ or "").strip()
        stage_parser = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_args(stage_parser)
        if hasattr(module, "add_arguments"):
            module.add_arguments(stage_parser)
    return parser


def stage_module(name: str):
    """The module ``mnist99.stages.<name>`` (imports are light: heavy libraries load inside run)."""
    return importlib.import_module(f"mnist99.stages.{name}")


def run_stage(stage: str, args: argparse.Namespace) -> dict:
    """Load the config and call ``mnist99.stages.<stage>.run`` (shared by the CLI and pipelines/)."""
    from mnist99.config import load_config

    cfg = load_config(args.config, args.overrides)
    module = stage_module(stage)
    return module.run(cfg, args) if hasattr(module, "add_arguments") else module.run(cfg)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up lines (oneDNN, CUDA stubs) are printed
    before absl logging starts, so no TF_CPP_MIN_LOG_LEVEL silences them and they would bury our
    one-line errors. An import failure still raises, with its message, once stderr is back."""
    import os

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler's stop) like Ctrl-C while a stage runs: its MLflow run
    ends KILLED instead of staying RUNNING forever. The previous handler is restored afterwards."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here, leave them as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None, stage: str | None = None) -> int:
    """Entry point; ``stage`` fixes the sub-command (for ``pipelines/<stage>.py``)."""
    args = build_parser().parse_args(([stage] if stage else []) + list(sys.argv[1:] if argv is None else argv))
    import_tensorflow_quietly()  # after parsing: `mnist99 --help` and usage errors do not pay for it
    try:
        with sigterm_interrupts():
            run_stage(args.stage, args)
    except Mnist99Error as exc:
        if args.debug:
            raise
        print(f"mnist99 {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"mnist99 {args.stage}: interrupted ({exc or 'Ctrl-C'})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
