"""Image preprocessing for predict: drawn digits in every mode and size, bad files, bad batches, fuzzing."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from mnist99.data.images import MAX_PIXELS, check_batch, load_image, to_mnist_digit
from mnist99.errors import InputError


def drawn_seven(size=(600, 800), ink="black", paper="white", mode="RGB") -> Image.Image:
    """A '7' drawn with a thick pen, off-centre on a large canvas."""
    image = Image.new(mode, size, paper)
    w, h = size
    ImageDraw.Draw(image).line([(0.15 * w, 0.2 * h), (0.7 * w, 0.2 * h), (0.35 * w, 0.9 * h)], fill=ink,
                               width=max(3, w // 15))
    return image


def assert_mnist_like(digit: np.ndarray) -> None:
    """(28, 28) uint8, bright ink on black, inside a centred 20x20 box, mass centred within 1 px."""
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert digit.max() == 255
    assert np.median(np.concatenate([digit[0], digit[-1], digit[:, 0], digit[:, -1]])) == 0
    rows, cols = np.nonzero(digit > 0)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 >= 19  # fitted, not just shrunk
    mass = digit.astype(float)
    com = [(mass.sum(axis=1 - a) @ np.arange(28)) / mass.sum() for a in (0, 1)]
    assert np.allclose(com, 13.5, atol=1.0), com


def test_drawn_digit_becomes_mnist_like():
    assert_mnist_like(to_mnist_digit(drawn_seven()))


def test_inverted_colours_give_the_same_digit():
    dark_on_light = to_mnist_digit(drawn_seven(ink="black", paper="white"))
    light_on_dark = to_mnist_digit(drawn_seven(ink="white", paper="black"))
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).max() <= 1


def test_tall_and_wide_strokes_keep_their_aspect():
    image = Image.new("L", (500, 500), 255)
    ImageDraw.Draw(image).rectangle([240, 50, 260, 450], fill=0)  # a '1': 21 x 401 pixels
    digit = to_mnist_digit(image)
    rows, cols = np.nonzero(digit > 0)
    assert rows.max() - rows.min() + 1 == 20
    assert cols.max() - cols.min() + 1 <= 3


@pytest.mark.parametrize("ink_rgba", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_rgba_png_on_transparent_sheet(tmp_path, ink_rgba):
    """Dark or light strokes on a fully transparent background both become the digit."""
    image = drawn_seven(ink=ink_rgba, paper=(0, 0, 0, 0), mode="RGBA")
    image.save(tmp_path / "seven.png")
    reference = to_mnist_digit(drawn_seven())
    digit = load_image(tmp_path / "seven.png")
    assert_mnist_like(digit)
    assert np.abs(digit.astype(int) - reference.astype(int)).max() <= 2


def test_palette_png(tmp_path):
    drawn_seven().convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert_mnist_like(load_image(tmp_path / "p.png"))


def test_palette_png_with_transparency(tmp_path):
    image = Image.new("P", (300, 300), 0)
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    ImageDraw.Draw(image).line([(150, 40), (150, 260)], fill=1, width=25)
    image.save(tmp_path / "p.png", transparency=0)
    assert_mnist_like(load_image(tmp_path / "p.png"))


def test_16_bit_png(tmp_path):
    pixels = (np.asarray(drawn_seven().convert("L"), dtype=np.uint16) * 257)  # 0..65535
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.array_equal(load_image(tmp_path / "deep.png"), to_mnist_digit(drawn_seven()))


def test_grey_alpha_and_jpeg(tmp_path):
    drawn_seven().convert("LA").save(tmp_path / "la.png")
    drawn_seven().save(tmp_path / "seven.jpg", quality=70)
    assert_mnist_like(load_image(tmp_path / "la.png"))
    assert_mnist_like(load_image(tmp_path / "seven.jpg"))


def test_large_image(tmp_path):
    drawn_seven(size=(3000, 2000)).save(tmp_path / "big.png")
    assert_mnist_like(load_image(tmp_path / "big.png"))


def test_arrays_of_other_dtypes_match_uint8():
    pixels = np.asarray(drawn_seven(size=(120, 160)).convert("L"))
    reference = to_mnist_digit(pixels)
    assert_mnist_like(reference)
    for same in (pixels.astype(np.float32) / 255, pixels.astype(np.int64), pixels[:, :, None],
                 np.repeat(pixels[:, :, None], 3, axis=2)):
        assert np.abs(to_mnist_digit(same).astype(int) - reference.astype(int)).max() <= 1


def huge_png_header(path, width=10_000, height=10_000) -> None:
    """A valid PNG that claims width x height pixels but holds only a few bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))


def bad_files(tmp_path):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    huge_png_header(tmp_path / "huge.png")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "blank.png")
    drawn_seven().save(tmp_path / "truncated.png")
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    return {
        "folder.png": "is a folder", "missing.png": "no such file", "empty.png": "empty file (0 bytes)",
        "notes.txt": "not an image", "fake.png": "corrupt image", "huge.png": "image too large: 10000x10000",
        "blank.png": "blank image", "truncated.png": "corrupt image",
    }


def test_bad_files_give_one_line_naming_the_file(tmp_path):
    for name, expected in bad_files(tmp_path).items():
        with pytest.raises(InputError) as caught:
            load_image(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(str(tmp_path / name) + ": ") and expected in message, message
        assert "\n" not in message
    assert MAX_PIXELS < 10_000 * 10_000


@pytest.mark.parametrize("array, expected", [
    (np.zeros((0, 28, 28), np.uint8), "empty batch"),
    (np.zeros((28, 28), np.uint8), "x[None]"),
    (np.zeros((2, 28, 27), np.uint8), "(2, 28, 27)"),
    (np.zeros((2, 28, 28, 3), np.uint8), "(2, 28, 28, 3)"),
    (np.full((1, 28, 28), np.nan, np.float32), "NaN"),
    (np.full((1, 28, 28), np.inf), "Inf"),
    (np.full((1, 28, 28), 300.0), "0-255"),
    (np.full((1, 28, 28), -1, np.int16), "0-255"),
    (np.full((1, 28, 28), 0.5), "[0, 1]"),
    (np.zeros((1, 28, 28), bool), "dtype"),
    (np.array([["x"] * 28] * 28)[None], "dtype"),
])
def test_check_batch_refuses(array, expected):
    with pytest.raises(InputError) as caught:
        check_batch(array)
    assert expected in str(caught.value)


def test_check_batch_accepts_and_normalises():
    x = np.arange(2 * 28 * 28).reshape(2, 28, 28, 1) % 256
    out = check_batch(x.astype(np.float64))
    assert out.dtype == np.uint8 and out.shape == (2, 28, 28) and np.array_equal(out, x[..., 0])
    same = np.zeros((3, 28, 28), np.uint8)
    assert check_batch(same) is same


def test_bad_arrays_give_input_error():
    for bad, expected in [(np.full((30, 30), np.nan), "NaN"), (np.zeros((5, 5, 7)), "(5, 5, 7)"),
                          (np.zeros((0, 4)), "no pixels"), (-np.ones((9, 9)), "negative"),
                          (np.full((9, 9), 1e6), "max is"), (np.zeros((9, 9), complex), "not a number"),
                          (np.zeros((20, 20)), "blank image")]:
        with pytest.raises(InputError) as caught:
            to_mnist_digit(bad)
        assert expected in str(caught.value)


def check_digit_or_input_error(image) -> None:
    try:
        digit = to_mnist_digit(image)
    except InputError:
        return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8 and digit.max() == 255


array_dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_])
array_shapes = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
                         st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 6)))


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(array_dtypes, array_shapes))
def test_fuzz_arrays_give_a_digit_or_input_error(array):
    check_digit_or_input_error(array)


@settings(max_examples=40, deadline=2000)
@given(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]),
       st.integers(1, 60), st.integers(1, 60), st.binary(min_size=0, max_size=4096))
def test_fuzz_pil_images_give_a_digit_or_input_error(mode, width, height, noise):
    image = Image.new(mode, (width, height))
    if noise:
        raw = (noise * (len(image.tobytes()) // len(noise) + 1))[: len(image.tobytes())]
        image.frombytes(raw)
    check_digit_or_input_error(image)
