"""Vision side of a training step (PEL + projector + aligner, forward + backward): ours vs the reference style.

    python -m bench vision_train                   # 8 x 672 px, C=1024, D=4096, Ct=1024, 9 aligner layers
    python -m bench vision_train --llm-width 2048  # a reduced D
    python -m bench vision_train --smoke

Ours: the batch through `PatchEmbed` + `Projector` at once (fused SDPA), the patch positions
gathered from every chosen layer with `gather_patch_states`, `PatchAligner` over all patches of all
images at once, `alignment_loss`. Reference style: bench/reference_style.py, the reference
EVE code's per-image Python loops re-written on the same weights (the reference itself cannot
run here). The LLM between the two is replaced by the identity: every chosen layer's hidden state
is the visual tokens themselves, so the comparison is the vision side alone. The teacher's
features are random. Both losses are checked equal before timing; each side's forward+backward
FLOPs are counted (FlopCounterMode) on its first warmup run. Timed round-robin, median.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eve_vlm.model.aligner import PatchAligner, aligner_layers, alignment_loss
from eve_vlm.model.patch_embed import PatchEmbed, Projector, image_grid, num_image_tokens
from eve_vlm.train.losses import gather_patch_states

from .common import Recorder, base_parser, count_flops, matmul_peak, measure_interleaved
from .reference_style import reference_style_align_loss, reference_style_tokens

COLUMNS = ("impl", "batch", "image_px", "width_c", "llm_width_d", "teacher_ct", "aligner_layers", "gflop",
           "gflop_s", "ms", "ms_min", "images_s", "speedup")


@dataclass
class VisionSide:
    """The trainable vision-side modules and one batch for them."""

    pel: PatchEmbed
    projector: Projector
    aligner: PatchAligner
    pixel_values: torch.Tensor  # (B, 3, S, S)
    teacher: torch.Tensor  # (B*h*w, Ct)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.pel.parameters(), *self.projector.parameters(), *self.aligner.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None


def build(batch: int, image_size: int, width: int, heads: int, llm_width: int, teacher_width: int,
          llm_layers: int = 32, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> VisionSide:
    torch.manual_seed(seed)
    h, w = image_grid(image_size, image_size)
    modules = (PatchEmbed(width, heads), Projector(width, llm_width),
               PatchAligner(llm_width, teacher_width, llm_layers, 4, 8 if teacher_width % 8 == 0 else 1))
    pel, projector, aligner = (m.to(device=device, dtype=dtype) for m in modules)
    pixels = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    teacher = torch.randn(batch * h * w, teacher_width, device=device, dtype=dtype)
    return VisionSide(pel, projector, aligner, pixels, teacher)


def ours_loss(side: VisionSide) -> torch.Tensor:
    b, _, height, width = side.pixel_values.shape
    h, w = image_grid(height, width)
    tokens = side.projector(side.pel(side.pixel_values))  # (B, T, D), T = 1 + h*(w+1)
    t = tokens.shape[1]
    grid = (torch.arange(1, t, device=tokens.device).view(h, w + 1)[:, :w]).reshape(-1)  # CLS, SPLIT dropped
    positions = (grid[None] + t * torch.arange(b, device=tokens.device)[:, None]).reshape(-1, 1)  # (N, 1)
    image_of_patch = torch.arange(b, device=tokens.device).repeat_interleave(h * w)
    states = [tokens] * len(side.aligner.layers)  # identity LLM
    gathered = gather_patch_states(tuple(states), list(range(len(states))), positions)
    return alignment_loss(side.aligner(gathered), side.teacher, image_of_patch)


def reference_loss(side: VisionSide) -> torch.Tensor:
    b, _, height, width = side.pixel_values.shape
    h, w = image_grid(height, width)
    tokens = torch.stack(reference_style_tokens(side.pel, side.projector, side.pixel_values))  # (B, T, D)
    states = [tokens] * len(side.aligner.layers)
    teacher = list(side.teacher.view(b, h * w, -1).unbind(0))
    return reference_style_align_loss(side.aligner, states, [0] * b, [(h, w)] * b, teacher)


def train_step(side: VisionSide, loss_fn) -> torch.Tensor:
    loss = loss_fn(side)
    loss.backward()
    side.zero_grad()
    return loss.detach()


def run(args) -> dict:
    rec = Recorder("vision_train", args)
    if args.smoke:
        args.batch, args.image_size, args.width, args.llm_width, args.teacher_width = 2, 112, 32, 64, 16
        args.heads, args.llm_layers = 4, 8
    side = build(args.batch, args.image_size, args.width, args.heads, args.llm_width, args.teacher_width,
                 args.llm_layers)
    with torch.no_grad():
        ours, reference = ours_loss(side), reference_loss(side)
    diff = float((ours - reference).abs())
    if diff > 1e-4 * max(1.0, float(ours.abs())):
        raise RuntimeError(f"ours ({float(ours)}) and the reference style ({float(reference)}) disagree")
    layers = len(aligner_layers(args.llm_layers))
    impls = {"reference style (per-image loops)": reference_loss, "ours (batched)": ours_loss}
    flops = {name: count_flops(lambda f=fn: train_step(side, f)) for name, fn in impls.items()}  # = 1st warmup
    timed = measure_interleaved({name: lambda f=fn: train_step(side, f) for name, fn in impls.items()},
                                args.repeats, max(0, args.warmup - 1))  # round-robin: load changes hit both alike
    timings = {name: t["median_s"] for name, t in timed.items()}
    for name in impls:
        rec.row(impl=name, batch=args.batch, image_px=args.image_size, width_c=args.width,
                llm_width_d=args.llm_width, teacher_ct=args.teacher_width, aligner_layers=layers,
                ms=timings[name] * 1e3, ms_min=timed[name]["min_s"] * 1e3, images_s=args.batch / timings[name],
                gflop=flops[name] / 1e9, gflop_s=flops[name] / timings[name] / 1e9, times_s=timed[name]["times_s"])
    reference_s = timings["reference style (per-image loops)"]
    for row in rec.result["rows"]:
        row["speedup"] = reference_s / (row["ms"] / 1e3)
    speedup = reference_s / timings["ours (batched)"]
    rec.target("vision-side fwd+bwd speed-up over the reference style", speedup, 4.0, speedup >= 4.0,
               "" if speedup >= 4.0 else "same FLOPs in large matmuls on both sides: a CPU is compute-bound here")
    peak = matmul_peak(512 if args.smoke else 4096)
    rec.note(f"fp32 matmul peak measured after the timing: {peak / 1e9:.1f} GFLOP/s; ours runs at "
             f"{flops['ours (batched)'] / timings['ours (batched)'] / peak:.0%} of it.")
    tokens = num_image_tokens(args.image_size, args.image_size)
    rec.note(f"both losses agree (|diff| = {diff:.1e}); tokens per image {tokens}; "
             "the reference code cannot be run here, bench/reference_style.py re-writes its loops.")
    return rec.finish(args.output, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("vision_train", __doc__.splitlines()[0])
    parser.set_defaults(repeats=2)
    parser.add_argument("--batch", type=int, default=8, help="images per batch (all the same size)")
    parser.add_argument("--image-size", type=int, default=672, help="square image size in px")
    parser.add_argument("--width", type=int, default=1024, help="PEL width C")
    parser.add_argument("--heads", type=int, default=8, help="PEL heads")
    parser.add_argument("--llm-width", type=int, default=4096, help="LLM width D (EVE-7B: 4096)")
    parser.add_argument("--teacher-width", type=int, default=1024, help="teacher width Ct (CLIP-L: 1024)")
    parser.add_argument("--llm-layers", type=int, default=32, help="LLM layers L: the aligner reads L, L-4, ..., 0")
    run(parser.parse_args(argv))
    return 0
