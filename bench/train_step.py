"""A full training step (PEL + LLM + aligner, CE + alignment loss, forward + backward): ours vs the reference style.

    python -m bench train_step                      # 2 x 336 px, D=1024, 8 layers, V=32000
    python -m bench train_step --image-size 672 --layers 4
    python -m bench train_step --smoke

The target of issue 8: the full step is never slower than the reference code's. Both sides run the
same modules with the same weights on the same batch (one image per sample, a prompt, the image's
visual tokens, a question, an answer), and their losses are checked equal before timing.
Ours: `AlignedEve` as the training loop runs it: the batch's images through the PEL at once, visual
tokens scattered into the placeholder run, the decoder, CE on the answer positions only (the
vocabulary projection runs on those), the chosen layers gathered at the patches, the aligner over
all patches of the batch at once.
Reference style: the reference EVE code's path, re-written (it cannot run here): the vision side
per image (bench/reference_style.py), each sample's embeddings concatenated piece by piece
(LLaVA's `prepare_inputs_labels_for_multimodal`), the LM's own loss over the full (B, T, V) logits,
all hidden states returned, the aligner per image and per layer.
The LLM and its attention kernel (SDPA) are the same on both sides, so the difference is what
our code does around the LLM. Timed round-robin, median; FLOPs counted on the first warmup run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaConfig

from eve_vlm import EveConfig, EveForCausalLM
from eve_vlm.data.processor import IGNORE_INDEX
from eve_vlm.model.aligner import PatchAligner, aligner_layers
from eve_vlm.model.patch_embed import image_grid, num_image_tokens
from eve_vlm.train.losses import AlignedEve

from .common import Recorder, base_parser, count_flops, matmul_peak, measure_interleaved
from .reference_style import reference_style_align_loss, reference_style_tokens

COLUMNS = ("impl", "batch", "image_px", "seq_len", "answer_tokens", "llm_width_d", "layers", "vocab", "gflop",
           "gflop_s", "ms", "ms_min", "tokens_s", "speedup")


@dataclass
class Step:
    """The trainable modules, one batch and the teacher's features for it."""

    stage: AlignedEve
    batch: dict[str, torch.Tensor]
    teacher: torch.Tensor  # (B*h*w, Ct)
    image_start: int  # the image's first token in every sample
    grid: tuple[int, int]

    def zero_grad(self) -> None:
        for p in self.stage.parameters():
            p.grad = None


def build(batch: int, image_size: int, width: int, llm_width: int, layers: int, vocab: int, teacher_width: int,
          prompt_tokens: int, question_tokens: int, answer_tokens: int, seed: int = 0, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> Step:
    torch.manual_seed(seed)
    heads = max(1, llm_width // 128)
    text = LlamaConfig(hidden_size=llm_width, intermediate_size=int(llm_width * 2.6875) // 64 * 64,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       vocab_size=vocab, max_position_embeddings=8192, tie_word_embeddings=False,
                       attn_implementation="sdpa")
    config = EveConfig(text_config=text, vision_width=width, vision_heads=8, image_size=image_size,
                       image_token_id=vocab, teacher_width=teacher_width, aligner_heads=8)
    model = EveForCausalLM(config).to(device=device, dtype=dtype).train()
    aligner = PatchAligner(llm_width, teacher_width, layers, 4, 8).to(device=device, dtype=dtype).train()
    h, w = image_grid(image_size, image_size)
    n_image = num_image_tokens(image_size, image_size)
    pieces = [torch.randint(0, vocab, (batch, prompt_tokens)), torch.full((batch, n_image), vocab),
              torch.randint(0, vocab, (batch, question_tokens + answer_tokens))]
    input_ids = torch.cat(pieces, dim=1)  # (B, T)
    labels = input_ids.clone()
    labels[:, : input_ids.shape[1] - answer_tokens] = IGNORE_INDEX
    seq = input_ids.shape[1]
    grid_tokens = (torch.arange(1, n_image).view(h, w + 1)[:, :w]).reshape(-1) + prompt_tokens  # CLS, SPLIT out
    positions = (grid_tokens[None] + seq * torch.arange(batch)[:, None]).reshape(-1, 1)  # (N, 1) in B*T
    data = {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(batch, 3, image_size, image_size),
            "patch_positions": positions, "patch_image": torch.arange(batch).repeat_interleave(h * w)}
    data = {k: v.to(device) for k, v in data.items()}
    data["pixel_values"] = data["pixel_values"].to(dtype)
    teacher = torch.randn(batch * h * w, teacher_width, device=device, dtype=dtype)
    return Step(AlignedEve(model, aligner), data, teacher, prompt_tokens, (h, w))


def ours_loss(step: Step) -> torch.Tensor:
    return step.stage(step.batch, step.teacher)["loss"]


def reference_loss(step: Step) -> torch.Tensor:
    model, aligner, batch = step.stage.model, step.stage.aligner, step.batch
    assert aligner is not None
    images = reference_style_tokens(model.patch_embed, model.projector, batch["pixel_values"])
    embed = model.get_input_embeddings()
    rows = []
    for ids, image in zip(batch["input_ids"], images):  # per sample: text, image, text pieces concatenated
        is_image = ids == model.config.image_token_id
        first, last = int(is_image.nonzero()[0]), int(is_image.nonzero()[-1]) + 1
        rows.append(torch.cat([embed(ids[:first]), image, embed(ids[last:])], dim=0))
    out = model.language_model(inputs_embeds=torch.stack(rows), attention_mask=batch["attention_mask"],
                               labels=batch["labels"], output_hidden_states=True, use_cache=False)
    states = [out.hidden_states[i] for i in aligner.layers]
    b = len(images)
    teacher = list(step.teacher.view(b, step.grid[0] * step.grid[1], -1).unbind(0))
    align = reference_style_align_loss(aligner, states, [step.image_start] * b, [step.grid] * b, teacher)
    return out.loss + step.stage.align_weight * align


def train_step(step: Step, loss_fn) -> torch.Tensor:
    loss = loss_fn(step)
    loss.backward()
    step.zero_grad()
    return loss.detach()


def run(args) -> dict:
    rec = Recorder("train_step", args)
    if args.smoke:
        args.batch, args.image_size, args.width, args.llm_width, args.layers = 2, 56, 32, 64, 4
        args.vocab, args.teacher_width, args.prompt_tokens, args.question_tokens, args.answer_tokens = 512, 16, 4, 4, 4
    step = build(args.batch, args.image_size, args.width, args.llm_width, args.layers, args.vocab, args.teacher_width,
                 args.prompt_tokens, args.question_tokens, args.answer_tokens)
    with torch.no_grad():
        ours, reference = ours_loss(step), reference_loss(step)
    diff = float((ours - reference).abs())
    if diff > 1e-4 * max(1.0, float(ours.abs())):
        raise RuntimeError(f"ours ({float(ours)}) and the reference style ({float(reference)}) disagree")
    impls = {"reference style": reference_loss, "ours": ours_loss}
    flops = {name: count_flops(lambda f=fn: train_step(step, f)) for name, fn in impls.items()}  # = 1st warmup
    timed = measure_interleaved({name: lambda f=fn: train_step(step, f) for name, fn in impls.items()},
                                args.repeats, max(0, args.warmup - 1))
    seq = step.batch["input_ids"].shape[1]
    reference_s = timed["reference style"]["median_s"]
    for name in impls:
        seconds = timed[name]["median_s"]
        rec.row(impl=name, batch=args.batch, image_px=args.image_size, seq_len=seq, answer_tokens=args.answer_tokens,
                llm_width_d=args.llm_width, layers=args.layers, vocab=args.vocab, gflop=flops[name] / 1e9,
                gflop_s=flops[name] / seconds / 1e9, ms=seconds * 1e3, ms_min=timed[name]["min_s"] * 1e3,
                tokens_s=args.batch * seq / seconds, speedup=reference_s / seconds, times_s=timed[name]["times_s"])
    speedup = reference_s / timed["ours"]["median_s"]
    rec.target("full training step speed-up over the reference style (never slower)", speedup, 1.0, speedup >= 1.0)
    peak = matmul_peak(512 if args.smoke else 4096)
    rec.note(f"fp32 matmul peak measured after the timing: {peak / 1e9:.1f} GFLOP/s; ours runs at "
             f"{flops['ours'] / timed['ours']['median_s'] / peak:.0%} of it, the reference style at "
             f"{flops['reference style'] / reference_s / peak:.0%}.")
    rec.note(f"both losses agree (|diff| = {diff:.1e}); aligner reads {len(aligner_layers(args.layers))} layers; "
             "the reference code cannot be run here, bench/reference_style.py and reference_loss re-write its path.")
    return rec.finish(args.output, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("train_step", __doc__.splitlines()[0])
    parser.set_defaults(repeats=3)
    parser.add_argument("--batch", type=int, default=2, help="samples per batch (one image each)")
    parser.add_argument("--image-size", type=int, default=336, help="square image size in px")
    parser.add_argument("--width", type=int, default=1024, help="PEL width C")
    parser.add_argument("--llm-width", type=int, default=1024, help="LLM width D")
    parser.add_argument("--layers", type=int, default=8, help="LLM layers")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size (Vicuna: 32000)")
    parser.add_argument("--teacher-width", type=int, default=1024, help="teacher width Ct (CLIP-L: 1024)")
    parser.add_argument("--prompt-tokens", type=int, default=8, help="text tokens before the image")
    parser.add_argument("--question-tokens", type=int, default=24, help="text tokens after the image, not trained")
    parser.add_argument("--answer-tokens", type=int, default=32, help="answer tokens at the end (the CE's targets)")
    run(parser.parse_args(argv))
    return 0
