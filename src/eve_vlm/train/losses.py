"""What a training step optimises: next-token CE + weight x alignment loss (spec section 4).

`AlignedEve` holds the EVE model and, when aligning, the PAL; it is the one module the engine
(accelerate: DDP, FSDP2, DeepSpeed) wraps. The teacher stays outside: frozen, owned by the loop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.processor import IGNORE_INDEX
from ..model.aligner import PatchAligner, alignment_loss
from ..model.eve import EveForCausalLM


def gather_patch_states(hidden_states: tuple[torch.Tensor, ...], layers: list[int],
                        patch_positions: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states at the image patches, one (N, D) tensor per chosen layer.

    `patch_positions` (N, r*r) index the flattened (B*T) sequence; the r*r student tokens of one
    teacher patch are averaged (spec: avg_pool2d by 2 at 1344 px; r=1 at 672 px).
    """
    states = []
    index = patch_positions.reshape(-1)
    for layer in layers:
        flat = hidden_states[layer].flatten(0, 1)  # (B*T, D)
        # index_select: its backward is an index_add (advanced indexing's sorts the indices first)
        picked = flat.index_select(0, index).view(*patch_positions.shape, flat.shape[-1])  # (N, r*r, D)
        states.append(picked.mean(dim=1) if picked.shape[1] > 1 else picked.squeeze(1))  # (N, D)
    return states


def answer_token_loss(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module,
                      average: str = "token") -> torch.Tensor:
    """Next-token cross-entropy computed only where there is a label.

    Equal to the LM's own loss, but the vocabulary projection runs on the answer positions only
    (a few percent of an image-text sequence), saving its FLOPs and the (B, T, V) logits.
    `average="sample"` averages each sample's answer tokens first, then the samples that have any.
    """
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])  # (N, V)
    if average == "token":
        return F.cross_entropy(logits.float(), targets[keep])
    losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")  # (N,)
    rows = keep.nonzero()[:, 0]  # the sample of each label, in the order of `losses`
    counts = keep.sum(dim=1)  # (B,)
    per_sample = losses.new_zeros(labels.shape[0]).index_add_(0, rows, losses) / counts.clamp_min(1)
    return per_sample.sum() / (counts > 0).sum()


class AlignedEve(nn.Module):
    """EVE + (optionally) its Patch Aligning Layer: batch -> {loss, ce, align}."""

    def __init__(self, model: EveForCausalLM, aligner: PatchAligner | None = None,
                 align_weight: float = 1.0, ce_average: str = "token") -> None:
        super().__init__()
        self.model = model
        self.aligner = aligner
        self.align_weight = align_weight
        self.ce_average = ce_average
        # models that transform their logits (e.g. soft-capping) keep their own loss path
        self._own_loss = getattr(model.config.text_config, "final_logit_softcapping", None) is not None
        if self._own_loss and ce_average != "token":
            raise ValueError(f"ce_average={ce_average!r}: this LLM computes its own loss (logit soft-capping), "
                             "which averages over tokens")

    def forward(self, batch: dict[str, Any], teacher_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        aligning = self.aligner is not None and teacher_features is not None
        embeds = self.model.embed_inputs(batch["input_ids"], batch.get("pixel_values"))  # (B, T, D)
        if self._own_loss:
            out = self.model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                            labels=batch["labels"], output_hidden_states=aligning, use_cache=False)
            ce, hidden_states = out.loss, out.hidden_states
        else:
            decoder = self.model.language_model.get_decoder()
            out = decoder(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                          output_hidden_states=aligning, use_cache=False)
            ce = answer_token_loss(out.last_hidden_state, batch["labels"], self.model.get_output_embeddings(),
                                   self.ce_average)
            hidden_states = out.hidden_states
        result = {"ce": ce, "loss": ce}
        if aligning:
            states = gather_patch_states(hidden_states, self.aligner.layers, batch["patch_positions"])
            student = self.aligner(states)  # (N, Ct)
            result["align"] = alignment_loss(student, teacher_features, batch["patch_image"])
            result["loss"] = ce + self.align_weight * result["align"]
        return result
