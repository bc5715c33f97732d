"""The model sizes the `train` and `memory` benchmarks run, and one training step of each.

* tiny: the test model (2-layer 64-wide Llama, 32-wide PEL) on `shapes` images at 112 px.
* demo: read from configs/demo/: the model of stage1.yaml (SmolLM2-135M-Instruct with its real
  weights, PEL C=384, 8 heads, 56 px, projector LayerNorm) and the batches of stage2.yaml (the
  stage where everything trains: MNIST and Twemoji captions, `plain` template, max_length 64,
  micro-batch 32, length grouping as the file says), aligner to DINOv2-S/14's width (384).
* mid: a 16-layer, 1024-wide Llama (16 heads, 4 KV heads, MLP 2816; ~0.24B parameters with
  SmolLM2's vocabulary) + a 512-wide PEL at 336 px, 1024-wide teacher (CLIP-L's), vicuna v1,
  MNIST questions and Twemoji captions, micro-batch 4.
Batches come from the real pipeline (`TrainBatches`). The teacher is not run: its features are
random tensors of the right shape (it is frozen and outside the model being trained).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig

from eve_vlm.config import EveConfig
from eve_vlm.data.pipeline import TrainBatches
from eve_vlm.data.processor import EveProcessor
from eve_vlm.data.sources import build_source
from eve_vlm.model.aligner import PatchAligner
from eve_vlm.model.eve import EveForCausalLM
from eve_vlm.train.losses import AlignedEve

DEMO_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "demo"


@dataclass(frozen=True)
class Size:
    name: str
    text: dict[str, Any] | None  # LlamaConfig fields; None = SmolLM2-135M-Instruct with its weights
    eve: dict[str, Any]  # EveConfig fields (template included)
    tokenizer: str  # "tiny" or "smollm2"
    teacher_width: int
    micro_batch: int
    max_length: int
    sources: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)  # kind, options, weight
    group_by_length: bool = True


def demo_size() -> Size:
    """The demo as configs/demo/ defines it: stage 1's model, stage 2's data and batch."""
    model = yaml.safe_load((DEMO_CONFIGS / "stage1.yaml").read_text())["model"]
    stage = yaml.safe_load((DEMO_CONFIGS / "stage2.yaml").read_text())
    if model.get("text_model") != "smollm2-135m-instruct":
        raise ValueError(f"configs/demo/stage1.yaml: expected SmolLM2-135M-Instruct, got {model.get('text_model')}")
    data = stage["data"]
    sources = [(s["kind"], dict(s.get("options", {})), float(s.get("weight", 1.0))) for s in data["sources"]]
    eve = {**model["eve"], "template": stage.get("template", model["eve"].get("template", "plain"))}
    return Size("demo", None, eve, "smollm2", 384, int(stage["micro_batch"]), int(data["max_length"]), sources,
                bool(data.get("group_by_length", True)))


_QA_DATA = [("mnist", {"split": "train", "task": "qa", "limit": 512}, 1.0),
            ("twemoji", {"split": "train", "task": "caption", "limit": 512}, 1.0)]
SIZES = {
    "tiny": lambda: Size(
        "tiny", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 4096},
        {"vision_width": 32, "vision_heads": 4, "image_size": 112, "aligner_heads": 4, "template": "vicuna_v1"},
        "tiny", 16, 8, 128, [("shapes", {"size": 256, "task": "qa", "image_size": 112}, 1.0)]),
    "demo": demo_size,
    "mid": lambda: Size(
        "mid", {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
                "intermediate_size": 2816, "vocab_size": 49152, "max_position_embeddings": 4096,
                "tie_word_embeddings": True},
        {"vision_width": 512, "vision_heads": 8, "image_size": 336, "template": "vicuna_v1"},
        "smollm2", 1024, 4, 384, _QA_DATA),
}


@dataclass
class Built:
    size: Size
    model: EveForCausalLM
    processor: EveProcessor
    aligner: PatchAligner | None
    batches: TrainBatches | None  # the size's own pipeline (its length-grouping setting)
    seed: int = 0

    def pipeline(self, grouped: bool) -> TrainBatches:
        """The same sources and processor with length grouping on (windows of 64 micro-batches) or off."""
        return TrainBatches(self.batches.sources, self.batches.weights, self.processor, self.size.micro_batch,
                            self.size.max_length, self.seed, teacher_transform=_stub_teacher_input,
                            group_size=64 if grouped else 1)

    def parameters(self) -> int:
        modules = [self.model] + ([self.aligner] if self.aligner is not None else [])
        return sum(p.numel() for m in modules for p in m.parameters())


def _stub_teacher_input(image: Any, grid: tuple[int, int]) -> torch.Tensor:
    """Stands in for the teacher's preprocessing: only its presence matters (patch positions are collated)."""
    return torch.zeros(3, grid[0] * 14, grid[1] * 14)


def build(name: str, seed: int = 0, data: bool = True, with_aligner: bool = True) -> Built:
    """Model (fp32, CPU), processor, aligner and (with `data`) the real batch pipeline of one size."""
    size = SIZES[name]()
    torch.manual_seed(seed)
    if size.tokenizer == "tiny":
        from eve_vlm.testing import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        from eve_vlm.assets import smollm2_path

        tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    if size.text is None:  # as the recipe builder does for `text_model: smollm2-135m-instruct`
        from eve_vlm.assets import smollm2_path

        model = EveForCausalLM.from_text_model(str(smollm2_path()), teacher_width=size.teacher_width, **size.eve)
    else:
        model = EveForCausalLM(EveConfig(text_config=LlamaConfig(**size.text), teacher_width=size.teacher_width,
                                         **size.eve))
    config = model.config
    processor = EveProcessor.from_config(tokenizer, config)
    aligner = PatchAligner(config.hidden_size, size.teacher_width, config.num_hidden_layers,
                           config.aligner_layer_interval, config.aligner_heads) if with_aligner else None
    if not data:
        return Built(size, model, processor, aligner, None, seed)
    from eve_vlm.demo import data as _demo_data  # noqa: F401  registers the mnist and twemoji sources

    sources = [build_source(kind, dict(options)) for kind, options, _ in size.sources]
    batches = TrainBatches(sources, [weight for _, _, weight in size.sources], processor, size.micro_batch,
                           size.max_length, seed, teacher_transform=_stub_teacher_input,
                           group_size=64 if size.group_by_length else 1)
    return Built(size, model, processor, aligner, batches, seed)


def take_batches(built: Built, count: int, batches: TrainBatches | None = None) -> list[dict[str, Any]]:
    """The first `count` micro-batches of the pipeline, with random teacher features attached."""
    out = []
    generator = torch.Generator().manual_seed(0)
    for batch in batches or built.batches:
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "pixel_values",
                                                         "patch_positions", "patch_image", "num_tokens")}
        batch["teacher_features"] = torch.randn(batch["patch_positions"].shape[0], built.size.teacher_width,
                                                generator=generator)
        out.append(batch)
        if len(out) == count:
            break
    return out


def padding_fraction(batches: list[dict[str, Any]]) -> float:
    """Padded positions / all positions over the batches (0 = no padding)."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return 1 - real / total


class TrainStep:
    """One optimizer step of `AlignedEve` (CE + alignment), everything trainable, AdamW (fused, as the
    training loop's, or `fused=False`: torch's default foreach), grad clip 1.0; fp32, or with `bf16` the
    forward under bf16 autocast (fp32 weights, as the training loop's bf16)."""

    def __init__(self, built: Built, bf16: bool = False, fused: bool = True) -> None:
        self.bf16 = bf16
        self.stage = AlignedEve(built.model, built.aligner, 1.0).train()
        self.params = [p for p in self.stage.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5, weight_decay=0.0, fused=fused)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.stage(batch, batch["teacher_features"])

    def forward_backward(self, batch: dict[str, Any]) -> None:
        self.forward(batch)["loss"].backward()

    def __call__(self, batch: dict[str, Any]) -> dict[str, float]:
        """Run one step; returns the seconds of forward, backward and the optimizer."""
        start = time.perf_counter()
        losses = self.forward(batch)
        forward = time.perf_counter()
        losses["loss"].backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        return {"forward_s": forward - start, "backward_s": backward - forward, "optimizer_s": end - backward,
                "step_s": end - start}

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
