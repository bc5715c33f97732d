"""Every shipped recipe parses and validates; the paper's numbers are what the spec says."""

from pathlib import Path

import pytest
import yaml

from eve_vlm.train.recipe import Recipe, _build

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_validates(path):
    recipe = _build(Recipe, yaml.safe_load(path.read_text()), "")
    assert recipe.name and recipe.data.sources


def _load(name):
    return _build(Recipe, yaml.safe_load((CONFIGS / name).read_text()), "")


def test_eve_7b_matches_the_paper_recipe():
    s1, s2, s3, hd = (_load(n) for n in ("eve-7b/stage1.yaml", "eve-7b/stage2.yaml", "eve-7b/stage3.yaml",
                                         "eve-7b-hd/stage3.yaml"))
    assert s1.optim.lr == {"pel": 4e-4, "aligner": 4e-4} and "llm" not in s1.optim.lr  # LLM frozen
    assert (s1.optim.warmup_ratio, s2.optim.warmup_ratio, s3.optim.warmup_ratio) == (0.03, 0.01, 0.01)
    assert set(s2.optim.lr.values()) == {4e-5} and set(s3.optim.lr.values()) == {2e-5}
    assert (s1.global_batch, s2.global_batch, s3.global_batch) == (512, 512, 128)
    assert (s1.template, s2.template, s3.template) == ("plain", "plain", "vicuna_v1")
    assert s1.data.max_length == s3.data.max_length == 2048 and hd.data.max_length == 4096
    assert (s3.image_size, hd.image_size) == (672, 1344)
    assert s1.teacher.layer == -2 and s1.teacher.image_size == 336 and s1.align_weight == 1.0
    assert all(r.precision == "bf16" and r.gradient_checkpointing and r.optim.weight_decay == 0
               for r in (s1, s2, s3, hd))
    assert s1.model.eve["vision_width"] == 1024 and s1.model.eve["vision_heads"] == 8


def test_accelerate_configs_name_the_engines():
    engines = {p.stem: yaml.safe_load(p.read_text())["distributed_type"] for p in (CONFIGS / "accelerate").glob("*.yaml")}
    assert engines == {"cpu-2proc": "MULTI_CPU", "ddp": "MULTI_GPU", "fsdp2": "FSDP",
                       "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}
    fsdp = yaml.safe_load((CONFIGS / "accelerate" / "fsdp2.yaml").read_text())
    assert fsdp["fsdp_config"]["fsdp_version"] == 2
