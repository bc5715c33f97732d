"""A tiny checkpoint in the reference EVE layout (spec section 9), written from scratch here.

Key names and shapes follow the spec at tiny widths: a 32-wide PEL with the reference's 8 heads,
a 4-layer 64-wide Llama, a PAL with a 16-wide teacher, and a few teacher tensors to be dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from eve_vlm.testing import tiny_tokenizer

WIDTH = 32  # C: 8 heads of 4
HEADS = 8
HIDDEN = 64  # D
LAYERS = 4  # the PAL reads hidden states 4 and 0
INTERMEDIATE = 128
VOCAB = 400  # tiny_tokenizer's vocabulary
TEACHER_WIDTH = 16


def reference_config(**overrides) -> dict:
    config = {
        "_name_or_path": "checkpoints/eve-7b-fitu-672-mse", "architectures": ["EVELlamaForCausalLM"],
        "model_type": "eve", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": VOCAB,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "pretraining_tp": 1, "tie_word_embeddings": False, "torch_dtype": "float16", "use_cache": True,
        "transformers_version": "4.31.0",
        "mm_vision_tower": "openai/eve-patch14-anypixel-672",
        "mm_vision_tower_clip": "openai/clip-vit-large-patch14-336", "mm_hidden_size": WIDTH,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
        "requires_cliploss": True, "tune_mm_mlp_adapter": False, "use_mm_proj": True,
    }
    config.update(overrides)
    return config


def reference_state(dtype: torch.dtype = torch.float16, aligner: bool = True, teacher: bool = True,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the reference names, at shapes the spec gives for EVE-7B, scaled down."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return (mean + std * torch.randn(*shape, generator=generator)).to(dtype)

    c, d = WIDTH, HIDDEN
    state = {
        "model.embed_tokens.weight": rand(VOCAB, d, std=1.0),
        "model.norm.weight": rand(d, mean=1.0),
        "lm_head.weight": rand(VOCAB, d),
        "model.vision_tower.patch_embedding.weight": rand(c, 3, 14, 14, std=0.05),
        "model.vision_tower.class_embedding": rand(c, std=1.0),
        "model.vision_tower.split_embedding": rand(c, std=1.0),
        "model.mm_projector.0.weight": rand(d, c, std=0.2), "model.mm_projector.0.bias": rand(d),
        "model.mm_projector.2.weight": rand(d, d), "model.mm_projector.2.bias": rand(d),
    }
    for block in ("local_attention", "global_attention"):
        prefix = f"model.vision_tower.{block}."
        state.update({
            prefix + "q.0.weight": rand(c, mean=1.0), prefix + "q.0.bias": rand(c),
            prefix + "q.1.weight": rand(c, c, std=0.3),
            prefix + "kv.0.weight": rand(c, mean=1.0), prefix + "kv.0.bias": rand(c),
            prefix + "kv.1.weight": rand(2 * c, c, std=0.3),  # k rows first, then v
            prefix + "proj.weight": rand(c, c, std=0.2), prefix + "proj.bias": rand(c),
        })
    for i in range(LAYERS):
        prefix = f"model.layers.{i}."
        state.update({
            prefix + "self_attn.q_proj.weight": rand(d, d), prefix + "self_attn.k_proj.weight": rand(d, d),
            prefix + "self_attn.v_proj.weight": rand(d, d), prefix + "self_attn.o_proj.weight": rand(d, d),
            prefix + "mlp.gate_proj.weight": rand(INTERMEDIATE, d), prefix + "mlp.up_proj.weight": rand(INTERMEDIATE, d),
            prefix + "mlp.down_proj.weight": rand(d, INTERMEDIATE),
            prefix + "input_layernorm.weight": rand(d, mean=1.0),
            prefix + "post_attention_layernorm.weight": rand(d, mean=1.0),
        })
    if aligner:
        for i in range(len(range(0, LAYERS + 1, 4))):  # the reference's layer_idx = L - arange(0, L+1, 4)
            prefix = f"model.vision_tower_compressor.norm_layer.{i}."
            state.update({prefix + "0.weight": rand(d, mean=1.0), prefix + "0.bias": rand(d),
                          prefix + "1.weight": rand(TEACHER_WIDTH, d)})
        state.update({
            "model.vision_tower_compressor.input_layer.weight": rand(TEACHER_WIDTH, d),
            "model.vision_tower_compressor.input_layer.bias": rand(TEACHER_WIDTH),
            "model.vision_tower_compressor.output_layer.weight": rand(TEACHER_WIDTH, TEACHER_WIDTH),
            "model.vision_tower_compressor.output_layer.bias": rand(TEACHER_WIDTH),
        })
    if teacher:
        clip = "vision_tower.vision_model."
        state.update({
            f"model.vision_clip.{clip}embeddings.patch_embedding.weight": rand(TEACHER_WIDTH, 3, 14, 14),
            f"model.vision_clip.{clip}post_layernorm.weight": rand(TEACHER_WIDTH, mean=1.0),
            f"model.vision_tower_compressor.clip_layer.{clip}embeddings.class_embedding": rand(TEACHER_WIDTH),
        })
    return state


def write_reference(directory: Path, state: dict[str, torch.Tensor], config: dict | None = None,
                    fmt: str = "safetensors", shards: int = 1) -> Path:
    """The folder as the reference's trainer saves it: config.json, weights (+ index), tokenizer."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config or reference_config(), indent=2))
    tiny_tokenizer().save_pretrained(directory)
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    names = list(state)
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        file = f"{stem}.{ext}" if shards == 1 else f"{stem}-{i:05d}-of-{shards:05d}.{ext}"
        part = {name: state[name] for name in group}
        if fmt == "safetensors":
            save_file(part, str(directory / file), metadata={"format": "pt"})
        else:
            torch.save(part, directory / file)
        weight_map.update(dict.fromkeys(group, file))
    if shards > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": weight_map}
        (directory / f"{stem}.{ext}.index.json").write_text(json.dumps(index))
    return directory
