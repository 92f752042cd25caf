import gzip
import shutil

import numpy as np
import pytest

from mnist99.data import idx, sources
from mnist99.data.splits import make_splits, stratified_subset
from mnist99.errors import DataError
from tests.conftest import require_real_data


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x801 if arr.ndim == 1 else 0x803)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)  # the same bytes in every process


def test_parse_idx_round_trip():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(idx.parse_idx("x", idx_bytes(images), 3), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(idx.parse_idx("y", idx_bytes(labels), 1), labels)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not gzip at all", "not a valid gzip"),
        (idx_bytes(np.zeros((2, 28, 28)), magic=0x1234), "magic number"),
        (gzip.compress(idx_bytes(np.zeros((2, 28, 28)))[:0] + b"\x00\x00", mtime=0), "truncated"),
        (gzip.compress(gzip.decompress(idx_bytes(np.zeros((2, 28, 28))))[:-5], mtime=0), "needs"),
    ],
)
def test_parse_idx_refuses_garbage(raw, message):
    with pytest.raises(DataError, match=message):
        idx.parse_idx("f.gz", raw, 3)


def test_truncated_gzip_is_refused():
    raw = idx_bytes(np.zeros((50, 28, 28)))
    with pytest.raises(DataError, match="f.gz"):
        idx.parse_idx("f.gz", raw[: len(raw) // 2], 3)


def test_checksum_mismatch_names_file_and_hashes():
    with pytest.raises(DataError) as err:
        idx.verify_sha256("train-images-idx3-ubyte.gz", b"abc", "0" * 64)
    text = str(err.value)
    assert "train-images-idx3-ubyte.gz" in text and "0" * 64 in text and idx.sha256_bytes(b"abc") in text


def test_npz_with_wrong_keys_or_shapes(tmp_path):
    bad_keys = tmp_path / "keys.npz"
    np.savez(bad_keys, images=np.zeros(3))
    with pytest.raises(DataError, match="lacks the arrays"):
        idx.read_npz(bad_keys)
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, x_train=np.zeros((5, 28, 28), np.uint8), y_train=np.zeros(5, np.uint8),
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="x_train is uint8"):
        idx.read_npz(bad_shape)


def test_missing_sources(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sources.load_mnist(str(tmp_path / "nowhere"), str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="MNIST file missing"):
        sources.load_mnist(str(tmp_path / "empty"), str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_stratified_subset_keeps_class_balance():
    y = np.repeat(np.arange(10), 100)
    x = np.zeros((1000, 28, 28), np.uint8)
    _, y_sub = stratified_subset(x, y, 200, seed=0)
    assert np.bincount(y_sub).tolist() == [20] * 10


@pytest.mark.integration
def test_real_mnist_split_and_cache(tmp_path):
    data = require_real_data()
    from mnist99.config import load_config

    cfg = load_config([], [f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}"]).data
    splits = make_splits(cfg, seed=1)
    assert splits.counts() == {"train": 55000, "val": 5000, "test": 10000}
    counts = np.bincount(splits.y_val, minlength=10) / 5000
    full = np.bincount(np.concatenate([splits.y_train, splits.y_val]), minlength=10) / 60000
    assert np.abs(counts - full).max() < 0.002  # stratified
    assert (tmp_path / "cache" / "mnist.npz").is_file()
    # The cache alone (no path, no env) serves the same arrays.
    again = make_splits(load_config([], [f"data.cache_dir={tmp_path / 'cache'}"]).data, seed=1)
    assert again.digest == splits.digest


@pytest.mark.integration
def test_corrupted_file_leaves_no_cache(tmp_path):
    data = require_real_data()
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    target = bad / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-labels-idx1-ubyte.gz"):
        sources.load_mnist(str(bad), str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
