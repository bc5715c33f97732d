"""The Patch Embedding Layer (PEL), spec section 2, and the one function that counts image tokens.

pixels (B, 3, H, W) -> conv 14/14 -> CA1 (each pooled 2x2 query attends to its own 4 patches)
-> CA2 (a learnable CLS attends to all CA1 tokens) -> a learnable SPLIT after every row
-> projector Linear-GELU-Linear -> (B, 1 + h*(w+1), D) tokens in the LLM's width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def image_grid(height: int, width: int, patch_size: int = 14, pool_size: int = 2) -> tuple[int, int]:
    """Rows and columns (h, w) of visual tokens for an image of `height` x `width` pixels."""
    step = patch_size * pool_size
    if height <= 0 or width <= 0 or height % step or width % step:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {step} pixels")
    return height // step, width // step


def num_image_tokens(height: int, width: int, patch_size: int = 14, pool_size: int = 2) -> int:
    """Visual tokens of one image: CLS + h rows of (w tokens + SPLIT) = 1 + h*(w+1).

    The single source of truth for the processor (placeholder expansion) and the model (count check):
    601 for 672x672, 2353 for 1344x1344.
    """
    h, w = image_grid(height, width, patch_size, pool_size)
    return 1 + h * (w + 1)


FEW_KEYS = 16
"""Attention over at most this many keys per query is written out (see `attend`)."""


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v over (..., Q, d) queries and (..., K, d) keys and values.

    CA1 (4 keys) and the aligner (8 keys) attend over a handful of keys for thousands of queries: there
    the products and sums are written out elementwise (softmax in fp32, as the fused kernels do). A
    vision-side training step at 8 x 672 px on an H200 took 9.4-10.2 ms so, 10.6-11.6 with batched
    matmuls, 11.3-12.0 with the fused kernel (`bench/gpu.py --sections vision_profile`). Longer contexts
    (CA2) go to the fused kernel. FlopCounterMode does not count elementwise work."""
    if k.shape[-2] > FEW_KEYS:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    scores = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) * scale  # (..., Q, K)
    weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    return (weights.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2)  # (..., Q, d)


class CrossAttention(nn.Module):
    """Pre-norm cross-attention block shared by CA1 and CA2 (spec section 2).

    q = Linear(LN(query)), [k, v] = Linear(LN(context)) (k rows first), heads split in order,
    scale = width ** -0.5 (the full width, not the head width), output = query + Linear(attn).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = width**-0.5
        self.q_norm = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.kv_norm = nn.LayerNorm(width)
        self.kv_proj = nn.Linear(width, 2 * width, bias=False)
        self.out_proj = nn.Linear(width, width)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, q_len, width = query.shape  # (N, Q, C)
        k_len = context.shape[1]  # context: (N, K, C)
        q = self.q_proj(self.q_norm(query)).view(n, q_len, self.heads, -1).transpose(1, 2)  # (N, H, Q, C/H)
        kv = self.kv_proj(self.kv_norm(context)).view(n, k_len, 2, self.heads, -1)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, K, C/H)
        attn = attend(q, k, v, self.scale)  # (N, H, Q, C/H)
        return query + self.out_proj(attn.transpose(1, 2).reshape(n, q_len, width))


class Projector(nn.Module):
    """Linear(C, D) -> [GELU -> Linear(D, D)] * (depth-1), optionally followed by a LayerNorm."""

    def __init__(self, in_width: int, out_width: int, depth: int = 2, norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_width, out_width)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_width, out_width)]
        self.mlp = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(out_width) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        return self.norm(x) if self.norm is not None else x


class PatchEmbed(nn.Module):
    """Pixels -> PEL sequence of width C, before the projector (spec section 2, steps 1-5)."""

    def __init__(self, width: int, heads: int, patch_size: int = 14, pool_size: int = 2) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pool_size = pool_size
        self.conv = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.local_attn = CrossAttention(width, heads)  # CA1
        self.global_attn = CrossAttention(width, heads)  # CA2
        self.cls_embedding = nn.Parameter(torch.randn(width))
        self.split_embedding = nn.Parameter(torch.randn(width))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + h*(w+1), C), all images of one size."""
        b, _, height, width = pixel_values.shape
        s, p = self.patch_size, self.pool_size
        h, w = image_grid(height, width, s, p)  # a clear error unless both sides are multiples of s * p
        # the conv (kernel = stride = 14) as one matmul over the patches laid out in (window, position,
        # channel, row, column) order: the window layout CA1 needs falls out of the reshape (cuDNN's
        # strided conv took ~1 ms at 8 x 672 px on an H200, docs/benchmarks.md section 6)
        patches = pixel_values.reshape(b, 3, h, p, s, w, p, s)
        patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7).reshape(b * h * w, p * p, 3 * s * s)
        windows = F.linear(patches, self.conv.weight.flatten(1))  # (Bhw, p*p, C): the 4 patches of a token
        c = windows.shape[-1]
        pooled = windows.mean(dim=1, keepdim=True)  # (Bhw, 1, C): the 2x2 average pool
        grid = self.local_attn(pooled, windows).view(b, h, w, c)  # CA1: (B, h, w, C)
        cls = self.cls_embedding.to(grid.dtype).expand(b, 1, c)
        cls = self.global_attn(cls, grid.reshape(b, h * w, c))  # CA2: (B, 1, C)
        split = self.split_embedding.to(grid.dtype).expand(b, h, 1, c)
        rows = torch.cat([grid, split], dim=2).reshape(b, h * (w + 1), c)  # SPLIT after every row
        return torch.cat([cls, rows], dim=1)  # (B, 1 + h*(w+1), C)
