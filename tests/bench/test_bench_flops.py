"""FLOP counts of the benchmarks against formulas written out here (1 multiply-add = 2 FLOPs)."""

import pytest
import torch
import torch.nn.functional as F
from bench.common import count_flops
from bench.vision import EveVision, FuyuVision, LlavaVision, clip_vision_config

from eve_vlm.model.patch_embed import FEW_KEYS


def pel_flops(height: int, width: int, c: int, d: int) -> int:
    """EVE's PEL + projector for one image, spec section 2."""
    hp, wp = height // 14, width // 14
    h, w = hp // 2, wp // 2
    hw, tokens = h * w, 1 + h * (w + 1)
    conv = 2 * c * hp * wp * (3 * 14 * 14)
    # CA1's attention over 4 keys is elementwise (patch_embed.attend), which FlopCounterMode does not count
    ca1 = 2 * hw * c * c + 2 * (4 * hw) * c * (2 * c) + 2 * hw * c * c  # q, kv, out
    # CA2 over more than FEW_KEYS patches runs the fused kernel: QK+AV counted
    ca2 = 2 * c * c + 2 * hw * c * (2 * c) + (2 * 2 * hw * c if hw > FEW_KEYS else 0) + 2 * c * c
    projector = 2 * tokens * (c * d + d * d)
    return conv + ca1 + ca2 + projector


def vit_flops(image: int, patch: int, width: int, mlp: int, layers: int, llm_width: int) -> int:
    """CLIP ViT (all layers, CLS included) + LLaVA's projector over the patch tokens."""
    patches = (image // patch) ** 2
    t = patches + 1
    embed = 2 * width * patches * 3 * patch * patch
    layer = 2 * t * width * 3 * width + 4 * t * t * width + 2 * t * width * width + 2 * 2 * t * width * mlp
    return embed + layers * layer + 2 * patches * (width * llm_width + llm_width * llm_width)


@pytest.mark.parametrize(("height", "width", "c", "d", "heads"), [(56, 84, 32, 64, 4), (112, 112, 64, 48, 8)])
def test_pel_flops_equal_the_formula(height, width, c, d, heads):
    model = EveVision(c, heads, d).requires_grad_(False)
    counted = count_flops(lambda: model(torch.randn(2, 3, height, width)))
    assert counted == 2 * pel_flops(height, width, c, d)


def test_eve_7b_pel_at_672_is_the_papers_42_gflops():
    with torch.device("meta"):
        model = EveVision(1024, 8, 4096)
        counted = count_flops(lambda: model(torch.empty(1, 3, 672, 672)))
    assert counted == pel_flops(672, 672, 1024, 4096) == 42_484_367_360
    assert abs(counted / 42e9 - 1) < 0.02  # paper Table 6: 42 GFLOPs


def test_clip_flops_equal_the_formula_on_cpu_and_on_meta():
    """On the CPU, attention runs a kernel FlopCounterMode does not know: bench.common adds it."""
    config = clip_vision_config(smoke=True)
    model = LlavaVision(config, 64).requires_grad_(False)
    expected = vit_flops(56, 14, 32, 64, 2, 64)
    assert count_flops(lambda: model(torch.randn(1, 3, 56, 56))) == expected
    with torch.device("meta"):
        meta = LlavaVision(config, 64)
        assert count_flops(lambda: meta(torch.empty(1, 3, 56, 56))) == expected


def test_clip_l_336_path_is_about_the_papers_372_gflops():
    with torch.device("meta"):
        model = LlavaVision(clip_vision_config(), 4096)
        counted = count_flops(lambda: model(torch.empty(1, 3, 336, 336)))
    assert counted == vit_flops(336, 14, 1024, 4096, 24, 4096)
    # ours counts the projector (24 GFLOPs) and the unused 24th layer (16 GFLOPs); without them: 366 vs 372
    assert 360e9 < counted - 24.2e9 - 15.9e9 < 375e9


def test_fuyu_is_one_linear_over_30px_patches():
    model = FuyuVision(64).requires_grad_(False)
    counted = count_flops(lambda: model(torch.randn(1, 3, 672, 672)))  # padded to 690: 23 x 23 patches
    assert counted == 2 * 23 * 23 * 2700 * 64


def test_cpu_attention_backward_is_counted():
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    forward = 2 * 2 * (2 * 4 * 16 * 16 * 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == forward
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == 3 * forward


def test_gpu_script_subtracts_exactly_the_checkpoint_recomputation():
    """bench/gpu.py's model FLOPs (checkpointing on, recomputation subtracted) equal a plain step's."""
    from bench import gpu
    from eve_vlm.model.aligner import PatchAligner
    from eve_vlm.train.losses import AlignedEve

    plan = gpu.Plan(smoke=True)
    plan.steps = plan.warmup = 1
    result = gpu.train_attempt(plan, 4)
    model = gpu.build_eve(plan, 4)
    stage = AlignedEve(model, PatchAligner(64, plan.teacher_width, 4, 4, 8)).train()
    batch = gpu.train_batch(plan)
    plain = count_flops(lambda: stage(batch, batch["teacher_features"])["loss"].backward())
    assert result["model_tflop_per_step"] * 1e12 == pytest.approx(plain, rel=1e-12)
    assert result["hardware_tflop_per_step"] > result["model_tflop_per_step"]
