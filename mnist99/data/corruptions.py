"""MNIST-C-style corruptions of uint8 digits, chosen by name: the images the robustness report scores.

After Mu & Gilmer (2019, MNIST-C): each corruption is one function of a batch of float images in
[0, 1] and a numpy random generator, vectorised over the batch with numpy and scipy.ndimage, at one
fixed severity whose parameters sit beside its name in :data:`CORRUPTIONS` (docs/ROBUSTNESS.md has the
table). Each also says whether its family is *seen* -- training augmentation may imitate it
(:data:`mnist99.data.augment.CORRUPTION_FAMILIES`) -- or held out, so that robustness to what no
training step imitated is reported apart. :func:`corrupt` draws from a generator seeded by the seed and
the corruption's name: the same seed gives the same images, whatever else is corrupted alongside.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, signal

from mnist99.constants import IMAGE_SHAPE, IMAGE_SIZE
from mnist99.registry import Registry

CENTRE = (IMAGE_SIZE - 1) / 2  # 13.5: geometric corruptions keep the image centre where it is
_ROWS, _COLS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``fn(images, rng, **params)`` on float (N, 28, 28) in [0, 1]; ``seen`` if training
    augmentation may imitate its family, else it is held out of training."""

    name: str
    fn: Callable[..., np.ndarray]
    seen: bool
    params: dict = field(default_factory=dict)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.fn(images, rng, **self.params)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def _corruption(name: str, seen: bool, **params) -> Callable:
    """Register the decorated function as corruption ``name`` with its fixed ``params``."""
    def decorator(fn: Callable) -> Callable:
        CORRUPTIONS.register(name)(Corruption(name, fn, seen, params))
        return fn

    return decorator


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=n)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma), mode="constant")


def _warp(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Resample each image at ``inverse[i] @ (p - centre) + centre - shift[i]`` (bilinear, black outside):
    the content moves by the map inverse to ``inverse`` about the centre, then by ``shift`` (rows, cols).

    One ``map_coordinates`` call over the whole (N, 28, 28) volume, the image index an exact integer coordinate.
    """
    n = len(images)
    shift = np.zeros((n, 2), np.float32) if shift is None else shift
    offset = np.stack([_ROWS - CENTRE, _COLS - CENTRE])  # (2, 28, 28)
    source = np.einsum("nij,jhw->nihw", inverse, offset) + CENTRE - shift[:, :, None, None]
    index = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, *IMAGE_SHAPE))
    return ndimage.map_coordinates(images, [index, source[:, 0], source[:, 1]], order=1, mode="constant", cval=0.0)


def _strokes(rows: np.ndarray, cols: np.ndarray, keep: np.ndarray | None = None, width: float = 0.8) -> np.ndarray:
    """White strokes through the (N, S) sample points (densely spaced along each image's curve),
    anti-aliased by a Gaussian of ``width`` px: about 3 px wide, like MNIST's pen; ``keep`` drops samples (dashes)."""
    n = len(rows)
    r, c = np.rint(rows).astype(int), np.rint(cols).astype(int)
    inside = (r >= 0) & (r < IMAGE_SIZE) & (c >= 0) & (c < IMAGE_SIZE)
    if keep is not None:
        inside &= keep
    image = np.broadcast_to(np.arange(n)[:, None], r.shape)
    canvas = np.zeros((n, *IMAGE_SHAPE), np.float32)
    canvas[image[inside], r[inside], c[inside]] = 1.0
    # a 1-px line blurred by sigma peaks at 1 / (sqrt(2 pi) sigma): scale that back to full ink
    return np.clip(_blur(canvas, width) * np.sqrt(2 * np.pi) * width, 0.0, 1.0)


# --- noise ------------------------------------------------------------------------------------------

@_corruption("gaussian_noise", seen=True, sigma=0.3)
def gaussian_noise(x, rng, sigma):
    """Additive Gaussian noise of standard deviation ``sigma`` on every pixel (MNIST-C severity 4-5: 0.26-0.38)."""
    return x + rng.normal(0.0, sigma, x.shape).astype(np.float32)


@_corruption("shot_noise", seen=False, photons=3.0)
def shot_noise(x, rng, photons):
    """Poisson (photon) noise: each pixel is Poisson(``photons`` * x) / ``photons`` (MNIST-C: 3); the
    background stays black, strokes turn to speckle."""
    return rng.poisson(x * photons).astype(np.float32) / photons


@_corruption("impulse_noise", seen=False, amount=0.17)
def impulse_noise(x, rng, amount):
    """Salt and pepper: a share ``amount`` of the pixels set to black or white at random (MNIST-C: 0.17)."""
    hit = rng.random(x.shape) < amount
    return np.where(hit, (rng.random(x.shape) < 0.5).astype(np.float32), x)


# --- blur -------------------------------------------------------------------------------------------

@_corruption("gaussian_blur", seen=True, sigma=1.5)
def gaussian_blur(x, rng, sigma):
    """A Gaussian blur of ``sigma`` pixels (MNIST-C's levels: 1-6)."""
    return _blur(x, sigma)


@_corruption("motion_blur", seen=False, sigma=3.0, max_angle=45.0)
def motion_blur(x, rng, sigma, max_angle):
    """A one-sided trail, as a moving camera leaves: Gaussian weights of ``sigma`` px along a line at a
    random angle within +-``max_angle`` degrees of horizontal (MNIST-C: ImageMagick radius 10, sigma 3, +-45)."""
    half = int(np.ceil(3 * sigma))
    dr, dc = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle, len(x))).astype(np.float32)[:, None, None]
    along = dc * np.cos(angle) + dr * np.sin(angle)
    across = np.abs(dr * np.cos(angle) - dc * np.sin(angle))
    kernels = np.where(along >= 0, np.exp(-along**2 / (2 * sigma**2)), 0.0) * np.clip(1 - across, 0, 1)
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    return signal.fftconvolve(x, kernels, mode="same", axes=(1, 2))


@_corruption("glass_blur", seen=False, sigma=0.7, delta=1, iterations=2)
def glass_blur(x, rng, sigma, delta, iterations):
    """Frosted glass: blur by ``sigma``, move every pixel to a random neighbour within ``delta`` px,
    ``iterations`` times, blur again (MNIST-C severity 1: 0.7, 1, 2)."""
    x = _blur(x, sigma)
    image = np.arange(len(x))[:, None, None]
    for _ in range(iterations):
        dr, dc = rng.integers(-delta, delta + 1, (2, *x.shape))
        rows = np.clip(_ROWS.astype(int) + dr, 0, IMAGE_SIZE - 1)
        cols = np.clip(_COLS.astype(int) + dc, 0, IMAGE_SIZE - 1)
        x = x[image, rows, cols]
    return _blur(x, sigma)


# --- geometry ---------------------------------------------------------------------------------------

@_corruption("rotate", seen=True, degrees=23.0)
def rotate(x, rng, degrees):
    """A rotation by ``degrees`` about the centre, clockwise or anticlockwise at random (MNIST-C: 0.4 rad)."""
    angle = np.deg2rad(degrees) * _signs(rng, len(x))
    cos, sin = np.cos(angle), np.sin(angle)
    return _warp(x, np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1))


@_corruption("shear", seen=True, factor=0.4)
def shear(x, rng, factor):
    """A horizontal shear of ``factor`` (columns move by factor x rows from the centre), either way at
    random (MNIST-C: 0.4)."""
    f = factor * _signs(rng, len(x))
    ones, zeros = np.ones_like(f), np.zeros_like(f)
    return _warp(x, np.stack([np.stack([ones, zeros], -1), np.stack([f, ones], -1)], 1))


@_corruption("scale", seen=True, factor=0.7)
def scale(x, rng, factor):
    """The digit shrunk to ``factor`` of its size about the centre (MNIST-C: 0.7)."""
    return _warp(x, np.broadcast_to(np.eye(2, dtype=np.float32) / factor, (len(x), 2, 2)))


@_corruption("translate", seen=True, pixels=4.0)
def translate(x, rng, pixels):
    """A shift by ``pixels`` in a random direction (bilinear, so any angle moves the ink exactly that far)."""
    angle = rng.uniform(0, 2 * np.pi, len(x))
    shift = (pixels * np.stack([np.sin(angle), np.cos(angle)], -1)).astype(np.float32)
    return _warp(x, np.broadcast_to(np.eye(2, dtype=np.float32), (len(x), 2, 2)), shift)


# --- light ------------------------------------------------------------------------------------------

@_corruption("brightness", seen=True, offset=0.4)
def brightness(x, rng, offset):
    """Every pixel raised by ``offset``: a grey background under the digit (MNIST-C: 0.1-0.5)."""
    return x + offset


@_corruption("contrast", seen=True, factor=0.3)
def contrast(x, rng, factor):
    """Contrast cut to ``factor`` about each image's mean: a dim digit on a grey background (MNIST-C: 0.05-0.4)."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * factor + mean


@_corruption("fog", seen=False, strength=1.5, decay=0.7)
def fog(x, rng, strength, decay):
    """Fractal fog: random grids of 2, 4, 7 and 14 cells a side upsampled and summed, each octave
    ``decay`` times the one before, stretched to [0, 1]; added ``strength`` times, then the sum scaled by
    peak / (peak + ``strength``) so nothing outshines the digit's brightest pixel (MNIST-C adds its
    plasma fractal the same way: strength 1.5-3)."""
    octaves = [ndimage.zoom(rng.random((len(x), cells, cells), dtype=np.float32), (1, IMAGE_SIZE / cells,
                            IMAGE_SIZE / cells), order=1, grid_mode=True, mode="nearest") * decay**k
               for k, cells in enumerate((2, 4, 7, 14))]
    haze = sum(octaves)
    haze -= haze.min(axis=(1, 2), keepdims=True)
    haze /= haze.max(axis=(1, 2), keepdims=True)
    peak = x.max(axis=(1, 2), keepdims=True)
    return (x + strength * haze) * peak / (peak + strength)


# --- occluders and strokes --------------------------------------------------------------------------

@_corruption("stripe", seen=True, width=7)
def stripe(x, rng, width):
    """The outer ``width`` columns on either side inverted: white bands at the edges (MNIST-C: 7)."""
    x = x.copy()
    x[:, :, :width] = 1.0 - x[:, :, :width]
    x[:, :, -width:] = 1.0 - x[:, :, -width:]
    return x


@_corruption("occlusion", seen=True, size=8, spread=4)
def occlusion(x, rng, size, spread):
    """A black ``size`` x ``size`` box hiding part of the stroke, its centre within +-``spread`` px of the
    image centre (where MNIST's digits are)."""
    low = IMAGE_SIZE // 2 - size // 2
    top, left = rng.integers(low - spread, low + spread + 1, (2, len(x)))[:, :, None, None]
    box = (_ROWS >= top) & (_ROWS < top + size) & (_COLS >= left) & (_COLS < left + size)
    return np.where(box, 0.0, x)


@_corruption("dotted_line", seen=True, dash=2)
def dotted_line(x, rng, dash):
    """A dashed white line across the image, end rows at random, ``dash`` px on, ``dash`` px off (MNIST-C: 2)."""
    cols = np.linspace(0, IMAGE_SIZE - 1, 10 * IMAGE_SIZE, dtype=np.float32)[None, :]
    start, end = rng.uniform(0, IMAGE_SIZE - 1, (2, len(x), 1))
    rows = start + (end - start) * cols / (IMAGE_SIZE - 1)
    cols = np.broadcast_to(cols, rows.shape)
    return x + _strokes(rows, cols, keep=np.floor(cols / dash) % 2 == 1)


@_corruption("zigzag", seen=True, amplitude=2.0, period=8.0, max_rise=5.0)
def zigzag(x, rng, amplitude, period, max_rise):
    """A white zigzag (triangle wave of ``amplitude`` px and ``period`` px) from column 2 to 25, at a
    random row, tilted by up to +-``max_rise`` rows (MNIST-C: 2, 8, 5)."""
    cols = np.linspace(2, IMAGE_SIZE - 3, 10 * IMAGE_SIZE, dtype=np.float32)[None, :]
    start = rng.uniform(0, IMAGE_SIZE - 1, (len(x), 1))
    rise = rng.uniform(-max_rise, max_rise, (len(x), 1))
    wave = 2 * amplitude / np.pi * np.arcsin(np.sin(2 * np.pi * (cols - 2) / period))
    rows = start + rise * (cols - 2) / (IMAGE_SIZE - 5) + wave
    return x + _strokes(rows, np.broadcast_to(cols, rows.shape))


@_corruption("thicken", seen=False, size=3)
def thicken(x, rng, size):
    """Strokes thickened by a grey dilation over a ``size`` x ``size`` square (a broad pen, a bold scan)."""
    return ndimage.grey_dilation(x, size=(1, size, size))


@_corruption("thin", seen=False, size=2)
def thin(x, rng, size):
    """Strokes thinned by a grey erosion over a ``size`` x ``size`` square (a fine pen, a faint scan)."""
    return ndimage.grey_erosion(x, size=(1, size, size))


# --- the public API ---------------------------------------------------------------------------------

def names(seen: bool | None = None) -> list[str]:
    """The corruption names in registry order; only the seen (or only the held-out) ones when ``seen`` is given."""
    return [n for n in CORRUPTIONS.names() if seen is None or CORRUPTIONS.get(n).seen == seen]


def check_digits(images: np.ndarray) -> np.ndarray:
    """``images`` as a uint8 (N, 28, 28) array; ValueError naming the shape or dtype otherwise."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"corruptions take uint8 digits of shape (N, 28, 28), got {images.dtype} {images.shape}")
    return images


def corrupt(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """The uint8 (N, 28, 28) ``images`` corrupted by ``name``; the same seed gives the same images.

    Raises ConfigError for an unknown name (listing the valid ones), ValueError for images that are not
    uint8 (N, 28, 28).
    """
    corruption = CORRUPTIONS.get(name)
    x = check_digits(images).astype(np.float32) / 255.0
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = corruption(x, rng)
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
