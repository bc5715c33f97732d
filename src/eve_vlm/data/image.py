"""Image loading and the EVE resize rule (spec section 5): any resolution, aspect ratio kept.

The longest edge becomes `image_size`; the short edge is rounded UP to a multiple of
`size_multiple` (28, or 56 at 1344). No padding: the PEL sees exactly the valid image.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..config import CLIP_MEAN, CLIP_STD

ImageInput = str | Path | bytes | Image.Image | np.ndarray
IMAGE_PROCESSOR_CONFIG = "preprocessor_config.json"
# Refuse images over this many pixels before decoding them (decompression bombs); 0 disables.
DEFAULT_MAX_PIXELS = 64_000_000


# What Pillow's readers raise on damaged or hostile data (found by fuzzing: a corrupt header shows
# up as any of these, an absurd declared size as DecompressionBombError, which is no OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  struct.error, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image that cannot be used, with the reason (and the file, where there is one)."""


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any supported input -> an RGB PIL image with its EXIF orientation applied.

    Paths, bytes, PIL images and uint8/uint16/float arrays (H, W), (H, W, 3|4) are accepted;
    modes L, P, RGBA, LA, CMYK, I;16, I and F are converted; transparency is composited onto
    `background`.
    """
    name = str(source) if isinstance(source, str | Path) else type(source).__name__
    if isinstance(source, np.ndarray):
        image = Image.fromarray(_array_to_uint8(source))
    elif isinstance(source, Image.Image):
        image = source
    else:
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except FileNotFoundError as e:
            raise ImageError(f"{name}: no such image file") from e
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: refused before decoding ({e})") from e
        except _DECODE_ERRORS as e:  # UnidentifiedImageError is an OSError
            raise ImageError(f"{name}: not a readable image ({e})") from e
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: empty image ({width}x{height})")
    if max_pixels and width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height} pixels exceeds the limit "
                         f"of {max_pixels}")
    try:
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb(image, background)
    except _DECODE_ERRORS as e:  # truncated or corrupt data shows up on decode
        raise ImageError(f"{name}: cannot decode image ({e})") from e


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {array.shape} is not an image (H, W[, 3|4])")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):  # floats in [0, 1]
        if not np.isfinite(array).all():
            raise ImageError("image array holds NaN or infinite values")
        return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    raise ImageError(f"unsupported image array dtype {array.dtype}")


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        scale = 65535 if array.max(initial=0) > 255 else 255
        return Image.fromarray((np.clip(array, 0, scale) * 255 // scale).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(_array_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def target_size(height: int, width: int, image_size: int, size_multiple: int) -> tuple[int, int]:
    """(H, W) after the EVE resize: long edge `image_size`, short edge rounded up to `size_multiple`.

    Integer arithmetic, equal to the reference's ceil(336*s/l/14)*14 * image_size/336 at 672/1344.
    """
    if height < 1 or width < 1:
        raise ImageError(f"image size {width}x{height} is empty")
    units = image_size // size_multiple  # multiples that fit the long edge
    if height >= width:
        return image_size, size_multiple * max(1, math.ceil(width * units / height))
    return size_multiple * max(1, math.ceil(height * units / width)), image_size


@dataclass(frozen=True)
class EveImageProcessor:
    """Resize by the EVE rule and normalise: PIL/array/path -> (3, H, W) float tensor."""

    image_size: int = 672
    size_multiple: int = 28
    image_mean: Sequence[float] = field(default=CLIP_MEAN)
    image_std: Sequence[float] = field(default=CLIP_STD)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_mean", tuple(self.image_mean))
        object.__setattr__(self, "image_std", tuple(self.image_std))
        if self.image_size % self.size_multiple:
            raise ValueError(f"EveImageProcessor.image_size={self.image_size} must be a multiple of "
                             f"size_multiple={self.size_multiple}")

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return target_size(height, width, self.image_size, self.size_multiple)

    def resize(self, image: ImageInput) -> Image.Image:
        image = load_image(image, self.max_pixels)
        height, width = self.target_size(image.height, image.width)
        return image.resize((width, height), Image.Resampling.BICUBIC)

    def normalize(self, image: Image.Image) -> torch.Tensor:
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (array - mean) / std

    def __call__(self, image: ImageInput) -> torch.Tensor:
        return self.normalize(self.resize(image))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_mean": list(self.image_mean), "image_std": list(self.image_std),
                "image_processor_type": type(self).__name__}

    def save_pretrained(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / IMAGE_PROCESSOR_CONFIG).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EveImageProcessor:
        values = json.loads((Path(directory) / IMAGE_PROCESSOR_CONFIG).read_text())
        values.pop("image_processor_type", None)
        return cls(**values)
