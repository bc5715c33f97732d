"""Time to first token and decode speed: EVE vs LLaVA-1.5 vs Fuyu around one and the same LLM.

    python -m bench ttft                   # SmolLM2-135M-Instruct (real weights, offline asset)
    python -m bench ttft --random-weights  # the same architecture, random weights
    python -m bench ttft --smoke           # a 2-layer 64-wide LLM, seconds

All three models get the same LLM (SmolLM2-135M's architecture and weights, copied into each),
the same prompt ids (8 before the image, 24 after) and the same image, each at its own resolution:
  * EVE at 672 px: our PEL (C=1024, EVE-7B's) + projector -> 601 tokens;
  * LLaVA-1.5 (`LlavaForConditionalGeneration`, CLIP-L/14-336 tower, random): the image at 336 -> 576 tokens;
  * Fuyu (`FuyuForCausalLM`, random patch Linear): the 672 image padded to 690 = 23x23 patches + 23
    newline tokens = 552 tokens.
TTFT = `generate(max_new_tokens=1)` (vision + prefill + first token; preprocessing excluded), median of
--repeats after --warmup, batch 1, `torch.inference_mode`, the models timed round-robin. Decode
tokens/s = N / (time of 1+N tokens - time of 1 token), the two runs back to back, median over the
rounds; N = --new-tokens, greedy, KV cache. For a 7B-shaped LLM (Llama-2-7B: D=4096, 32 layers) the
prefill FLOPs are counted on the meta device (nothing runs), vision at EVE-7B widths.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    FuyuConfig,
    FuyuForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PretrainedConfig,
)

from eve_vlm.config import EveConfig
from eve_vlm.model.eve import EveForCausalLM
from eve_vlm.model.patch_embed import num_image_tokens

from .common import Recorder, base_parser, count_flops, measure_interleaved
from .vision import EveVision, FuyuVision, LlavaVision, clip_vision_config, fuyu_patches

PREFIX, SUFFIX = 8, 24  # prompt tokens before and after the image
FUYU_NEWLINE_ID = 13
COLUMNS = ("path", "llm", "image_px", "prefill_tokens", "ttft_ms", "ttft_ms_min", "decode_tok_s", "vision_gflops",
           "prefill_gflops", "ttft_vs_llava", "flops_vs_llava")
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)


class EveLastLogits(EveForCausalLM):
    """EVE whose forward names `logits_to_keep`, so generate() asks for the last position's logits only
    (a proposed change to EveForCausalLM.forward; measured here as row 'EVE, logits_to_keep')."""

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, inputs_embeds=None, labels=None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs):
        return super().forward(input_ids, pixel_values, attention_mask, inputs_embeds, labels,
                               logits_to_keep=logits_to_keep, **kwargs)


def demo_llm(smoke: bool, random_weights: bool) -> tuple[PretrainedConfig, LlamaForCausalLM, str]:
    """The LLM all three models share: SmolLM2-135M-Instruct (or a tiny Llama for --smoke)."""
    torch.manual_seed(0)
    if smoke:
        config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, vocab_size=512, max_position_embeddings=4096)
        return config, LlamaForCausalLM(config).eval(), "tiny-llama (random)"
    from eve_vlm.assets import smollm2_path

    path = smollm2_path()
    if random_weights:
        config = AutoConfig.from_pretrained(path)
        return config, LlamaForCausalLM(config).eval(), "SmolLM2-135M (random)"
    llm = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return llm.config, llm, "SmolLM2-135M"


def build_models(text_config: PretrainedConfig, llm: LlamaForCausalLM, smoke: bool, width: int,
                 image_token_id: int) -> dict[str, torch.nn.Module]:
    """EVE, LLaVA-1.5 and Fuyu around copies of one LLM (same weights); vision parts random."""
    torch.manual_seed(1)
    heads = 4 if smoke else 8
    eve_config = EveConfig(text_config=copy.deepcopy(text_config), vision_width=width, vision_heads=heads,
                           image_token_id=image_token_id)
    eve = EveForCausalLM(eve_config, language_model=copy.deepcopy(llm))
    eve_last = EveLastLogits(copy.deepcopy(eve_config), language_model=copy.deepcopy(llm))
    clip_config = clip_vision_config(smoke)
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=copy.deepcopy(clip_config), text_config=copy.deepcopy(text_config),
        image_token_index=image_token_id, image_seq_length=(clip_config.image_size // 14) ** 2))
    fuyu = FuyuForCausalLM(FuyuConfig(text_config=text_config.to_dict(), image_token_id=image_token_id))
    eve.language_model.load_state_dict(llm.state_dict())
    eve_last.load_state_dict(eve.state_dict())
    for model in (llava, fuyu):
        model.model.language_model.load_state_dict(llm.model.state_dict())
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
    return {"eve": eve.eval(), "eve_last": eve_last.eval(), "llava": llava.eval(), "fuyu": fuyu.eval()}


def build_inputs(image: torch.Tensor, vocab_size: int, image_token_id: int, clip_size: int) -> dict[str, dict]:
    """The same prompt ids and image, laid out as each model expects; (1, 3, S, S) image."""
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(10, vocab_size - 10, (PREFIX,), generator=generator)
    suffix = torch.randint(10, vocab_size - 10, (SUFFIX,), generator=generator)

    def ids(image_ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([prefix, image_ids, suffix])[None]

    size = image.shape[-1]
    eve_ids = ids(torch.full((num_image_tokens(size, size),), image_token_id))
    llava_ids = ids(torch.full(((clip_size // 14) ** 2,), image_token_id))
    patches = fuyu_patches(image)  # (1, rows*cols, 2700)
    rows = round(patches.shape[1] ** 0.5)
    row = torch.cat([torch.full((rows,), image_token_id), torch.tensor([FUYU_NEWLINE_ID])])
    fuyu_ids = ids(row.repeat(rows))
    small = F.interpolate(image, size=(clip_size, clip_size), mode="bilinear", align_corners=False)
    return {
        "eve": {"input_ids": eve_ids, "pixel_values": image},
        "llava": {"input_ids": llava_ids, "pixel_values": small},
        "fuyu": {"input_ids": fuyu_ids, "pixel_values": patches},
    }


def generate(model: torch.nn.Module, inputs: dict, new_tokens: int) -> torch.Tensor:
    ids = inputs["input_ids"]
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                          max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


# --- FLOPs on the meta device ---------------------------------------------------------------------------
def llm_prefill_flops(text_config: PretrainedConfig, num_tokens: int, all_logits: bool = False) -> int:
    """FLOPs of one prefill of `num_tokens` (logits of the last position, or of all), counted on meta."""
    with torch.device("meta"):
        llm = LlamaForCausalLM(copy.deepcopy(text_config))
        embeds = torch.empty(1, num_tokens, text_config.hidden_size)
        mask = torch.zeros(1, 1, num_tokens, num_tokens)  # a ready 4-D mask: no data-dependent mask checks
        positions = torch.arange(num_tokens)[None]
    return count_flops(lambda: llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                   use_cache=False, logits_to_keep=0 if all_logits else 1))


def vision_flops(smoke: bool, width: int, llm_width: int, eve_size: int) -> dict[str, int]:
    with torch.device("meta"):
        paths = {"eve": (EveVision(width, 4 if smoke else 8, llm_width), eve_size),
                 "llava": (LlavaVision(clip_vision_config(smoke), llm_width), clip_vision_config(smoke).image_size),
                 "fuyu": (FuyuVision(llm_width), eve_size)}
    return {name: count_flops(lambda m=module, s=size: m(torch.empty(1, 3, s, s, device="meta")))
            for name, (module, size) in paths.items()}


def run(args) -> dict:
    rec = Recorder("ttft", args)
    text_config, llm, llm_name = demo_llm(args.smoke, args.random_weights)
    width = 32 if args.smoke else args.width
    eve_size = 112 if args.smoke else args.image_size
    clip_size = clip_vision_config(args.smoke).image_size
    image_token_id = text_config.vocab_size - 1
    models = build_models(text_config, llm, args.smoke, width, image_token_id)
    torch.manual_seed(2)
    inputs = build_inputs(torch.randn(1, 3, eve_size, eve_size), text_config.vocab_size, image_token_id, clip_size)
    vision = vision_flops(args.smoke, width, text_config.hidden_size, eve_size)
    labels = {"eve": "EVE", "eve_last": "EVE, logits_to_keep", "llava": "LLaVA-1.5", "fuyu": "Fuyu"}
    image_px = {"eve": eve_size, "eve_last": eve_size, "llava": clip_size, "fuyu": eve_size}
    vision["eve_last"] = vision["eve"]
    inputs["eve_last"] = inputs["eve"]
    rows = {}
    cases = {}  # round-robin over the models (a change of load hits all alike); 1 and 1+N tokens back to back
    for key, model in models.items():
        cases[f"{key}/first"] = lambda m=model, i=inputs[key]: generate(m, i, 1)
        cases[f"{key}/full"] = lambda m=model, i=inputs[key]: generate(m, i, 1 + args.new_tokens)
    with torch.inference_mode():
        timed = measure_interleaved(cases, args.repeats, args.warmup)
    for key in models:
        first, full = timed[f"{key}/first"], timed[f"{key}/full"]
        decode = statistics.median(args.new_tokens / max(b - a, 1e-9)
                                   for a, b in zip(first["times_s"], full["times_s"]))
        tokens = inputs[key]["input_ids"].shape[1]
        rows[key] = rec.row(path=labels[key], llm=llm_name, image_px=image_px[key], prefill_tokens=tokens,
                            ttft_ms=first["median_s"] * 1e3, ttft_ms_min=first["min_s"] * 1e3, decode_tok_s=decode,
                            vision_gflops=vision[key] / 1e9,
                            prefill_gflops=(vision[key] + llm_prefill_flops(text_config, tokens, key == "eve")) / 1e9,
                            ttft_times_s=first["times_s"], full_times_s=full["times_s"])
    # the same three at 7B scale: FLOPs only (Llama-2-7B shapes, EVE-7B's PEL), counted on meta
    big = LlamaConfig(**LLAMA2_7B) if not args.smoke else LlamaConfig(**{**LLAMA2_7B, "num_hidden_layers": 2})
    big_vision = vision_flops(args.smoke, 32 if args.smoke else 1024, big.hidden_size, eve_size)
    big_vision["eve_last"] = big_vision["eve"]
    for key in models:
        tokens = rows[key]["prefill_tokens"]
        rows[f"{key}_7b"] = rec.row(path=labels[key], llm="Llama-2-7B shape (FLOPs only)", image_px=image_px[key],
                                    prefill_tokens=tokens, vision_gflops=big_vision[key] / 1e9,
                                    prefill_gflops=(big_vision[key]
                                                    + llm_prefill_flops(big, tokens, key == "eve")) / 1e9)
    for key, row in rows.items():
        base = rows["llava_7b" if key.endswith("_7b") else "llava"]
        row["flops_vs_llava"] = row["prefill_gflops"] / base["prefill_gflops"]
        if row.get("ttft_ms") is not None:
            row["ttft_vs_llava"] = row["ttft_ms"] / base["ttft_ms"]
    ratio = rows["eve"]["ttft_ms"] / rows["llava"]["ttft_ms"]
    rec.target(f"EVE TTFT at {eve_size} px / LLaVA-1.5 TTFT ({llm_name})", ratio, 0.5, ratio <= 0.5)
    rec.note("EveForCausalLM.forward does not name `logits_to_keep`, so generate() computes the prefill logits of "
             "every position (the vocabulary matmul over all prompt tokens); row 'EVE, logits_to_keep' is the same "
             "model with `logits_to_keep` named in forward, so generate asks for 1 position, as for LLaVA and Fuyu. "
             "prefill_gflops counts what each row computes: all positions' logits for 'EVE', the last for the others.")
    rec.note("prefill_gflops = vision + LLM prefill, FlopCounterMode on meta, "
             "1 multiply-add = 2 FLOPs; attention counted in full (not halved for causality).")
    return rec.finish(args.output, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("ttft", __doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=672, help="EVE's (and Fuyu's) image size in px")
    parser.add_argument("--width", type=int, default=1024, help="EVE's PEL width C")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded for the decode speed")
    parser.add_argument("--random-weights", action="store_true", help="random LLM weights (same for all three)")
    run(parser.parse_args(argv))
    return 0
