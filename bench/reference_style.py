"""The reference EVE code's vision side, re-written in its per-image Python-loop style (a stand-in).

The reference implementation cannot run here (it needs its own repository, CUDA and its
checkpoints), so this module reproduces the *style* of its vision tokenizer and its vision
compressor (our PAL) from a reading of it, on OUR modules' weights, so that its outputs equal ours
and only the execution style differs:
  * the patch convolution runs on the whole batch, then a Python loop over images: each image's
    valid box is found from a mask channel (`nonzero`), CA1 runs on that one image with pooled
    queries and `unfold`-ed 2x2 windows, attention written as a broadcast multiply-and-sum (no
    fused attention kernel), CA2 likewise, the SPLIT column is concatenated, and the projector
    runs per image;
  * the aligner stacks the chosen layers' hidden states into one (B, T, L, D) tensor, then loops
    over images and, inside, over layers (LayerNorm + Linear per layer per image), with the
    layer-wise attention as multiply-and-sum, and the loss accumulated per image.
Differences that do not change the work: here the layers are stacked last-first (our aligner's
order) and the reference stacks all L+1 hidden states of the LLM; this stacks only the ones read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eve_vlm.model.aligner import PatchAligner
from eve_vlm.model.patch_embed import CrossAttention, PatchEmbed, Projector


def _local_attention(block: CrossAttention, features: torch.Tensor, pool: int) -> torch.Tensor:
    """CA1 on one image: features (1, C, 2h, 2w) -> (1, h*w, C)."""
    b, c, _, _ = features.shape
    pooled = F.avg_pool2d(features, pool, pool)  # (1, C, h, w)
    h, w = pooled.shape[-2:]
    n = pool * pool
    pooled = pooled.flatten(2).transpose(1, 2)  # (1, hw, C)
    q = block.q_proj(block.q_norm(pooled)).reshape(b, h * w, block.heads, -1).permute(0, 2, 1, 3).unsqueeze(-2)
    windows = features.unfold(2, pool, pool).unfold(3, pool, pool)  # (1, C, h, w, p, p)
    windows = windows.contiguous().view(b, c, h * w, n).permute(0, 2, 3, 1)  # (1, hw, 4, C)
    kv = block.kv_proj(block.kv_norm(windows)).reshape(b, h * w, n, 2, block.heads, -1)
    kv = kv.permute(3, 0, 4, 1, 2, 5)  # (2, 1, H, hw, 4, C/H)
    attn = (q * block.scale * kv[0]).sum(-1).softmax(dim=-1)  # (1, H, hw, 4)
    out = (attn.unsqueeze(-1) * kv[1]).sum(-2)  # (1, H, hw, C/H)
    return pooled + block.out_proj(out.transpose(1, 2).reshape(b, h * w, c))


def _global_attention(block: CrossAttention, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """CA2 on one image: query (1, 1, C) over features (1, K, C) -> (1, 1, C)."""
    b, k, c = features.shape
    q = block.q_proj(block.q_norm(query)).reshape(b, 1, block.heads, -1).transpose(1, 2)  # (1, H, 1, C/H)
    kv = block.kv_proj(block.kv_norm(features)).reshape(b, k, 2, block.heads, -1).permute(2, 0, 3, 1, 4)
    attn = (q * block.scale * kv[0]).sum(-1).softmax(dim=-1)  # (1, H, K)
    out = (attn.unsqueeze(-1) * kv[1]).sum(-2)  # (1, H, C/H)
    return query + block.out_proj(out.reshape(b, 1, c))


def reference_style_tokens(pel: PatchEmbed, projector: Projector, pixel_values: torch.Tensor,
                           pixel_masks: torch.Tensor | None = None) -> list[torch.Tensor]:
    """(B, 3, H, W) (+ (B, 1, H, W) validity mask) -> per image (1 + h*(w+1), D), one image at a time."""
    if pixel_masks is None:
        pixel_masks = torch.ones_like(pixel_values[:, :1])
    features = pel.conv(pixel_values)  # (B, C, H/14, W/14): the one batched op
    patch_masks = F.avg_pool2d(pixel_masks, pel.patch_size, pel.patch_size)  # (B, 1, H/14, W/14)
    out = []
    for i in range(features.shape[0]):
        valid = torch.nonzero(patch_masks[i, 0])  # the valid box of this image
        (top, left), (bottom, right) = valid[0].tolist(), valid[-1].tolist()
        feature = features[i, :, top:bottom + 1, left:right + 1]  # (C, 2h, 2w)
        h, w = feature.shape[1] // pel.pool_size, feature.shape[2] // pel.pool_size
        grid = _local_attention(pel.local_attn, feature.unsqueeze(0), pel.pool_size)  # (1, hw, C)
        cls = _global_attention(pel.global_attn, pel.cls_embedding[None, None, :], grid)[0]  # (1, C)
        grid = grid.transpose(-2, -1).reshape(-1, h, w)  # (C, h, w)
        split = pel.split_embedding[:, None, None].repeat(1, h, 1)  # (C, h, 1)
        rows = torch.cat([grid, split], dim=-1).flatten(1).transpose(0, 1)  # (h*(w+1), C)
        out.append(projector(torch.cat([cls, rows], dim=0)))
    return out


def _layer_attention(aligner: PatchAligner, raw_last: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """CA3 of one image: projected (N, L, Ct), the first is the last layer (the query)."""
    n, layers, ct = projected.shape
    q = projected[:, :1].reshape(n, 1, aligner.heads, -1).transpose(1, 2)  # (N, H, 1, Ct/H)
    if layers == 1:
        fused = q[:, :, 0]
    else:
        kv = projected[:, 1:].reshape(n, layers - 1, aligner.heads, -1).transpose(1, 2)  # (N, H, L-1, Ct/H)
        attn = (q * aligner.scale * kv).sum(-1).softmax(dim=-1)  # (N, H, L-1)
        fused = (attn.unsqueeze(-1) * kv).sum(-2)  # (N, H, Ct/H)
    return aligner.input_proj(raw_last) + aligner.output_proj(fused.reshape(n, ct))


def reference_style_align_loss(aligner: PatchAligner, layer_states: list[torch.Tensor], starts: list[int],
                               grids: list[tuple[int, int]], teacher: list[torch.Tensor]) -> torch.Tensor:
    """layer_states: the chosen layers, last first, each (B, T, D); image i starts at token starts[i]
    with grid grids[i]; teacher[i]: (h*w, Ct). 1 - mean cosine per image, averaged over images."""
    all_features = torch.stack(layer_states, dim=2)  # (B, T, L, D)
    layers, width = all_features.shape[2], all_features.shape[3]
    loss, count = 0.0, 0
    for i, ((h, w), start) in enumerate(zip(grids, starts)):
        features = all_features[i, start:start + 1 + h * (w + 1)]  # (n, L, D)
        features = features.permute(1, 2, 0)[:, :, 1:].reshape(layers, width, h, w + 1)[:, :, :, :-1]
        features = features.flatten(2).permute(2, 0, 1)  # (hw, L, D): CLS and SPLIT dropped
        projected = torch.stack([aligner.layer_proj[j](features[:, j]) for j in range(layers)], dim=1)
        student = _layer_attention(aligner, features[:, 0], projected)  # (hw, Ct)
        loss = loss + 1 - F.cosine_similarity(student, teacher[i], dim=-1).mean()
        count += 1
    return loss / max(count, 1)
