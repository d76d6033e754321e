"""Procedurally generated 16x16 image tasks: ``shapes`` (RGB) and ``textures`` (grayscale).

Both are vectorised numpy, deterministic for a ``numpy.random.Generator``, and tuned so
that accuracy rises clearly with model capacity (random position, size, rotation, colour,
clutter, contrast, distractors and noise). Calibration, 4,000 train / 1,000 test, a
3-stage CNN of widths (w, 2w, 4w) trained 10 epochs with SGD: w=4 reaches about 70%
(shapes) and 76% (textures), w=16 about 87% and 88%.
Pixels come out on the [0, 1] scale as float32 (N, C, 16, 16).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

SIZE = 16
_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered: anti-aliased edges

SHAPE_CLASSES: tuple[str, ...] = (
    "disc",
    "ring",
    "square",
    "frame",
    "diamond",
    "triangle",
    "cross",
    "bar",
)
TEXTURE_CLASSES: tuple[str, ...] = (
    "grating-0",
    "grating-45",
    "grating-90",
    "grating-135",
    "checker",
    "dots",
    "rings",
    "blobs",
)

Pixels = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
_F = npt.NDArray[np.float64]


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> Labels:
    """``n`` labels, as equal per class as ``n`` allows, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % num_classes)


# --- shapes ---------------------------------------------------------------------------

# Each mask takes coordinates (p, q) in the shape's own frame (rotated, scaled by its
# radius) and says which points are inside.
_SHAPE_MASKS: dict[str, Callable[[_F, _F], npt.NDArray[np.bool_]]] = {
    "disc": lambda p, q: p**2 + q**2 <= 1.0,
    "ring": lambda p, q: (p**2 + q**2 <= 1.0) & (p**2 + q**2 >= 0.55**2),
    "square": lambda p, q: np.maximum(abs(p), abs(q)) <= 0.8,
    "frame": lambda p, q: (
        (np.maximum(abs(p), abs(q)) <= 0.85) & (np.maximum(abs(p), abs(q)) >= 0.45)
    ),
    "diamond": lambda p, q: abs(p) + abs(q) <= 1.1,
    "triangle": lambda p, q: (q <= 0.8) & (abs(p) <= (q + 0.9) / 1.7),
    "cross": lambda p, q: (
        ((abs(p) <= 0.28) & (abs(q) <= 0.95)) | ((abs(q) <= 0.28) & (abs(p) <= 0.95))
    ),
    "bar": lambda p, q: (abs(p) <= 1.0) & (abs(q) <= 0.25),
}
# Shapes whose class does not survive rotation turn only a little; the others any way.
_FREE_ROTATION = {"disc", "ring", "triangle", "bar"}


def shapes(n: int, rng: np.random.Generator) -> tuple[Pixels, Labels]:
    """``n`` RGB images (n, 3, 16, 16) in [0, 1] of :data:`SHAPE_CLASSES`, and their labels.

    One shape per image at a random position, radius, rotation and colour, on a
    background with a colour gradient, a few distractor specks and pixel noise.
    """
    y = balanced_labels(n, len(SHAPE_CLASSES), rng)
    s = SIZE * _SUPERSAMPLE
    grid = (np.arange(s) + 0.5) / _SUPERSAMPLE  # pixel-unit coordinates of subsamples
    cy = rng.uniform(5.0, 11.0, n)[:, None, None]
    cx = rng.uniform(5.0, 11.0, n)[:, None, None]
    radius = rng.uniform(4.0, 6.5, n)[:, None, None]
    jitter = rng.uniform(-0.3, 0.3, n)
    free = rng.uniform(0.0, 2 * np.pi, n)
    is_free = np.isin(y, [SHAPE_CLASSES.index(c) for c in _FREE_ROTATION])
    angle = np.where(is_free, free, jitter)[:, None, None]
    dy = grid[None, :, None] - cy
    dx = grid[None, None, :] - cx
    p = (np.cos(angle) * dx + np.sin(angle) * dy) / radius
    q = (-np.sin(angle) * dx + np.cos(angle) * dy) / radius
    mask = np.zeros((n, s, s), dtype=bool)
    for label, cls in enumerate(SHAPE_CLASSES):
        sel = y == label
        mask[sel] = _SHAPE_MASKS[cls](p[sel], q[sel])
    # Box filter the supersampled mask down to coverage fractions in [0, 1].
    cover = mask.reshape(n, SIZE, _SUPERSAMPLE, SIZE, _SUPERSAMPLE).mean(axis=(2, 4))

    background = _background(n, rng)
    fg = _contrasting_colour(background.mean(axis=(2, 3)), rng)
    img = background + cover[:, None] * (fg[:, :, None, None] - background)
    img = _add_specks(img, rng)
    img += rng.normal(0.0, 1.0, img.shape) * rng.uniform(0.02, 0.08, (n, 1, 1, 1))
    return np.clip(img, 0.0, 1.0).astype(np.float32), y


def _background(n: int, rng: np.random.Generator) -> _F:
    """(n, 3, 16, 16) backgrounds: a random colour plus a random linear gradient."""
    base = rng.uniform(0.1, 0.9, (n, 3, 1, 1))
    ramp = (np.arange(SIZE) - SIZE / 2) / SIZE
    gy = rng.uniform(-0.3, 0.3, (n, 3, 1, 1)) * ramp[None, None, :, None]
    gx = rng.uniform(-0.3, 0.3, (n, 3, 1, 1)) * ramp[None, None, None, :]
    return np.clip(base + gy + gx, 0.0, 1.0)


def _contrasting_colour(bg: _F, rng: np.random.Generator) -> _F:
    """(n, 3) colours at least a modest distance from each background colour ``bg``."""
    fg = rng.uniform(0.0, 1.0, bg.shape)
    diff = fg - bg
    dist = np.linalg.norm(diff, axis=1, keepdims=True)
    # Push colours that are too close straight away from the background.
    min_dist = rng.uniform(0.3, 0.6, (bg.shape[0], 1))
    direction = np.where(dist > 1e-6, diff / np.maximum(dist, 1e-6), 1.0 / np.sqrt(3.0))
    pushed = bg + direction * min_dist
    fg = np.where(dist < min_dist, pushed, fg)
    # Pushing may leave [0, 1]; reflect so the colour stays distinct after clipping.
    return np.where(fg > 1.0, 2.0 * bg - fg, np.where(fg < 0.0, 2.0 * bg - fg, fg)).clip(0, 1)


def _add_specks(img: _F, rng: np.random.Generator, max_specks: int = 4) -> _F:
    """Paint 0..max_specks random 1-2 px coloured specks on each image (clutter)."""
    n = img.shape[0]
    yy = np.arange(SIZE)[None, :, None]
    xx = np.arange(SIZE)[None, None, :]
    count = rng.integers(0, max_specks + 1, (n, 1, 1))
    for k in range(max_specks):
        on = count > k
        y0 = rng.integers(0, SIZE - 1, (n, 1, 1))
        x0 = rng.integers(0, SIZE - 1, (n, 1, 1))
        h = rng.integers(1, 3, (n, 1, 1))
        w = rng.integers(1, 3, (n, 1, 1))
        speck = on & (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        colour = rng.uniform(0.0, 1.0, (n, 3, 1, 1))
        img = np.where(speck[:, None], colour, img)
    return img


# --- textures -------------------------------------------------------------------------


def textures(n: int, rng: np.random.Generator) -> tuple[Pixels, Labels]:
    """``n`` grayscale images (n, 1, 16, 16) in [0, 1] of :data:`TEXTURE_CLASSES`, and labels.

    Every pattern has a random period, phase, small orientation jitter, contrast,
    brightness and noise level, under a weaker grating at a random orientation.
    ``grating-<deg>`` names the direction the wave travels: its stripes run perpendicular.
    """
    y = balanced_labels(n, len(TEXTURE_CLASSES), rng)
    yy = np.arange(SIZE, dtype=np.float64)[None, :, None]
    xx = np.arange(SIZE, dtype=np.float64)[None, None, :]
    period = rng.uniform(3.0, 7.0, n)[:, None, None]
    freq = 2 * np.pi / period
    phase = rng.uniform(0.0, 2 * np.pi, (n, 2))
    jitter = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    pattern = np.zeros((n, SIZE, SIZE))

    for k in range(4):  # oriented gratings at 0, 45, 90, 135 degrees
        sel = y == k
        theta = (np.pi / 4 * k + jitter[sel])[:, None, None]
        u = np.cos(theta) * xx + np.sin(theta) * yy
        pattern[sel] = np.sin(freq[sel] * u + phase[sel, 0, None, None])

    sel = y == TEXTURE_CLASSES.index("checker")
    theta = jitter[sel][:, None, None]
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    ph = phase[sel]
    pattern[sel] = np.tanh(
        3.0
        * np.sin(freq[sel] * u + ph[:, 0, None, None])
        * np.sin(freq[sel] * v + ph[:, 1, None, None])
    )

    sel = y == TEXTURE_CLASSES.index("dots")
    ph = phase[sel]
    cu = np.cos(freq[sel] * xx + ph[:, 0, None, None])
    cv = np.cos(freq[sel] * yy + ph[:, 1, None, None])
    pattern[sel] = 2.0 * ((cu + 1) * (cv + 1) / 4.0) ** 3 - 1.0  # bright spots on a lattice

    sel = y == TEXTURE_CLASSES.index("rings")
    m = int(sel.sum())
    cy = rng.uniform(-4.0, SIZE + 4.0, m)[:, None, None]
    cx = rng.uniform(-4.0, SIZE + 4.0, m)[:, None, None]
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    pattern[sel] = np.sin(freq[sel] * r + phase[sel, 0, None, None])

    sel = y == TEXTURE_CLASSES.index("blobs")
    pattern[sel] = _smooth_noise(int(sel.sum()), rng)

    contrast = rng.uniform(0.1, 0.4, n)[:, None, None]
    brightness = rng.uniform(0.3, 0.7, n)[:, None, None]
    noise = rng.normal(0.0, 1.0, (n, SIZE, SIZE)) * rng.uniform(0.05, 0.2, n)[:, None, None]
    # A weaker grating at a random orientation over every image: the class is the
    # dominant pattern, which takes more than a few oriented filters to tell apart.
    d_theta = rng.uniform(0.0, np.pi, n)[:, None, None]
    d_freq = 2 * np.pi / rng.uniform(2.5, 8.0, n)[:, None, None]
    d_u = np.cos(d_theta) * xx + np.sin(d_theta) * yy
    distractor = np.sin(d_freq * d_u + rng.uniform(0.0, 2 * np.pi, n)[:, None, None])
    pattern = pattern + rng.uniform(0.45, 0.75, n)[:, None, None] * distractor
    img = brightness + contrast * pattern + noise
    return np.clip(img, 0.0, 1.0)[:, None].astype(np.float32), y


def _smooth_noise(n: int, rng: np.random.Generator) -> _F:
    """(n, 16, 16) low-frequency noise in [-1, 1]: a random 5x5 grid upsampled bilinearly."""
    coarse = rng.uniform(-1.0, 1.0, (n, 5, 5))
    t = np.linspace(0.0, 4.0, SIZE)
    i = np.minimum(t.astype(int), 3)
    f = t - i
    rows: _F = coarse[:, i] * (1 - f)[None, :, None] + coarse[:, i + 1] * f[None, :, None]
    out: _F = rows[:, :, i] * (1 - f)[None, None, :] + rows[:, :, i + 1] * f[None, None, :]
    return out
