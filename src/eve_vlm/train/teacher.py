"""The frozen vision teacher of the aligner (spec section 4), owned by the training code.

Any transformers vision model (CLIP vision tower, DINOv2, SigLIP): the image is resized so that
one teacher patch covers the area of one EVE token (or of r x r tokens at HD), features come from
a chosen hidden state, prefix tokens (CLS, registers) are dropped, and only valid patches are kept.
It runs in eval mode under no_grad; it is never saved with the model. `TeacherCache` keeps its
features on disk for the epochs after the first.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from ..config import CLIP_MEAN, CLIP_STD
from .recipe import TeacherSpec

logger = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherInput:
    """The teacher's copy of an image (runs in the data pipeline; small enough to send to workers)."""

    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    pad_to_square: bool
    scale: int = 1

    def __call__(self, image: Image.Image, grid: tuple[int, int]) -> torch.Tensor:
        """Resize so the teacher sees `grid` (rows, cols) x `scale` patches; normalise; pad if asked."""
        rows, cols = grid
        height, width = rows * self.scale * self.patch_size, cols * self.scale * self.patch_size
        if self.pad_to_square and max(height, width) > self.image_size:
            raise ValueError(f"teacher grid {rows}x{cols} (x{self.scale}) exceeds its {self.image_size} px canvas")
        resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        pixels = (pixels - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        if self.pad_to_square:  # the mean colour normalises to 0; valid patches stay top-left
            canvas = torch.zeros(3, self.image_size, self.image_size)
            canvas[:, :height, :width] = pixels
            return canvas
        return pixels


class VisionTeacher(nn.Module):
    """Frozen vision encoder -> patch features on the EVE grid."""

    def __init__(self, encoder: nn.Module, layer: int, patch_size: int, mean: Sequence[float],
                 std: Sequence[float], image_size: int, pad_to_square: bool, scale: int = 1) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.layer = layer
        self.patch_size = patch_size
        self.scale = scale
        self.transform = TeacherInput(patch_size, tuple(mean), tuple(std), image_size, pad_to_square, scale)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(encoder.forward).parameters
        super().train(False)

    @property
    def width(self) -> int:
        return self.encoder.config.hidden_size

    @classmethod
    def from_spec(cls, spec: TeacherSpec) -> VisionTeacher:
        from ..assets import resolve_model_path

        path = resolve_model_path(spec.path)  # e.g. dinov2-small, the demo's offline teacher
        config = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
        if hasattr(encoder, "vision_model") and config.model_type in ("clip", "siglip", "siglip2"):
            encoder = encoder.vision_model  # a full CLIP/SigLIP: keep the vision tower
        mean, std = spec.mean, spec.std
        if mean is None or std is None:
            mean, std = _default_normalisation(path, config.model_type)
        patch_size = getattr(encoder.config, "patch_size", spec.patch_size)
        logger.info("teacher %s (%s): layer %d, %d px, patch %d, scale %d", spec.path, config.model_type,
                    spec.layer, spec.image_size, patch_size, spec.scale)
        return cls(encoder, spec.layer, patch_size, mean, std, spec.image_size, spec.pad_to_square, spec.scale)

    def train(self, mode: bool = True) -> VisionTeacher:  # the teacher never leaves eval mode
        return super().train(False)

    # --- model side ----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor | Sequence[torch.Tensor],
                grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Teacher pixels (one per image) -> (sum of rows*cols, Ct), images in order, row-major.

        `grids` are EVE grids; with `scale` s the teacher's s x s patches of each cell are averaged."""
        images = list(pixel_values.unbind(0)) if isinstance(pixel_values, torch.Tensor) else list(pixel_values)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
        features: list[torch.Tensor | None] = [None] * len(images)
        for indices in by_size.values():
            batch = torch.stack([images[i] for i in indices])
            grid = self._features(batch)  # (B, Gh, Gw, Ct)
            s = self.scale
            for i, feature in zip(indices, grid):
                rows, cols = grids[i]
                cells = feature[:rows * s, :cols * s].reshape(rows, s, cols, s, -1)
                features[i] = (cells.mean(dim=(1, 3)) if s > 1 else cells).reshape(rows * cols, -1)
        return torch.cat(features)  # type: ignore[arg-type]

    def _features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p, W/p, Ct) from the chosen hidden state, prefix tokens dropped."""
        param = next(self.encoder.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[self.layer]  # (B, prefix + Gh*Gw, Ct)
        gh, gw = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        patches = hidden[:, hidden.shape[1] - gh * gw:]  # drop CLS / register tokens
        return patches.reshape(pixel_values.shape[0], gh, gw, -1).float()


def _default_normalisation(path: str, model_type: str) -> tuple[Sequence[float], Sequence[float]]:
    config_file = Path(path) / "preprocessor_config.json"
    if config_file.exists():
        values = json.loads(config_file.read_text())
        if "image_mean" in values and "image_std" in values:
            return values["image_mean"], values["image_std"]
    if model_type.startswith("dinov2"):
        return IMAGENET_MEAN, IMAGENET_STD
    if model_type.startswith("siglip"):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return CLIP_MEAN, CLIP_STD


# --- feature cache -----------------------------------------------------------------------------------
class TeacherCache:
    """Teacher features on disk (recipe `teacher_cache`), one safetensors file per image.

    An entry's key is a hash of the teacher's identity (model path, layer), the image's patch grid
    and the bytes of its teacher input tensor: another teacher, layer, resolution or normalisation
    never hits. Files are written aside and renamed, so a crash never leaves a torn entry; an entry
    that does not load or holds a NaN/inf is deleted, recomputed and counted (`discarded`), never
    used. A failed write (a full disk) is logged and training goes on without caching.
    """

    def __init__(self, directory: str | Path, identity: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.hits = self.misses = self.discarded = 0

    @classmethod
    def for_teacher(cls, directory: str | Path, spec: TeacherSpec) -> TeacherCache:
        path = os.path.abspath(spec.path) if Path(spec.path).exists() else spec.path
        return cls(directory, f"{path}|layer={spec.layer}|scale={spec.scale}")

    def key(self, pixels: torch.Tensor, grid: tuple[int, int]) -> str:
        digest = hashlib.sha256(f"{self.identity}|grid={tuple(grid)}|{pixels.dtype}|{tuple(pixels.shape)}".encode())
        digest.update(pixels.detach().cpu().contiguous().view(torch.uint8).numpy())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, key: str, rows_cols: int) -> torch.Tensor | None:
        """The cached (rows*cols, Ct) features, or None (a miss, or an entry discarded as unusable)."""
        path = self.path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            features = load_file(str(path))["features"]
            problem = None if features.ndim == 2 and features.shape[0] == rows_cols else f"shape {tuple(features.shape)}"
            if problem is None and not torch.isfinite(features).all():
                problem = "non-finite values"
        except (OSError, KeyError, SafetensorError) as e:
            problem = f"unreadable ({e})"
        if problem is None:
            self.hits += 1
            return features
        self.discarded += 1
        self.misses += 1
        logger.warning("teacher cache entry %s discarded (%s); recomputing it", path, problem)
        path.unlink(missing_ok=True)
        return None

    def save(self, key: str, features: torch.Tensor) -> None:
        if not torch.isfinite(features).all():
            logger.warning("teacher features of entry %s hold NaN/inf: not cached", key)
            return
        path = self.path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            save_file({"features": features.detach().cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)
        except (OSError, SafetensorError) as e:
            tmp.unlink(missing_ok=True)
            logger.warning("teacher cache: could not write %s (%s); going on without it", path, e)

    def __call__(self, teacher: VisionTeacher, pixel_values: torch.Tensor | Sequence[torch.Tensor],
                 grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """`teacher(pixel_values, grids)`, reading the images it has seen from disk."""
        images = list(pixel_values.unbind(0)) if isinstance(pixel_values, torch.Tensor) else list(pixel_values)
        keys = [self.key(image, grid) for image, grid in zip(images, grids)]
        features = [self.load(key, rows * cols) for key, (rows, cols) in zip(keys, grids)]
        if any(f is None for f in features):  # the whole batch, exactly as without a cache
            computed = teacher(pixel_values, grids).split([rows * cols for rows, cols in grids])
            for i, feature in enumerate(features):
                if feature is None:
                    self.save(keys[i], computed[i])
            return torch.cat(computed)
        return torch.cat(features).to(images[0].device)  # type: ignore[arg-type]

    def counters(self) -> dict[str, int]:
        return {"teacher_cache_hits": self.hits, "teacher_cache_misses": self.misses,
                "teacher_cache_discarded": self.discarded}
