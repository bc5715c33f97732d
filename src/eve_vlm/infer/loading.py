"""`load_model`: a saved EVE checkpoint -> (model, processor) on a device, in a dtype, maybe quantized."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..data.processor import EveProcessor

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("8bit", "4bit")


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when a GPU is visible, else the CPU."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r}: choose one of {DEVICES} (or cuda:N)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device='cpu'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is bfloat16 on a GPU that supports it (float16 on older ones) and float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {('auto', *DTYPES)}")
    return DTYPES[dtype]


def _quantization_config(quantization: str, dtype: torch.dtype) -> object:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: choose one of {QUANTIZATIONS} or None")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes")
    if not torch.cuda.is_available():
        raise ValueError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); none is visible")
    from transformers import BitsAndBytesConfig

    # the PEL and projector are small and sensitive to rounding: they stay in `dtype`
    skip = ["patch_embed", "projector", "lm_head"]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4",
                              llm_int8_skip_modules=skip)


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto",
               quantization: str | None = None) -> tuple[PreTrainedModel, EveProcessor]:
    """Load a checkpoint saved with `save_pretrained` (model and processor in one folder), for inference.

    device: "auto" | "cpu" | "cuda" (or "cuda:N"); dtype: "auto" | "float32" | "bfloat16" | "float16";
    quantization: None | "8bit" | "4bit" (bitsandbytes, CUDA only; the model is placed on the GPU).
    """
    import eve_vlm  # noqa: F401  (registers the EVE Auto classes)

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model (config.json is missing)")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    kwargs: dict[str, object] = {"dtype": torch_dtype}
    if quantization is not None:
        kwargs["quantization_config"] = _quantization_config(quantization, torch_dtype)
        kwargs["device_map"] = {"": target.index or 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization is None:
        model = model.to(target)
    processor = EveProcessor.from_pretrained(path)
    if model.config.image_token_id not in (None, processor.image_token_id):
        raise ValueError(f"{path}: the model's image_token_id ({model.config.image_token_id}) differs from the "
                         f"processor's ({processor.image_token_id})")
    logger.info("loaded %s on %s as %s%s", path, target, torch_dtype,
                f" ({quantization})" if quantization else "")
    return model.eval(), processor
