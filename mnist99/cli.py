"""The ``mnist99`` command: one sub-command per stage, each a thin shell around ``stages.<name>.run``."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator

from mnist99 import __version__
from mnist99.console import muted_stderr
from mnist99.errors import Mnist99Error

# Sub-command -> module under mnist99.stages. Each module has a docstring (its help text), a
# ``run(cfg) -> dict`` entry function and, if it takes options beyond -c/--set, ``add_arguments(parser)``
# plus ``run(cfg, args)``. Adding a stage is adding a module and a line here.
STAGES = ["prepare", "train", "ensemble", "export", "run", "ui", "server", "evaluate", "predict", "tune", "study"]
# Libraries whose start-up lines, INFO logs and warnings a user cannot act on; --verbose shows them.
QUIET_LIBRARIES = ("mlflow", "tensorflow", "keras", "keras_tuner", "absl", "alembic", "sqlalchemy", "urllib3",
                   "matplotlib", "PIL", "google")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                        help="YAML config: a file, or a packaged config by name (default, quick, gpu, mlp, "
                             "studies/activations, ...); repeat to merge in order (the later wins) over default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one dotted key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' logs and warnings (MLflow, TensorFlow, Keras)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


class _SetsKey(argparse.Action):
    """``--flag VALUE`` as ``--set KEY=VALUE``: appended to the same overrides, so the later of the two wins."""

    def __init__(self, option_strings, dest, key: str, **kwargs) -> None:
        super().__init__(option_strings, "overrides", default=argparse.SUPPRESS, **kwargs)
        self.key = key

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.overrides = [*namespace.overrides, f"{self.key}={values}"]


def add_shorthand(parser: argparse.ArgumentParser, flag: str, key: str, metavar: str, help: str) -> None:
    """Add ``flag VALUE``, a shorthand for ``--set key=VALUE`` (a stage's ``add_arguments`` calls it)."""
    parser.add_argument(flag, action=_SetsKey, key=key, metavar=metavar, help=f"{help} (= --set {key}={metavar})")


def add_budget(parser: argparse.ArgumentParser, what: str) -> None:
    """``--budget 10m``, the shorthand for ``--set train.budget=10m`` of the stages that train."""
    add_shorthand(parser, "--budget", "train.budget", "DURATION",
                  f"time budget for {what}, e.g. 90s, 10m, 1h30m: sets the epochs to end within it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist99", description="MNIST past 99%: a staged, tracked Keras 3 pipeline.")
    parser.add_argument("--version", action="version", version=f"mnist99 {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        module = stage_module(name)
        doc = (module.__doc__ or "").strip()
        stage_parser = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_args(stage_parser)
        if hasattr(module, "add_arguments"):
            module.add_arguments(stage_parser)
    show = sub.add_parser("config", help="print the fully resolved config a stage would use (YAML)",
                          description="mnist99 config show -c quick --set train.epochs=3: the merged, validated "
                                      "config, every key, as `-c` accepts it back.")
    show.add_argument("action", choices=["show"], nargs="?", default="show")
    add_config_args(show)
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


def show_config(args: argparse.Namespace) -> None:
    """Print the resolved config as YAML, headed by the files it merged."""
    from mnist99.config import DEFAULT_CONFIG, load_config, resolve_config_path, to_yaml

    cfg = load_config(args.config, args.overrides)
    sources = [str(DEFAULT_CONFIG), *(str(resolve_config_path(f)) for f in args.config)]
    header = "".join(f"# {line}\n" for line in ["merged: " + ", ".join(sources), *(f"--set {o}" for o in args.overrides)])
    print(header + to_yaml(cfg), end="")


def quiet_libraries(verbose: bool) -> None:
    """Keep the console to what mnist99 says (stage, member, epochs, results) unless ``verbose``.

    TensorFlow's C++ lines (CUDA probes on a CPU machine, oneDNN notes) obey TF_CPP_MIN_LOG_LEVEL, read
    when TensorFlow loads; MLflow's INFO lines (system metrics start/stop, registry notes), Python
    warnings from libraries and TensorFlow's retracing notes go through logging and warnings.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when mlflow configures its loggers
    # MLflow draws a tqdm bar on stderr for every artifact download (export, evaluate --run-id load models).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Against a tracking server MLflow prints a "View run ... at: URL" pair for every run it ends.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=rf"({'|'.join(QUIET_LIBRARIES)})(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up lines (oneDNN, CUDA stubs) are printed
    before absl logging starts, so no TF_CPP_MIN_LOG_LEVEL silences them and they would bury our
    one-line errors. An import failure still raises, with its message, once stderr is back."""
    with muted_stderr():
        import tensorflow  # noqa: F401


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler's stop) like Ctrl-C while a stage runs: its MLflow run
    ends KILLED instead of staying RUNNING forever, and a server it started is stopped in order.
    The previous handler is restored afterwards."""
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
    """Entry point; ``stage`` fixes the sub-command (for ``pipelines/<stage>.py``).

    ``args.started`` is when the command started: a time budget (``--budget``) counts from there, so
    TensorFlow's import is inside it.
    """
    started = time.time()
    args = build_parser().parse_args(([stage] if stage else []) + list(sys.argv[1:] if argv is None else argv))
    args.started = started
    quiet_libraries(args.verbose)
    try:
        # after parsing: `mnist99 --help` and usage errors do not pay for it; `config show` does, as its
        # validation looks names up in the model and optimiser registries, which import Keras
        import_tensorflow_quietly()
        if args.stage == "config":
            show_config(args)
            return 0
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
