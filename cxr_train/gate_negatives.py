"""Generated negatives for the input gate: images that are plainly not radiographs.

The real negatives of ``ood/`` are few (212) and narrow (hands, CT slices, laterals, a few photos
and pages). What users actually feed a classifier by mistake is broader: screenshots, scanned
pages, test patterns, noise, blank exports, phone photos. Each kind below is drawn with random
size, aspect, contrast and colour so the gate learns "not a chest film" rather than "not one of
these 212 files". numpy and OpenCV only (no torch): tests and benchmarks use them too.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Generator = Callable[[np.random.Generator, int, int], np.ndarray]
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
WORDS = "the patient study report page figure table result normal value date name chest series image".split()


def uniform_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Clouds: Gaussian noise blurred at a random scale (fog, out-of-focus photos)."""
    field = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    sigma = float(rng.uniform(1.0, min(h, w) / 6))
    return _to_uint8(cv2.GaussianBlur(field, (0, 0), sigma))


def gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear or radial ramp with a little noise (blank exports, vignetted scans)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ramp = np.hypot(yy - cy, xx - cx) / max(h, w)
    return _to_uint8(ramp + rng.normal(0, 0.02, (h, w)).astype(np.float32))


def pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes, checkerboards and grids (test patterns, calibration phantoms, screens)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(4, max(h, w) / 3))
    angle = rng.uniform(0, np.pi)
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / period
    kind = rng.integers(3)
    if kind == 0:
        image = np.sin(2 * np.pi * u)
    elif kind == 1:
        image = np.sign(np.sin(np.pi * u) * np.sin(np.pi * v))
    else:
        image = np.maximum(np.abs(np.sin(np.pi * u)), np.abs(np.sin(np.pi * v))) ** 8
    return _to_uint8(image)


def text_page(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rendered page, form or table of random words (scans, screenshots, reports)."""
    dark_on_light = rng.random() < 0.8
    background, ink = (int(rng.integers(200, 256)), int(rng.integers(0, 80)))
    if not dark_on_light:
        background, ink = ink, background
    page = np.full((h, w), background, dtype=np.uint8)
    scale = float(rng.uniform(0.3, 1.2))
    font = FONTS[rng.integers(len(FONTS))]
    step = max(8, int(30 * scale))
    margin = int(rng.integers(2, max(3, w // 8)))
    for y in range(margin + step, h - margin, step):
        line = " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=int(rng.integers(2, 14))))
        cv2.putText(page, line, (margin, y), font, scale, ink, 1 + int(rng.random() < 0.3), cv2.LINE_AA)
    if rng.random() < 0.4:
        for x in np.linspace(margin, w - margin, int(rng.integers(2, 7))).astype(int):
            cv2.line(page, (int(x), margin), (int(x), h - margin), ink, 1)
    return page


def shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random filled ellipses, rectangles and lines on a background (clip art, diagrams)."""
    image = np.full((h, w), int(rng.integers(0, 256)), dtype=np.uint8)
    for _ in range(int(rng.integers(3, 25))):
        colour = int(rng.integers(0, 256))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = (int(rng.integers(3, max(4, w // 3))), int(rng.integers(3, max(4, h // 3))))
        kind = rng.integers(3)
        if kind == 0:
            cv2.ellipse(image, (cx, cy), size, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        elif kind == 1:
            cv2.rectangle(image, (cx, cy), (cx + size[0], cy + size[1]), colour, -1)
        else:
            cv2.line(image, (cx, cy), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 8)))
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 4)))
    return image


def photo_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colour scene stand-in: sky-to-ground gradient, textured blobs and edges, in BGR."""
    channels = [
        cv2.addWeighted(gradient(rng, h, w), 0.5, shapes(rng, h, w), 0.5, 0) for _ in range(3)
    ]
    image = np.dstack(channels)
    texture = rng.normal(0, float(rng.uniform(2, 20)), image.shape)
    return np.clip(image + texture, 0, 255).astype(np.uint8)


def near_blank(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A flat image with faint noise or a faint ramp: what a failed export looks like."""
    level = float(rng.uniform(0, 255))
    faint = rng.normal(0, float(rng.uniform(0.5, 6)), (h, w)) + level
    return np.clip(faint, 0, 255).astype(np.uint8)


GENERATORS: dict[str, Generator] = {
    "uniform_noise": uniform_noise,
    "smooth_noise": smooth_noise,
    "gradient": gradient,
    "pattern": pattern,
    "text_page": text_page,
    "shapes": shapes,
    "photo_like": photo_like,
    "near_blank": near_blank,
}


def generate(kind: str, seed: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image of ``kind``; ``size`` (h, w) or a random one with a plausible aspect ratio."""
    rng = np.random.default_rng(seed)
    h, w = size or _random_size(rng)
    return GENERATORS[kind](rng, h, w)


def generate_many(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` images cycling through every kind, each with its own seed derived from ``seed``."""
    kinds = list(GENERATORS)
    seeds = np.random.default_rng(seed).integers(0, 2**31, size=n)
    return [(kinds[i % len(kinds)], generate(kinds[i % len(kinds)], int(s))) for i, s in enumerate(seeds)]


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(128, 640))
    aspect = float(rng.uniform(0.6, 1.7))
    return (short, int(short * aspect)) if rng.random() < 0.5 else (int(short * aspect), short)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((values - lo) * scale).astype(np.uint8)
