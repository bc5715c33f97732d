"""Recipe -> everything a stage needs: model, processor, aligner, teacher, data, optimizer, schedule.

The one place where configuration becomes objects; the loop (loop.py) only runs them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from ..assets import resolve_model_path
from ..config import EveConfig
from ..data.image import EveImageProcessor
from ..data.pipeline import SkipPolicy, TrainBatches
from ..data.processor import EveProcessor
from ..data.sources import Source, build_source
from ..model.aligner import PatchAligner
from ..model.eve import EveForCausalLM
from .recipe import Recipe, RecipeError
from .teacher import VisionTeacher

logger = logging.getLogger(__name__)
ALIGNER_DIR = "aligner"


def build_model(recipe: Recipe) -> tuple[EveForCausalLM, EveProcessor, PatchAligner | None]:
    """The stage's starting point: a previous export, or a new EVE around an LLM."""
    if recipe.init_from:
        path = Path(recipe.init_from)
        if not (path / "config.json").exists():
            raise RecipeError(f"init_from: {path} is not an exported EVE model (no config.json)")
        model = EveForCausalLM.from_pretrained(path)
        processor = EveProcessor.from_pretrained(path)
        aligner = PatchAligner.from_pretrained(path / ALIGNER_DIR) if (path / ALIGNER_DIR).exists() else None
    else:
        spec = recipe.model
        if spec.text_model:
            model = EveForCausalLM.from_text_model(resolve_model_path(spec.text_model), **spec.eve)
        else:
            text_config = dict(spec.text_config or {})
            model_type = text_config.pop("model_type", "llama")
            config = EveConfig(text_config=AutoConfig.for_model(model_type, **text_config), **spec.eve)
            model = EveForCausalLM(config)
        processor = EveProcessor.from_config(load_tokenizer(spec.tokenizer or spec.text_model), model.config)
        aligner = None
    _apply_stage_settings(recipe, model, processor)
    return model, processor, aligner


def load_tokenizer(name: str | None) -> PreTrainedTokenizerBase:
    if name == "tiny":
        from ..testing import tiny_tokenizer

        return tiny_tokenizer()
    if name is None:
        raise RecipeError("model.tokenizer: no tokenizer (set model.tokenizer or model.text_model)")
    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def _apply_stage_settings(recipe: Recipe, model: EveForCausalLM, processor: EveProcessor) -> None:
    """A stage may change the template (plain -> vicuna_v1) and the resolution (672 -> 1344)."""
    config = model.config
    if recipe.template and recipe.template != config.template:
        config.template = processor.template = recipe.template
    if recipe.image_size and recipe.image_size != config.image_size:
        token_pixels = config.patch_size * config.pool_size
        config.image_size = recipe.image_size
        config.size_multiple = token_pixels * max(1, recipe.image_size // (24 * token_pixels))
        processor.image_processor = EveImageProcessor(config.image_size, config.size_multiple,
                                                      tuple(config.image_mean), tuple(config.image_std))
    config.image_token_id = processor.image_token_id


def compile_layers(model: EveForCausalLM) -> int:
    """torch.compile every decoder layer of the LLM in place; returns how many were compiled.

    Layer by layer rather than the whole model: the layers share their code, so one compiled graph
    serves all of them (compilation time does not grow with depth), and the parts whose shapes vary
    from batch to batch (the PEL's image grids, the placeholder scatter) stay eager."""
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise RecipeError(f"compile: {type(model.get_decoder()).__name__} has no `layers` to compile")
    for layer in layers:
        layer.compile()
    return len(layers)


def build_aligner(recipe: Recipe, model: EveForCausalLM, teacher: VisionTeacher,
                  aligner: PatchAligner | None) -> PatchAligner:
    config = model.config
    if aligner is not None:
        if aligner.teacher_width != teacher.width or aligner.hidden_size != config.hidden_size:
            raise RecipeError(f"init_from's aligner maps {aligner.hidden_size} -> {aligner.teacher_width} but "
                              f"this stage needs {config.hidden_size} -> {teacher.width} (another teacher?)")
        return aligner
    config.teacher_width = teacher.width
    return PatchAligner(config.hidden_size, teacher.width, config.num_hidden_layers,
                        config.aligner_layer_interval, config.aligner_heads)


def freeze(recipe: Recipe, model: EveForCausalLM, aligner: PatchAligner | None) -> dict[str, list[torch.nn.Parameter]]:
    """Set requires_grad from the recipe's learning rates; return the trainable parameters per module."""
    lr = recipe.optim.lr
    modules: dict[str, list[torch.nn.Module]] = {"pel": [model.patch_embed, model.projector],
                                                 "llm": [model.language_model]}
    if aligner is not None:
        modules["aligner"] = [aligner]
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, parts in modules.items():
        train = lr.get(name, 0.0) > 0
        params = [p for part in parts for p in part.parameters()]
        if name == "llm" and recipe.lora is not None:
            params = [p for n, p in model.language_model.named_parameters() if "lora_" in n]
            for n, p in model.language_model.named_parameters():
                p.requires_grad_("lora_" in n)
        else:
            for p in params:
                p.requires_grad_(train)
        if train:
            groups[name] = params
    return groups


def apply_lora(recipe: Recipe, model: EveForCausalLM) -> None:
    if recipe.lora is None:
        return
    from peft import LoraConfig, get_peft_model

    spec = recipe.lora
    lora = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(spec.target_modules), task_type="CAUSAL_LM")
    model.language_model = get_peft_model(model.language_model, lora)


def parameter_summary(model: EveForCausalLM, aligner: PatchAligner | None, teacher: VisionTeacher | None) -> str:
    """One line: trainable / total parameters of each module."""
    parts = {"pel": [model.patch_embed, model.projector], "llm": [model.language_model]}
    if aligner is not None:
        parts["aligner"] = [aligner]
    if teacher is not None:
        parts["teacher"] = [teacher]
    fields = []
    for name, modules in parts.items():
        total = sum(p.numel() for m in modules for p in m.parameters())
        trainable = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
        fields.append(f"{name} {_human(trainable)}/{_human(total)}" + (" (frozen)" if trainable == 0 else ""))
    return "trainable/total: " + ", ".join(fields)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def build_sources(recipe: Recipe) -> tuple[list[Source], list[float]]:
    from ..demo import data as _demo_data  # noqa: F401  registers the demo's source kinds (mnist, twemoji)

    sources, weights = [], []
    for i, spec in enumerate(recipe.data.sources):
        try:
            sources.append(build_source(spec.kind, dict(spec.options)))
        except (ValueError, FileNotFoundError) as e:
            raise RecipeError(f"data.sources[{i}] ({spec.kind}): {e}") from e
        weights.append(spec.weight)
    return sources, weights


@dataclass
class Schedule:
    accumulation: int
    total_steps: int
    warmup_steps: int


def plan_schedule(recipe: Recipe, batches: TrainBatches, world_size: int) -> Schedule:
    per_step = recipe.micro_batch * world_size
    if recipe.global_batch % per_step:
        raise RecipeError(f"global_batch={recipe.global_batch} is not a multiple of micro_batch x processes "
                          f"= {recipe.micro_batch} x {world_size}")
    accumulation = recipe.global_batch // per_step
    steps_per_epoch = batches.batches_per_epoch() // (accumulation * world_size)
    total = recipe.max_steps or math.floor(recipe.epochs * steps_per_epoch)
    if total < 1:
        raise RecipeError(f"the data gives {batches.batches_per_epoch()} micro-batches of {recipe.micro_batch}: "
                          f"not one step of global_batch={recipe.global_batch}")
    return Schedule(accumulation, total, math.ceil(recipe.optim.warmup_ratio * total))


def lr_lambda(schedule: Schedule, kind: str, min_ratio: float) -> Any:
    """Linear warmup, then cosine decay to min_ratio (or constant)."""
    def factor(step: int) -> float:
        if step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - schedule.warmup_steps) / max(1, schedule.total_steps - schedule.warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def build_batches(recipe: Recipe, sources: list[Source], weights: list[float], processor: EveProcessor,
                  teacher: VisionTeacher | None, rank: int, world_size: int) -> TrainBatches:
    config_ratio = processor.image_processor.size_multiple // (processor.patch_size * processor.pool_size)
    return TrainBatches(sources, weights, processor, recipe.micro_batch, recipe.data.max_length, recipe.seed,
                        rank, world_size, teacher.transform if teacher is not None else None, config_ratio,
                        SkipPolicy(recipe.data.max_skip_ratio), group_size=64 if recipe.data.group_by_length else 1)
