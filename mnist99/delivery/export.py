"""Writing the export: every format of ``export.formats``, checked, then published all or nothing.

Files are written into a hidden staging folder beside their final place, the converted ones (ONNX,
LiteRT) are checked against the Keras model, and all are moved there (renames on the same file
system) only when the whole export succeeded, so a failure leaves no partial file. Older SavedModel
versions beyond ``export.keep`` are deleted only after that.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnist99.constants import IMAGE_SHAPE
from mnist99.delivery.formats import FORMATS
from mnist99.errors import ExportError, first_line

PARITY_TOLERANCE = 1e-4  # max |p_format - p_keras| over the probe digits: float32 rounding is ~1e-7
PROBE_DIGITS = 64  # random uint8 images each converted file must answer like the Keras model


@dataclass(frozen=True)
class ExportPaths:
    staged: dict[str, Path]  # format -> its file (folder) in the staging folder, readable inside the `with`
    final: dict[str, Path]  # format -> where it is moved: <dir>/<name><suffix>, or <dir>/<name>/<n>/ if versioned


def next_version(folder: Path) -> str:
    """One more than the highest numbered version in ``folder`` (TF Serving serves the highest), from 1."""
    return str(max((int(p.name) for p in versions(folder)), default=0) + 1)


def versions(folder: Path) -> list[Path]:
    """The numbered version folders in ``folder``, oldest first."""
    found = [p for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name))


def prune_versions(folder: Path, keep: int | None) -> list[Path]:
    """Delete all but the ``keep`` highest numbered versions in ``folder`` (None: keep all); returns the deleted."""
    doomed = versions(folder)[:-keep] if keep else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def check_converted(model: keras.Model, staged: dict[str, Path]) -> None:
    """Every staged file a runtime can open must use only that runtime's builtin ops and give the Keras
    model's probabilities on the probe digits.

    Raises ExportError naming the format and what is wrong otherwise.
    """
    from mnist99.delivery.runtimes import RUNTIMES

    probe = np.random.default_rng(0).integers(0, 256, (PROBE_DIGITS, *IMAGE_SHAPE), dtype=np.uint8)
    expected = None
    for name, path in staged.items():
        if path.suffix not in RUNTIMES:
            continue
        try:
            runtime = RUNTIMES[path.suffix][1](path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types (InvalidGraph, ...)
            raise ExportError(f"export format {name!r}: its runtime cannot open the converted file "
                              f"({first_line(exc)[:300]}): nothing was exported") from None
        custom = runtime.custom_ops()
        if custom:
            raise ExportError(f"export format {name!r} holds ops its runtime lacks ({', '.join(custom)}): "
                              "nothing was exported")
        if expected is None:
            expected = np.asarray(model.predict(probe, verbose=0))
        diff = float(np.abs(runtime.predict(probe) - expected).max())
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"export format {name!r} differs from the Keras model by {diff:.2g} "
                              f"(more than {PARITY_TOLERANCE:g}): nothing was exported")


@contextlib.contextmanager
def staged_export(model: keras.Model, out_dir: str | Path, name: str,
                  formats: Sequence[str] = ("keras", "saved_model"), keep: int | None = None) -> Iterator[ExportPaths]:
    """Write ``model`` in each of ``formats`` into a staging folder, check it, yield the paths, then publish.

    The body of the ``with`` (e.g. registering the model in MLflow, logging staged files) runs before
    anything becomes visible: if it, a writer or a parity check raises, the staging folder is removed
    and ``out_dir`` is unchanged (apart from being created). After publishing, SavedModel versions
    beyond the ``keep`` newest are deleted.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    final = {fmt: out / name / next_version(out / name) if FORMATS[fmt].versioned else out / f"{name}{FORMATS[fmt].suffix}"
             for fmt in formats}
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-staging-", dir=out))
    try:
        staged = {fmt: staging / (fmt if FORMATS[fmt].versioned else path.name) for fmt, path in final.items()}
        for fmt, path in staged.items():
            FORMATS[fmt].write(model, path)
        check_converted(model, staged)
        yield ExportPaths(staged, final)
        for fmt in sorted(final, key=lambda f: not FORMATS[f].versioned):  # new versions first: they never replace
            if FORMATS[fmt].versioned:
                final[fmt].parent.mkdir(exist_ok=True)
                os.rename(staged[fmt], final[fmt])
            else:
                os.replace(staged[fmt], final[fmt])
        if any(FORMATS[fmt].versioned for fmt in final):
            prune_versions(out / name, keep)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
