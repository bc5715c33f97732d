"""The PEL against the spec (section 2), written out independently here."""

import math

import pytest
import torch
import torch.nn.functional as F

from eve_vlm.model.patch_embed import PatchEmbed, Projector, image_grid, num_image_tokens


@pytest.mark.parametrize(("height", "width", "tokens"), [
    (672, 672, 601), (1344, 1344, 2353), (672, 448, 1 + 24 * 17), (448, 672, 1 + 16 * 25),
    (28, 28, 3), (56, 84, 1 + 2 * 4), (1344, 896, 1 + 48 * 33),
])
def test_num_image_tokens(height, width, tokens):
    assert num_image_tokens(height, width) == tokens


def test_num_image_tokens_rejects_sizes_off_the_grid():
    with pytest.raises(ValueError, match="multiples of 28"):
        num_image_tokens(672, 670)
    with pytest.raises(ValueError, match="multiples of 28"):
        image_grid(0, 28)


def _reference_attention(query, context, ln_q, w_q, ln_kv, w_kv, w_o, b_o, heads):
    """Spec section 2, literally: per query, softmax over its context with scale C**-0.5."""
    c = query.shape[-1]
    q = F.layer_norm(query, (c,), *ln_q) @ w_q.T  # (Q, C)
    kv = F.layer_norm(context, (c,), *ln_kv) @ w_kv.T  # (K, 2C): k rows first, then v
    k, v = kv[:, :c], kv[:, c:]
    out = torch.empty_like(q)
    d = c // heads
    for head in range(heads):
        cols = slice(head * d, (head + 1) * d)
        weights = torch.softmax(q[:, cols] @ k[:, cols].T * c**-0.5, dim=-1)
        out[:, cols] = weights @ v[:, cols]
    return query + out @ w_o.T + b_o


def _params(block):
    return ((block.q_norm.weight, block.q_norm.bias), block.q_proj.weight,
            (block.kv_norm.weight, block.kv_norm.bias), block.kv_proj.weight,
            block.out_proj.weight, block.out_proj.bias)


def reference_pel(pel: PatchEmbed, image: torch.Tensor, heads: int) -> torch.Tensor:
    """An independent, loop-based computation of the PEL sequence of one (3, H, W) image."""
    feat = F.conv2d(image[None], pel.conv.weight, stride=14)[0]  # (C, 2h, 2w)
    c, hp, wp = feat.shape
    h, w = hp // 2, wp // 2
    grid = torch.empty(h, w, c)
    for i in range(h):
        for j in range(w):
            window = feat[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(c, 4).T  # (4, C)
            pooled = window.mean(0, keepdim=True)  # avg_pool2d(2, 2)
            grid[i, j] = _reference_attention(pooled, window, *_params(pel.local_attn), heads)[0]
    cls = _reference_attention(pel.cls_embedding[None], grid.reshape(h * w, c), *_params(pel.global_attn),
                               heads)
    rows = []
    for i in range(h):
        rows += [grid[i], pel.split_embedding[None]]
    return torch.cat([cls] + rows)


def _randomise(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


def test_pel_matches_the_spec_formulas():
    pel = PatchEmbed(width=16, heads=4)
    _randomise(pel)
    image = torch.randn(3, 56, 84)
    got = pel(image[None])[0]
    assert got.shape == (num_image_tokens(56, 84), 16)
    torch.testing.assert_close(got, reference_pel(pel, image, heads=4), atol=1e-5, rtol=1e-5)


def test_sequence_layout_cls_rows_split():
    pel = PatchEmbed(width=8, heads=2)
    out = pel(torch.randn(2, 3, 84, 56))[0]  # h=3, w=2
    for row in range(3):
        split_pos = 1 + row * 3 + 2
        torch.testing.assert_close(out[split_pos], pel.split_embedding.detach())
    assert out.shape[0] == 1 + 3 * 3


def test_ca1_is_local():
    """Changing one input patch changes only its own pooled token among the grid tokens."""
    pel = PatchEmbed(width=16, heads=4)
    _randomise(pel)
    image = torch.randn(1, 3, 84, 84)  # 3x3 grid of tokens
    changed = image.clone()
    changed[..., 28:42, 42:56] += 1.0  # patch (2, 3) of the 6x6 conv grid -> token (1, 1)
    a, b = pel(image)[0], pel(changed)[0]
    grid_positions = [1 + r * 4 + c for r in range(3) for c in range(3)]
    diff = [(a[p] - b[p]).abs().max().item() > 1e-6 for p in grid_positions]
    assert diff == [p == 1 + 1 * 4 + 1 for p in grid_positions]
    assert (a[0] - b[0]).abs().max() > 1e-6  # CA2's CLS sees every token


def test_attention_scale_is_full_width():
    pel = PatchEmbed(width=16, heads=4)
    assert math.isclose(pel.local_attn.scale, 16**-0.5) and math.isclose(pel.global_attn.scale, 16**-0.5)


def test_projector_is_linear_gelu_linear():
    proj = Projector(8, 12, depth=2)
    kinds = [type(m).__name__ for m in proj.mlp]
    assert kinds == ["Linear", "GELU", "Linear"] and proj.norm is None
    x = torch.randn(5, 8)
    ref = proj.mlp[2](F.gelu(proj.mlp[0](x)))
    torch.testing.assert_close(proj(x), ref)


def test_batched_pel_equals_per_image():
    pel = PatchEmbed(width=16, heads=4)
    _randomise(pel)
    images = torch.randn(4, 3, 56, 84)
    batched = pel(images)
    for i in range(4):
        torch.testing.assert_close(batched[i], pel(images[i:i + 1])[0], atol=1e-5, rtol=1e-5)


def test_pel_refuses_sizes_that_are_not_multiples_of_a_token():
    pel = PatchEmbed(16, 4)
    with pytest.raises(ValueError, match="multiples of 28"):
        pel(torch.zeros(1, 3, 56, 70))
