"""Synthetic CelebA: procedural cartoon faces in exactly CelebA's file layout.

A stand-in for offline demos and CI. The zip holds `img_align_celeba/000001.jpg ...` (178x218
RGB JPEGs, faces placed where CelebA's aligned faces are) and its comment marks it synthetic
(docs/contracts.md), so every later stage runs on it unchanged and labels what it produces.

Each image is drawn from its own numpy Generator seeded by (seed, index), so image k is the
same whatever the number of images, and the zip is byte-identical for the same arguments.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from sagan.atomic import atomic_path

WIDTH, HEIGHT = 178, 218  # CelebA aligned image size
ZIP_DIR = "img_align_celeba"
COMMENT_PREFIX = b"sagan-synthetic-celeba v1"
# Fixed zip timestamp: the archive must not depend on when it was written.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
JPEG_QUALITY = 90

# Palettes: per-image choices plus jitter give variation that a small GAN can learn.
SKIN_TONES = np.array([(255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 92),
                       (141, 85, 56), (96, 60, 40)], dtype=float)
HAIR_COLOURS = np.array([(20, 16, 14), (60, 38, 24), (112, 72, 40), (196, 156, 92),
                         (150, 64, 30), (168, 166, 162)], dtype=float)
IRIS_COLOURS = np.array([(70, 42, 20), (40, 90, 150), (60, 110, 60), (30, 24, 20)], dtype=float)


def image_name(index: int) -> str:
    """CelebA's file name of the 0-based image `index` (`000001.jpg` is index 0)."""
    return f"{index + 1:06d}.jpg"


def partition_of(index: int, n_images: int) -> int:
    """CelebA-like split by position: first 80% train (0), next 10% valid (1), last 10% test (2)."""
    if index < int(n_images * 0.8):
        return 0
    return 1 if index < int(n_images * 0.9) else 2


def _colour(rgb: np.ndarray) -> tuple[int, int, int]:
    r, g, b = np.clip(np.rint(rgb), 0, 255).astype(int)
    return int(r), int(g), int(b)


def _jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> np.ndarray:
    return rgb + rng.normal(0.0, amount, 3)


def draw_face(seed: int, index: int) -> Image.Image:
    """The synthetic face number `index` (0-based) for `seed`: a 178x218 RGB image."""
    rng = np.random.default_rng([seed, index])

    # Background: a vertical gradient between two random colours.
    top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp) * np.ones((1, WIDTH, 1))
    img = Image.fromarray(background.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    # Head geometry around CelebA's aligned face centre (the 160x160 centre crop spans
    # x 9..169, y 29..189; the head fills most of it).
    cx, cy = WIDTH / 2 + rng.normal(0, 4), 116 + rng.normal(0, 4)
    a, b = rng.uniform(39, 49), rng.uniform(51, 61)  # half width, half height
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 8)
    shade = skin * 0.8
    hair = _jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 10)
    long_hair = rng.random() < 0.5
    volume = rng.uniform(3, 14)

    if long_hair:  # hair behind the head, falling to the shoulders
        draw.rounded_rectangle((cx - a - volume, cy - b * 0.4, cx + a + volume, cy + b + rng.uniform(10, 40)),
                               radius=20, fill=_colour(hair))
    # Shoulders, clothes and neck.
    clothes = rng.uniform(20, 235, 3)
    draw.ellipse((cx - rng.uniform(75, 95), cy + b + 12, cx + rng.uniform(75, 95), cy + b + 140),
                 fill=_colour(clothes))
    draw.rectangle((cx - a * 0.45, cy + b * 0.6, cx + a * 0.45, cy + b + 22), fill=_colour(shade))
    # Ears, then the hair cap, then the face over the lower part of the cap.
    ear_y = cy - b * 0.05
    for side in (-1, 1):
        draw.ellipse((cx + side * a - 7, ear_y - 11, cx + side * a + 7, ear_y + 11), fill=_colour(shade))
    draw.ellipse((cx - a - volume * 0.6, cy - b - volume, cx + a + volume * 0.6, cy + b * 0.2), fill=_colour(hair))
    hairline = b * rng.uniform(0.45, 0.75)  # distance of the hairline above the centre
    draw.chord((cx - a, cy - b, cx + a, cy + b), 0, 180, fill=_colour(skin))
    draw.ellipse((cx - a, cy - hairline - b * 0.25, cx + a, cy + b * 0.35), fill=_colour(skin))

    # Eyes, irises, pupils and brows.
    eye_y = cy - b * rng.uniform(0.05, 0.18)
    eye_dx = a * rng.uniform(0.36, 0.46)
    eye_rx, eye_ry = rng.uniform(6.5, 9.5), rng.uniform(3.5, 6)
    iris = _jitter(rng, IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], 10)
    iris_r = min(eye_ry, rng.uniform(3.0, 4.5))
    gaze = rng.uniform(-2.5, 2.5)
    brow_lift, brow_tilt, brow_width = rng.uniform(8, 14), rng.uniform(-3, 3), rng.integers(2, 6)
    brow = hair * 0.7
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - eye_rx, eye_y - eye_ry, ex + eye_rx, eye_y + eye_ry), fill=(245, 245, 240))
        ix = ex + gaze
        draw.ellipse((ix - iris_r, eye_y - iris_r, ix + iris_r, eye_y + iris_r), fill=_colour(iris))
        draw.ellipse((ix - 1.5, eye_y - 1.5, ix + 1.5, eye_y + 1.5), fill=(10, 10, 10))
        by = eye_y - brow_lift
        draw.line((ex - side * eye_rx * 1.1, by + brow_tilt, ex + side * eye_rx * 1.2, by - brow_tilt),
                  fill=_colour(brow), width=int(brow_width))

    # Nose and mouth.
    nose_y = cy + b * rng.uniform(0.2, 0.32)
    nose_w = rng.uniform(3, 7)
    draw.polygon([(cx, eye_y + 6), (cx - nose_w, nose_y), (cx + nose_w, nose_y)], fill=_colour(shade))
    mouth_y = cy + b * rng.uniform(0.5, 0.62)
    mouth_w = a * rng.uniform(0.3, 0.55)
    lips = _jitter(rng, np.array([170.0, 60.0, 70.0]), 20)
    if rng.random() < 0.5:  # closed smile
        curve = rng.uniform(3, 10)
        draw.arc((cx - mouth_w, mouth_y - curve, cx + mouth_w, mouth_y + curve), 10, 170,
                 fill=_colour(lips), width=3)
    else:  # open mouth with teeth
        open_h = rng.uniform(4, 10)
        draw.ellipse((cx - mouth_w, mouth_y - open_h, cx + mouth_w, mouth_y + open_h), fill=_colour(lips))
        draw.ellipse((cx - mouth_w * 0.75, mouth_y - open_h * 0.6, cx + mouth_w * 0.75, mouth_y + open_h * 0.2),
                     fill=(235, 230, 220))

    # Mild blur and sensor-like noise, so images are not flat-shaded vector art.
    img = img.filter(ImageFilter.BoxBlur(1))
    noisy = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (HEIGHT, WIDTH, 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # JPEGs do not compress; stored reads fastest
    info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else (0o644 << 16)
    return info


def write_synthetic_celeba(zip_path: Path, partition_path: Path, n_images: int, seed: int) -> None:
    """Write `n_images` synthetic faces as CelebA's zip and partition file (both atomically)."""
    with atomic_path(zip_path) as tmp_zip:
        with zipfile.ZipFile(tmp_zip, "w") as zf:
            zf.comment = COMMENT_PREFIX + f" seed={seed} n={n_images} (procedural stand-in, not CelebA)".encode()
            zf.writestr(_zip_info(f"{ZIP_DIR}/"), b"")
            for index in tqdm(range(n_images), desc="synthetic faces", unit="img"):
                zf.writestr(_zip_info(f"{ZIP_DIR}/{image_name(index)}"), _jpeg_bytes(draw_face(seed, index)))
    with atomic_path(partition_path) as tmp_partition:
        tmp_partition.write_text("".join(f"{image_name(i)} {partition_of(i, n_images)}\n" for i in range(n_images)))


def is_synthetic_zip(path: Path) -> bool:
    """True if `path` is a zip written by `write_synthetic_celeba` (its comment says so)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.comment.startswith(COMMENT_PREFIX)
    except (zipfile.BadZipFile, OSError):
        return False
