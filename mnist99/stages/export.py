"""Stage ``export``: the model of an ensemble (or train) run as uint8 digits -> probabilities, saved and registered.

Reads: ``model/model.keras`` of ``--run-id`` (default: the latest FINISHED ensemble run). Writes, for
each of ``export.formats``: ``<export.dir>/<registered_name>.keras``, a TensorFlow SavedModel under
``<export.dir>/<registered_name>/<version>/`` (the ``export.keep`` newest are kept),
``<registered_name>.onnx``, ``<registered_name>.tflite``; and an export run that logs the MLflow
model (signature uint8 (-1, 28, 28) -> float32 (-1, 10)), registers it as a new version of
``export.registered_name`` (tags: source and member run ids, ``mnist99.formats``, the source's
validation accuracy and split digest), keeps ``input_example.json`` and the ONNX/LiteRT files under
``formats/``, and tags each file's path (``mnist99.file.<format>``). The new version then gets the
alias ``champion`` when its validation accuracy is at least the current champion's on the same
validation split, else ``challenger`` (``--promote``/``--no-promote`` override the gate; see
docs/CHAMPION.md). No export file is written (or replaced) when any step fails, the gate included.
"""
from __future__ import annotations

import argparse

import numpy as np

from mnist99 import tracking
from mnist99.config import Config
from mnist99.constants import IMAGE_SHAPE
from mnist99.delivery.promotion import Promote
from mnist99.errors import ModelLoadError

FILE_TAG = "mnist99.file."  # + format: the absolute path of that exported file, a tag of the export run
FORMATS_ARTIFACT_DIR = "formats"  # the export run's copies of the ONNX and LiteRT files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", default=None, metavar="RUN",
                        help="the ensemble or train run to export (default: the latest FINISHED ensemble run)")
    add_promote_arguments(parser)


def add_promote_arguments(parser: argparse.ArgumentParser) -> None:
    """``--promote`` / ``--no-promote``: override the promotion gate (``export`` and ``run`` take them)."""
    parser.add_argument("--promote", action=argparse.BooleanOptionalAction, default=None,
                        help="make the exported version the champion whatever the gate says (--no-promote: "
                             "never; default: only if its val_accuracy >= the champion's on the same split)")


def promote_choice(args: argparse.Namespace | None) -> Promote:
    """What ``--promote`` / ``--no-promote`` asked for; ``auto`` (the gate decides) when neither was given."""
    chosen = getattr(args, "promote", None)
    return "auto" if chosen is None else chosen


def promote(name: str, version: str, choice: Promote) -> dict:
    """Run the promotion gate on ``version``: its alias, the console line saying why, the URI to load it by."""
    decision = tracking.gate(name, version, choice)
    return {"alias": decision.alias, "promotion": decision.line(name), "serve_uri": decision.uri(name)}


def source_run(run_id: str | None):
    """The run to export: ``run_id``, else the newest FINISHED ensemble run of the experiment."""
    if run_id:
        return tracking.finished_run(run_id)
    run = tracking.latest_finished_run("ensemble")
    if run is None:
        raise ModelLoadError("no FINISHED ensemble run to export in this experiment: run `mnist99 ensemble` "
                             "first or pass --run-id")
    return run


def export_run(cfg: Config, run_id: str | None = None, choice: Promote = "auto") -> dict:
    """Export the model of ``run_id`` (see the module help); returns paths, version, alias and run ids."""
    from mnist99.delivery.ensemble import as_ensemble
    from mnist99.delivery.export import staged_export
    from mnist99.delivery.formats import FORMATS
    from mnist99.delivery.loading import load_run_model

    source = source_run(run_id)
    source_id = source.info.run_id
    model = as_ensemble(load_run_model(source_id))
    member_ids = source.data.tags.get("mnist99.member_run_ids", source_id)
    name = cfg.export.registered_name
    tags = {"mnist99.source_run_id": source_id, "mnist99.member_run_ids": member_ids,
            "mnist99.formats": ",".join(cfg.export.formats)}
    with tracking.stage_run(cfg, "export", f"export-{source.info.run_name}", tags=tags) as active:
        tracking.log_config(cfg)
        with staged_export(model, cfg.export.dir, name, cfg.export.formats, cfg.export.keep) as paths:
            version = tracking.log_registered_model(model, name, {**tags, "mnist99.export_run_id": active.info.run_id})
            # MLflow 3.17.2 fails on `input_example=` (see tracking.log_registered_model): the example
            # is kept beside the model instead, in the body /invocations takes.
            tracking.log_dict({"inputs": np.zeros((1, *IMAGE_SHAPE), np.uint8).tolist()}, "input_example.json")
            for fmt, path in paths.staged.items():
                if FORMATS[fmt].artifact:
                    tracking.log_artifact(path, FORMATS_ARTIFACT_DIR)
            tracking.set_tags({"mnist99.registered_model": f"{name}/{version}",
                               **{f"{FILE_TAG}{fmt}": str(path.resolve()) for fmt, path in paths.final.items()}})
            # The alias comes last among the registry steps (a version is offered as champion only once its
            # artifacts and tags are in place), yet inside the staging: if the gate fails (a registry that
            # does not answer, a lock never released), no export file is published and the run is FAILED.
            tracking.record_validation(name, version, source)
            promoted = promote(name, version, choice)
    files = {fmt: str(path) for fmt, path in paths.final.items()}
    return {**result(active.info.run_id, source_id, member_ids, f"{name}/{version}", files), **promoted}


def result(run_id: str, source_id: str, member_ids: str, registered: str, files: dict[str, str]) -> dict:
    """What an export returns (without its promotion), also when read back from its run's tags by a rerun
    of the main job: ``registered`` is ``name/version``, ``member_ids`` comma-separated, as tagged."""
    name, version = registered.rsplit("/", 1)
    return {"run_id": run_id, "source_run_id": source_id, "member_run_ids": member_ids.split(","),
            "registered_name": name, "version": version, "model_uri": f"models:/{name}/{version}", "files": files,
            "keras_file": files.get("keras"), "saved_model": files.get("saved_model")}


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Export (see the module help); prints where the files went and the registered model version."""
    tracking.setup(cfg)
    out = export_run(cfg, getattr(args, "run_id", None), promote_choice(args))
    print("export: " + ", ".join(f"{fmt} {path}" for fmt, path in out["files"].items()) +
          f"\nregistered: {out['model_uri']} (from run {out['source_run_id']})\n{out['promotion']}\n"
          f"load it: mnist99.load_ensemble({out['serve_uri']!r})")
    return out
