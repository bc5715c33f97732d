"""The Patch Aligning Layer (PAL), spec section 4: training only, never part of the inference model.

It reads the LLM's hidden states at the image positions (CLS and SPLIT removed) from layers
L, L-4, ..., 0, maps each to the teacher's width, lets the last layer attend over the others
(CA3, layer-wise), and returns features that the alignment loss compares with the teacher's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .patch_embed import attend

ALIGNER_WEIGHTS = "aligner.safetensors"
ALIGNER_CONFIG = "aligner_config.json"


def aligner_layers(num_layers: int, interval: int = 4) -> list[int]:
    """Hidden-state indices the PAL reads, last first: L, L-k, ..., down to >= 0.

    Index 0 is the embeddings and L the output of the last decoder layer (after the final norm):
    9 layers for L=32 ([32, 28, ..., 0]), 8 for L=30 ([30, 26, ..., 2]).
    """
    if num_layers < 1 or interval < 1:
        raise ValueError(f"num_layers={num_layers} and interval={interval} must be positive")
    return list(range(num_layers, -1, -interval))


class PatchAligner(nn.Module):
    """Hidden states of the chosen layers (each (N, D)) -> features of the teacher's width (N, Ct)."""

    def __init__(self, hidden_size: int, teacher_width: int, num_layers: int,
                 layer_interval: int = 4, heads: int = 8) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.teacher_width = teacher_width
        self.num_layers = num_layers
        self.layer_interval = layer_interval
        self.heads = heads
        self.layers = aligner_layers(num_layers, layer_interval)
        self.layer_proj = nn.ModuleList(  # per layer: LayerNorm(D) -> Linear(D, Ct, no bias)
            nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, teacher_width, bias=False))
            for _ in self.layers
        )
        self.input_proj = nn.Linear(hidden_size, teacher_width)  # on the raw last-layer state
        self.output_proj = nn.Linear(teacher_width, teacher_width)  # on the attention output
        self.scale = teacher_width**-0.5

    def forward(self, layer_states: list[torch.Tensor]) -> torch.Tensor:
        """`layer_states[i]` is hidden state `self.layers[i]` at the image patches, (N, D) each."""
        if len(layer_states) != len(self.layers):
            raise ValueError(f"PatchAligner expects {len(self.layers)} layers {self.layers}, "
                             f"got {len(layer_states)}")
        projected = [proj(s) for proj, s in zip(self.layer_proj, layer_states)]  # each (N, Ct)
        n, ct = projected[0].shape
        query = projected[0].view(n, self.heads, 1, ct // self.heads)  # the last layer: (N, H, 1, Ct/H)
        if len(projected) > 1:  # keys = values = the other layers: (N, H, K, Ct/H)
            others = torch.stack(projected[1:], dim=1).view(n, -1, self.heads, ct // self.heads)
            others = others.transpose(1, 2)
            attn = attend(query, others, others, self.scale)
        else:  # a 1-3 layer LLM has no other layers; attention over one key returns its value
            attn = query
        attn = attn.reshape(n, ct)
        return self.input_proj(layer_states[0]) + self.output_proj(attn)  # (N, Ct)

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write `aligner_config.json` + `aligner.safetensors` (kept beside an inference export).

        `state_dict` overrides the module's own (e.g. weights gathered from shards by the engine)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"hidden_size": self.hidden_size, "teacher_width": self.teacher_width,
                  "num_layers": self.num_layers, "layer_interval": self.layer_interval, "heads": self.heads}
        (directory / ALIGNER_CONFIG).write_text(json.dumps(config, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in (state_dict or self.state_dict()).items()}
        save_file(state, str(directory / ALIGNER_WEIGHTS))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PatchAligner:
        directory = Path(directory)
        config_path = directory / ALIGNER_CONFIG
        if not config_path.exists():
            raise FileNotFoundError(f"no aligner in {directory}: {ALIGNER_CONFIG} is missing")
        aligner = cls(**json.loads(config_path.read_text()))
        aligner.load_state_dict(load_file(str(directory / ALIGNER_WEIGHTS)))
        return aligner


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over each image's valid patches, then over images.

    student, teacher: (N, Ct) features of the valid patches of all images, concatenated;
    image_index: (N,) which image each patch belongs to (0..num_images-1).
    The paper's "L2-normalise then MSE" equals this up to a factor 2 (spec section 4).
    Images without patches in `image_index` do not count.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ in shape")
    distance = 1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)  # (N,)
    # at most N images: N slots need no host sync to size them (a GPU keeps queueing work)
    per_image = torch.zeros_like(distance).index_add_(0, image_index, distance)
    counts = torch.zeros_like(distance).index_add_(0, image_index, torch.ones_like(distance))
    return (per_image / counts.clamp_min(1)).sum() / (counts > 0).sum()
