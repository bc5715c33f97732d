"""Vision-side cost, paper Table 6: FLOPs and CPU time of turning one image into LLM-width tokens.

    python -m bench vision                 # 336, 672, 1344 px; C=1024, D=4096 (EVE-7B)
    python -m bench vision --smoke         # tiny widths, seconds

Three paths, all ending at a 4096-wide LLM (random weights, nothing downloaded):
  * EVE: our PEL (conv 14 -> CA1 -> CA2 -> SPLIT rows, C=1024) + projector Linear-GELU-Linear;
  * LLaVA-1.5: transformers' `CLIPVisionModel` with the CLIP-ViT-L/14-336 architecture (24 layers,
    width 1024, MLP 4096, 16 heads), features of layer -2 without CLS as LLaVA reads them, and
    transformers' `LlavaMultiModalProjector` 1024 -> 4096 -> 4096. Every image is resized to 336.
    The rows "CLIP-L/336 tiled" count the AnyRes way of reaching higher resolution (LLaVA-1.6):
    (size/336)^2 tiles + 1 overview, FLOPs counted on the meta device (timed only with --time-tiles);
  * Fuyu: the image padded to a multiple of 30, cut into 30x30x3 patches, one Linear(2700, 4096)
    (exactly transformers' `FuyuModel.vision_embed_tokens`).
FLOPs: FlopCounterMode, 1 multiply-add = 2 FLOPs (the paper's convention: it reports 42 GFLOPs for
EVE at 672, we count 42.5). Time: median (and min) CPU wall time, batch 1, `torch.inference_mode`,
all paths timed round-robin so that a change of load on a shared machine hits them alike.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from eve_vlm.model.patch_embed import PatchEmbed, Projector, num_image_tokens

from .common import Recorder, base_parser, count_flops, measure_interleaved

FUYU_PATCH = 30
COLUMNS = ("path", "image_px", "input_px", "tokens", "gflops", "cpu_ms", "cpu_ms_min", "flops_vs_llava15",
           "time_vs_llava15")


class EveVision(nn.Module):
    """Our PEL + projector: (B, 3, H, W) -> (B, 1 + h*(w+1), D)."""

    def __init__(self, width: int, heads: int, llm_width: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(width, heads)
        self.projector = Projector(width, llm_width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.patch_embed(pixel_values))


class LlavaVision(nn.Module):
    """LLaVA-1.5's image path: CLIP vision tower, layer -2 without CLS, 2-layer GELU projector."""

    def __init__(self, vision_config: CLIPVisionConfig, llm_width: int) -> None:
        super().__init__()
        self.tower = CLIPVisionModel(vision_config)
        text_config = LlamaConfig(hidden_size=llm_width, num_hidden_layers=1, num_attention_heads=1,
                                  intermediate_size=1, vocab_size=1, bos_token_id=None,
                                  eos_token_id=None)  # only its width is read
        # LlavaConfig resets the attention implementation of the config it is given: give it a copy
        llava_config = LlavaConfig(vision_config=copy.deepcopy(vision_config), text_config=text_config)
        self.projector = LlavaMultiModalProjector(llava_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]  # (B, 576, 1024)
        return self.projector(hidden)  # (B, 576, D)


class FuyuVision(nn.Module):
    """Fuyu's image path: pad to a multiple of 30, 30x30x3 patches, Linear(2700, D)."""

    def __init__(self, llm_width: int) -> None:
        super().__init__()
        self.vision_embed_tokens = nn.Linear(FUYU_PATCH * FUYU_PATCH * 3, llm_width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_embed_tokens(fuyu_patches(pixel_values))


def fuyu_patches(pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, rows*cols, 30*30*3), padded right/bottom to multiples of 30, row-major."""
    b, c, h, w = pixel_values.shape
    pad_h, pad_w = -h % FUYU_PATCH, -w % FUYU_PATCH
    x = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    x = x.unfold(2, FUYU_PATCH, FUYU_PATCH).unfold(3, FUYU_PATCH, FUYU_PATCH)  # (B, 3, rows, cols, 30, 30)
    return x.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, FUYU_PATCH * FUYU_PATCH * c)


def clip_vision_config(smoke: bool = False) -> CLIPVisionConfig:
    """CLIP-ViT-L/14-336's vision tower (or a 2-layer, 32-wide one at 56 px for --smoke)."""
    if smoke:
        return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=56, patch_size=14, projection_dim=16)
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768)


def clip_tiles(size: int, clip_size: int) -> int:
    """AnyRes: (size / clip_size)^2 tiles + 1 overview; 1 at the native size."""
    grid = -(-size // clip_size)
    return 1 if grid == 1 else grid * grid + 1


def _frozen(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


def run(args) -> dict:
    rec = Recorder("vision", args)
    torch.manual_seed(0)
    width, heads, llm_width = (32, 4, 64) if args.smoke else (args.width, args.heads, args.llm_width)
    sizes = [56, 112] if args.smoke else args.sizes
    clip_config = clip_vision_config(args.smoke)
    clip_size, clip_tokens = clip_config.image_size, (clip_config.image_size // 14) ** 2
    eve, fuyu = _frozen(EveVision(width, heads, llm_width)), _frozen(FuyuVision(llm_width))
    llava = _frozen(LlavaVision(clip_config, llm_width))
    # (row fields, model, input) of every timed path; FLOPs counted on a first untimed run
    cases = {"llava": (dict(path="LLaVA-1.5 CLIP-L/336+proj", image_px="any", input_px=clip_size, tokens=clip_tokens),
                       llava, torch.randn(1, 3, clip_size, clip_size))}
    tiled = {}
    for size in sizes:
        rows = -(-size // FUYU_PATCH)  # Fuyu: + one newline text token per row, not a vision cost
        cases[f"eve{size}"] = (dict(path="EVE PEL+proj", image_px=size, input_px=size,
                                    tokens=num_image_tokens(size, size)), eve, torch.randn(1, 3, size, size))
        cases[f"fuyu{size}"] = (dict(path="Fuyu patch proj", image_px=size, input_px=rows * FUYU_PATCH,
                                     tokens=rows * rows), fuyu, torch.randn(1, 3, size, size))
        tiles = clip_tiles(size, clip_size)
        if tiles > 1:
            fields = dict(path=f"CLIP-L/336 tiled x{tiles}", image_px=size, input_px=clip_size,
                          tokens=tiles * clip_tokens)
            with torch.device("meta"):
                meta_llava = LlavaVision(clip_config, llm_width)
            tiled[f"tiles{size}"] = (fields, count_flops(
                lambda m=meta_llava, n=tiles: m(torch.empty(n, 3, clip_size, clip_size, device="meta"))))
            if args.time_tiles:
                cases[f"tiles{size}"] = (fields, llava, torch.randn(tiles, 3, clip_size, clip_size))
    flops = {key: count_flops(lambda m=model, x=x: m(x)) for key, (_, model, x) in cases.items()}
    with torch.inference_mode():
        timings = measure_interleaved({key: (lambda m=model, x=x: m(x)) for key, (_, model, x) in cases.items()},
                                      args.repeats, max(0, args.warmup - 1))
    for key, (fields, _, _) in cases.items():
        if key not in tiled:
            rec.row(**fields, gflops=flops[key] / 1e9, cpu_ms=timings[key]["median_s"] * 1e3,
                    cpu_ms_min=timings[key]["min_s"] * 1e3, times_s=timings[key]["times_s"])
    for key, (fields, counted) in tiled.items():
        timing = timings.get(key)
        rec.row(**fields, gflops=counted / 1e9, cpu_ms=timing and timing["median_s"] * 1e3,
                cpu_ms_min=timing and timing["min_s"] * 1e3)
    base = rec.result["rows"][0]
    for row in rec.result["rows"]:
        row["flops_vs_llava15"] = row["gflops"] / base["gflops"]
        row["time_vs_llava15"] = None if row["cpu_ms"] is None else row["cpu_ms"] / base["cpu_ms"]

    mid = sizes[len(sizes) // 2] if args.smoke else 672
    eve_mid = next(r for r in rec.result["rows"] if r["path"] == "EVE PEL+proj" and r["image_px"] == mid)
    ratio = eve_mid["gflops"] / base["gflops"]
    rec.target(f"EVE vision FLOPs at {mid} px / LLaVA-1.5 CLIP-L/336 path", ratio, 1 / 8, ratio <= 1 / 8)
    rec.note("FLOPs: FlopCounterMode, 1 multiply-add = 2 FLOPs; norms, GELU and softmax are not counted. "
             "The paper's Table 6 (same convention): EVE 42 GFLOPs, LLaVA-1.5 372 GFLOPs.")
    rec.note("transformers' CLIPVisionModel runs all 24 layers although LLaVA reads layer 23 (-2): "
             "the last layer (~4% of the tower) is computed and thrown away, as in the reference LLaVA.")
    rec.note("Fuyu's 'vision' is one Linear; its cost moves into the LLM, which reads rows*cols patches + "
             "one newline token per row.")
    return rec.finish(args.output, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("vision", __doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[336, 672, 1344],
                        help="square image sizes for EVE and Fuyu, comma-separated (multiples of 28)")
    parser.add_argument("--width", type=int, default=1024, help="PEL width C (EVE-7B: 1024)")
    parser.add_argument("--heads", type=int, default=8, help="PEL attention heads")
    parser.add_argument("--llm-width", type=int, default=4096, help="LLM width D the tokens are projected to")
    parser.add_argument("--time-tiles", action="store_true",
                        help="also time the tiled CLIP rows (5 and 17 CLIP passes: minutes on a CPU)")
    run(parser.parse_args(argv))
    return 0
