"""Images in, MNIST-style digits out: the preprocessing behind ``mnist99 predict`` and its input checks.

MNIST digits are white ink on black, fitted into a 20x20 box (aspect kept) and placed in a 28x28
field so that their centre of mass sits at the centre. A user's photo or drawing is rarely like
that: any size, any mode (RGBA, palette, 16-bit), usually dark ink on white paper. ``to_mnist_digit``
closes that gap; ``load_image`` adds the file checks; ``check_batch`` guards arrays given to a model.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist99.errors import InputError

MAX_PIXELS = 50_000_000  # ~7000x7000: more is almost surely a mistake (or a decompression bomb)
BOX = 20  # MNIST fits each digit into 20x20 ...
FIELD = 28  # ... and centres it by mass in 28x28
MIN_CONTRAST = 0.1  # ink must stand out from the background by 10% of full scale, else "blank"
INK_LEVEL = 0.2  # pixels above this (after contrast stretch) bound the digit; fainter ones are noise
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, the weights Pillow's convert("L") uses
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # convert("L") would clip these at 255
WORK_SIZE = 2048  # larger images are box-reduced to about this before any float work


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, ... any size Pillow reads) as an MNIST-style (28, 28) uint8 digit.

    Raises InputError, one line naming the file, for a missing path, a folder, an empty or
    non-image file, an image over ``MAX_PIXELS`` and an image without ink.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours is lower and checked before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(image.width, image.height)
                image.load()
                return to_mnist_digit(image)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...)") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image larger than Pillow's safety limit (decompression bomb?)") from None
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data; SyntaxError: broken headers
        raise InputError(f"{path}: corrupt image ({exc})") from None


def check_size(width: int, height: int) -> None:
    """Refuse images with no pixels or more than ``MAX_PIXELS``, before any pixel is decoded."""
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(f"image too large: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                         f"the limit is {MAX_PIXELS / 1e6:.0f}")


def to_mnist_digit(image: Image.Image | np.ndarray) -> np.ndarray:
    """Turn any image into an MNIST-style digit: (28, 28) uint8, bright ink on black, centred by mass.

    Steps: grayscale (alpha composited on a background that contrasts with the ink); invert
    when the border is light (dark ink on paper); subtract the background and stretch the
    contrast; crop to the ink; resize to fit 20x20 keeping the aspect (Pillow, Lanczos); paste
    so the centre of mass is at the centre of the 28x28 field (kept fully inside it).

    Arrays may be (H, W) or (H, W, C) with C = 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA, of bool,
    integers (uint8, and values up to 255, read as 8-bit; uint16 and other integers up to 65535
    as 16-bit) or floats ([0, 1] when the maximum is at most 1, else [0, 255]). Raises
    InputError for anything else, for NaN/Inf, and for an image without ink.
    """
    gray = _gray(_as_array(image))
    ink = _ink(gray)
    rows, cols = np.nonzero(ink > INK_LEVEL)
    crop = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    digit = _fit_box(crop)
    return _centre_by_mass(digit)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Pixels as a numpy array: gray+alpha (LA) when the image has transparency, L or 16-bit/float otherwise.

    Images over ``WORK_SIZE`` on their longer side are box-reduced first (Pillow's ``reduce``):
    a 20x20 digit needs no more, and it keeps the float copies below small for 50-megapixel input.
    """
    if isinstance(image, np.ndarray):
        return image
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    check_size(image.width, image.height)
    sixteen_bit = image.mode.startswith("I;16")  # Pillow cannot reduce I;16; "I" holds the same values
    try:
        if image.mode in HIGH_BIT_MODES:
            image = image.convert("I") if sixteen_bit else image
        elif "A" in image.mode or "a" in image.mode or "transparency" in image.info:
            image = image.convert("RGBA").convert("LA")  # via RGBA: palettes and premultiplied modes too
        else:
            image = image.convert("L")
    except ValueError as exc:
        raise InputError(f"unsupported image mode {image.mode}: {exc}") from None
    factor = -(-max(image.size) // WORK_SIZE)
    if factor > 1:
        image = image.reduce(factor)
    pixels = np.asarray(image)
    return pixels.astype(np.uint16) if sixteen_bit else pixels


def _gray(pixels: np.ndarray) -> np.ndarray:
    """(H, W[, C]) pixels of any supported dtype -> float32 (H, W) in [0, 1], alpha composited."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (2, 3, 4)):
        raise InputError(f"image array must be (H, W) or (H, W, C) with C in 1-4, got {pixels.shape}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise InputError(f"image has no pixels (shape {pixels.shape})")
    check_size(pixels.shape[1], pixels.shape[0])
    values = _unit_range(pixels)
    if values.ndim == 2:
        return values
    gray = values[:, :, 0] if values.shape[2] == 2 else values[:, :, :3] @ LUMA
    if values.shape[2] == 3:
        return gray
    alpha = values[:, :, -1]
    if alpha.min() == 1.0:
        return gray
    # Transparent pixels take the colour that contrasts with what is drawn (the opaque part):
    # dark strokes on a transparent sheet land on white, light strokes on black.
    opaque = alpha.sum()
    light_ink = opaque > 0 and (gray * alpha).sum() / opaque > 0.5
    return gray * alpha + (0.0 if light_ink else 1.0) * (1.0 - alpha)


def _unit_range(pixels: np.ndarray) -> np.ndarray:
    """Scale pixel values to float32 [0, 1] by their full scale: 1 (bool, floats <= 1), 255 or 65535."""
    kind = pixels.dtype.kind
    if kind not in "buif":
        raise InputError(f"image array dtype {pixels.dtype} is not a number type")
    if kind == "f" and not np.isfinite(pixels).all():
        raise InputError("image array contains NaN or Inf")
    low, high = float(pixels.min()), float(pixels.max())  # before any cast: float64 may overflow float32
    if low < 0:
        raise InputError(f"image array has negative values (min {low:g})")
    if kind == "b" or (kind == "f" and high <= 1):
        full_scale = 1.0
    elif kind == "f" and high > 255:
        raise InputError(f"float image values must lie in [0, 1] or [0, 255], max is {high:g}")
    elif kind == "f" or pixels.dtype == np.uint8 or (pixels.dtype != np.uint16 and high <= 255):
        full_scale = 255.0
    elif high <= 65535:
        full_scale = 65535.0
    else:
        raise InputError(f"integer image values must be at most 65535 (16-bit), max is {high:g}")
    return pixels.astype(np.float32) / np.float32(full_scale)


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] over a zero background: inverted when dark-on-light, contrast-stretched.

    The background is the median of the border pixels (a digit rarely touches all four edges).
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = 1.0 - gray if background > 0.5 else gray
    ink = np.clip(ink - min(background, 1.0 - background), 0.0, 1.0)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise InputError(f"blank image: no ink stands out from the background (contrast {peak:.2f} "
                         f"< {MIN_CONTRAST})")
    return ink / peak


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Resize so the longer side is ``BOX`` pixels (aspect kept, Lanczos), then restretch to peak 1.

    The restretch keeps thin strokes on big canvases from fading into grey when downsampled.
    """
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    out = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
    peak = out.max()
    return out / peak if peak > 0 else np.ones_like(out)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place ``digit`` (at most 20x20) in a 28x28 black field with its centre of mass at the centre."""
    height, width = digit.shape
    total = digit.sum()
    com_row = (digit.sum(axis=1) @ np.arange(height)) / total
    com_col = (digit.sum(axis=0) @ np.arange(width)) / total
    centre = (FIELD - 1) / 2
    top = int(np.clip(round(centre - com_row), 0, FIELD - height))
    left = int(np.clip(round(centre - com_col), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD), dtype=np.float64)
    field[top: top + height, left: left + width] = digit
    return np.round(field * 255).astype(np.uint8)


def check_batch(array: np.ndarray) -> np.ndarray:
    """Validate a batch for prediction and return it as uint8 (N, 28, 28).

    Accepted: (N, 28, 28) or (N, 28, 28, 1) with N >= 1, of uint8, or of another integer or
    float dtype holding pixel values 0-255 (floats are rounded). Refused with InputError naming
    the problem: other shapes, an empty batch, NaN/Inf, values outside 0-255, non-number dtypes,
    and float batches that look scaled to [0, 1] (the models normalise uint8 pixels themselves).
    """
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (FIELD, FIELD):
        hint = "; for one image use x[None]" if array.shape == (FIELD, FIELD) else ""
        raise InputError(f"batch must have shape (N, 28, 28) or (N, 28, 28, 1), got {array.shape}{hint}")
    if array.shape[0] == 0:
        raise InputError("empty batch: no images to predict (N = 0)")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "uif":
        raise InputError(f"batch dtype must be uint8 (or integers/floats 0-255), got {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "Inf"
        raise InputError(f"batch contains {bad} at {np.argwhere(~np.isfinite(array))[0].tolist()}")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise InputError(f"batch values must lie in 0-255, got min {low:g} max {high:g}")
    if array.dtype.kind == "f" and 0 < high <= 1:
        raise InputError(f"float batch looks scaled to [0, 1] (max {high:g}); pass pixel values 0-255 (uint8)")
    return np.round(array).astype(np.uint8)
