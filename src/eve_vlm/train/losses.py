"""What a training step optimises: next-token CE + weight x alignment loss (spec section 4).

`AlignedEve` holds the EVE model and, when aligning, the PAL; it is the one module the engine
(accelerate: DDP, FSDP2, DeepSpeed) wraps. The teacher stays outside: frozen, owned by the loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..model.aligner import PatchAligner, alignment_loss
from ..model.eve import EveForCausalLM


def gather_patch_states(hidden_states: tuple[torch.Tensor, ...], layers: list[int],
                        patch_positions: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states at the image patches, one (N, D) tensor per chosen layer.

    `patch_positions` (N, r*r) index the flattened (B*T) sequence; the r*r student tokens of one
    teacher patch are averaged (spec: avg_pool2d by 2 at 1344 px; r=1 at 672 px).
    """
    states = []
    for layer in layers:
        flat = hidden_states[layer].flatten(0, 1)  # (B*T, D)
        states.append(flat[patch_positions].mean(dim=1))  # (N, D)
    return states


class AlignedEve(nn.Module):
    """EVE + (optionally) its Patch Aligning Layer: batch -> {loss, ce, align}."""

    def __init__(self, model: EveForCausalLM, aligner: PatchAligner | None = None,
                 align_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.aligner = aligner
        self.align_weight = align_weight

    def forward(self, batch: dict[str, Any], teacher_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        aligning = self.aligner is not None and teacher_features is not None
        out = self.model(input_ids=batch["input_ids"], pixel_values=batch.get("pixel_values"),
                         attention_mask=batch["attention_mask"], labels=batch["labels"],
                         output_hidden_states=aligning, use_cache=False)
        result = {"ce": out.loss}
        if aligning:
            states = gather_patch_states(out.hidden_states, self.aligner.layers, batch["patch_positions"])
            student = self.aligner(states)  # (N, Ct)
            result["align"] = alignment_loss(student, teacher_features, batch["patch_image"])
            result["loss"] = out.loss + self.align_weight * result["align"]
        else:
            result["loss"] = out.loss
        return result
