"""Reading and checking MNIST's original files: gzipped IDX parsing, sha256 checks, Keras' npz.

Everything here is pure numpy on bytes, so it is tested on small synthetic files.
"""
from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist99.errors import DataError

# sha256 of the four original files (as in the dataset's published checksums), and of Keras' npz.
IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

SPLIT_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # uint8 data, 1-d labels / 3-d images


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(name: str, data: bytes, expected: str) -> None:
    """Raise DataError naming the file, expected and actual hash when ``data`` does not match."""
    actual = sha256_bytes(data)
    if actual != expected:
        raise DataError(f"checksum mismatch for {name}: expected sha256 {expected}, got {actual}")


def parse_idx(name: str, raw: bytes, ndim: int) -> np.ndarray:
    """Parse one gzipped IDX file of uint8 data with ``ndim`` dimensions into an array.

    Checks the gzip stream, the magic number and that the payload length fits the header.
    """
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name} is not a valid gzip file ({exc})") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: {len(data)} bytes, shorter than its IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{name} has IDX magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{name} holds {len(data) - header} bytes of data, its header {dims} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


IDX_FILES = (  # (array key, file name, dimensions)
    ("x_train", "train-images-idx3-ubyte.gz", 3),
    ("y_train", "train-labels-idx1-ubyte.gz", 1),
    ("x_test", "t10k-images-idx3-ubyte.gz", 3),
    ("y_test", "t10k-labels-idx1-ubyte.gz", 1),
)


def read_idx_set(source: str, read_bytes: Callable[[str], bytes]) -> dict[str, np.ndarray]:
    """Read the four IDX files through ``read_bytes(file name)``, verifying each sha256 first."""
    arrays = {}
    for key, fname, ndim in IDX_FILES:
        raw = read_bytes(fname)
        verify_sha256(f"{source}/{fname}", raw, IDX_SHA256[fname])
        arrays[key] = parse_idx(f"{source}/{fname}", raw, ndim)
    return check_arrays(source, arrays)


def read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """Read the four gzipped IDX files from ``folder``."""

    def read_bytes(fname: str) -> bytes:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"MNIST file missing: {path}")
        return path.read_bytes()

    return read_idx_set(str(folder), read_bytes)


def read_npz(path: Path, expected_sha256: str | None = KERAS_NPZ_SHA256) -> dict[str, np.ndarray]:
    """Read a Keras-style ``mnist.npz`` (no pickles), checking keys, shapes and its sha256."""
    raw = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(SPLIT_SHAPES) - set(npz.files))
            if missing:
                raise DataError(f"{path} lacks the arrays {missing} (has {sorted(npz.files)})")
            arrays = {key: npz[key] for key in SPLIT_SHAPES}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # BadZipFile: a corrupt npz
        raise DataError(f"{path} is not a readable npz file ({exc})") from None
    arrays = check_arrays(str(path), arrays)
    if expected_sha256:
        verify_sha256(str(path), raw, expected_sha256)
    return arrays


def check_arrays(source: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refuse arrays that are not MNIST's shapes, dtype or label range."""
    for key, shape in SPLIT_SHAPES.items():
        arr = arrays[key]
        if arr.shape != shape or arr.dtype != np.uint8:
            raise DataError(f"{source}: {key} is {arr.dtype}{arr.shape}, expected uint8{shape}")
    for key in ("y_train", "y_test"):
        if arrays[key].max() > 9:
            raise DataError(f"{source}: {key} holds label {int(arrays[key].max())}, expected 0-9")
    return arrays
