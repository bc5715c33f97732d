"""A training stage as data: a YAML file <-> typed, validated, frozen dataclasses.

Unknown keys, wrong module names and missing data paths are errors raised before any compute,
each naming the exact key (e.g. `optim.lr.llm`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODULES = ("pel", "aligner", "llm")  # pel = patch embedding + projector; llm = the language model


class RecipeError(ValueError):
    """A recipe that cannot run, naming the key."""


@dataclass(frozen=True)
class ModelSpec:
    """How the stage's model is built when it does not start from a previous stage's export."""

    text_model: str | None = None
    """Path or hub id of a pretrained causal LM to build around (e.g. lmsys/vicuna-7b-v1.5)."""
    text_config: dict[str, Any] | None = None
    """A config for a randomly initialised LLM instead (`model_type` + fields); for tiny runs."""
    tokenizer: str | None = None
    """Tokenizer path/id; defaults to `text_model`; `tiny` builds the in-memory test tokenizer."""
    eve: dict[str, Any] = field(default_factory=dict)
    """`EveConfig` fields: vision_width, image_size, template, projector_norm, ..."""


@dataclass(frozen=True)
class TeacherSpec:
    """The frozen vision teacher of the aligner (spec section 4)."""

    path: str
    """A transformers vision model (CLIP vision tower, DINOv2, SigLIP) path or hub id; `dinov2-small`
    names the offline DINOv2-S/14 of the demo."""
    layer: int = -2
    """Which hidden state gives the features (CLIP: -2, the penultimate layer, as the paper)."""
    image_size: int = 336
    """The teacher's own resolution (long edge); its grid is matched to the EVE grid."""
    patch_size: int = 14
    mean: tuple[float, float, float] | None = None
    """Normalisation; None takes the teacher's own (read from its preprocessor config when present)."""
    std: tuple[float, float, float] | None = None
    pad_to_square: bool = False
    """Pad to image_size x image_size and keep the valid patches (the paper's CLIP), instead of
    running at the exact size with interpolated position embeddings."""
    scale: int = 1
    """The teacher sees scale x scale patches per EVE token (the image at `scale` times the paper's
    teacher resolution) and its features are average-pooled back onto the EVE grid. Not in the paper
    (1 there: CLIP at 336 px matches a 672-px EVE grid patch for token); for tiny images, such as the
    demo's 56-px digits, where scale 1 gives the teacher 2 x 2 patches of the whole image."""


@dataclass(frozen=True)
class DataSourceSpec:
    kind: str
    """llava, webdataset, shapes, mnist, twemoji, ..."""
    weight: float = 1.0
    """Samples per epoch = weight x the source's size."""
    options: dict[str, Any] = field(default_factory=dict)
    """Passed to the source: path, image_root, shards, task, split, ..."""


@dataclass(frozen=True)
class DataSpec:
    sources: tuple[DataSourceSpec, ...]
    max_length: int = 2048
    num_workers: int = 0
    group_by_length: bool = True
    """Sort windows of 64 micro-batches by length so padding stays small (off: plain shuffling)."""
    max_skip_ratio: float = 0.0
    """0: the first bad sample stops the run; >0: skip and count, stop past this ratio."""


@dataclass(frozen=True)
class OptimSpec:
    lr: dict[str, float]
    """Learning rate per module (pel, aligner, llm); a module absent or at 0 is frozen."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03
    schedule: str = "cosine"
    """cosine or constant (both after a linear warmup)."""
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class LoraSpec:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    """One stage of EVE training."""

    name: str
    data: DataSpec
    optim: OptimSpec
    output_dir: str = "runs/stage"
    init_from: str | None = None
    """A previous stage's export (`<output_dir>/export`); else the model is built from `model`.
    Relative paths in a recipe are relative to the working directory, as on the command line."""
    model: ModelSpec = field(default_factory=ModelSpec)
    teacher: TeacherSpec | None = None
    teacher_cache: str | None = None
    """A folder where the teacher's features are kept (one safetensors file per image), so epochs after
    the first skip the teacher; null computes them every time. Keyed by the teacher's input and
    identity: one folder may serve several teachers. Entries with NaN/inf are recomputed, never used."""
    align_weight: float = 1.0
    """Total loss = CE + align_weight x alignment loss (spec: 1.0); 0 or no teacher: no aligner."""
    ce_average: str = "token"
    """token: the CE is the mean over every answer token of the batch (LLaVA's, the spec's); sample: each
    sample's answer tokens are averaged first, then the samples, so that long answers (an emoji's name)
    do not outweigh one-token ones (a digit)."""
    template: str | None = None
    """plain, vicuna_v1 or chat; None keeps the model's."""
    image_size: int | None = None
    """Longest image edge for this stage (1344 for HD); None keeps the model's."""
    global_batch: int = 512
    micro_batch: int = 4
    """Per process; accumulation = global_batch / (micro_batch x processes)."""
    epochs: float = 1.0
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    precision: str = "auto"
    """auto (bf16 on GPUs that have it and on CPUs with native bf16 matmuls, AVX512-BF16 or AMX; else fp32),
    bf16, fp16, fp32."""
    gradient_checkpointing: bool = False
    compile: bool = False
    """torch.compile each decoder layer of the LLM (one graph, reused by every layer): fuses the norms,
    rotary and activations between the matmuls. Pays a compilation at the first step; for GPUs and
    long runs (bench/gpu.py measures it)."""
    lora: LoraSpec | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    max_nonfinite_steps: int = 5
    """Consecutive non-finite losses (each step skipped and counted) before the run stops."""
    source_path: str | None = None
    """The YAML file this recipe came from (set by the loader)."""

    def __post_init__(self) -> None:
        lr = self.optim.lr
        for module in lr:
            if module not in MODULES:
                raise RecipeError(f"optim.lr.{module}: unknown module; choose from {MODULES}")
            if lr[module] < 0:
                raise RecipeError(f"optim.lr.{module}={lr[module]} must be >= 0")
        if not any(v > 0 for v in lr.values()):
            raise RecipeError("optim.lr: no module has a learning rate > 0; nothing would train")
        if self.lora is not None and not lr.get("llm"):
            raise RecipeError("lora is set but optim.lr.llm is 0: LoRA adapters would not train")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise RecipeError(f"precision={self.precision!r}: choose auto, bf16, fp16 or fp32")
        if self.ce_average not in ("token", "sample"):
            raise RecipeError(f"ce_average={self.ce_average!r}: choose token or sample")
        if self.optim.schedule not in ("cosine", "constant"):
            raise RecipeError(f"optim.schedule={self.optim.schedule!r}: choose cosine or constant")
        if not 0 <= self.optim.warmup_ratio < 1:
            raise RecipeError(f"optim.warmup_ratio={self.optim.warmup_ratio} must be in [0, 1)")
        if self.global_batch < 1 or self.micro_batch < 1:
            raise RecipeError("global_batch and micro_batch must be positive")
        if self.template not in (None, "plain", "vicuna_v1", "chat"):
            raise RecipeError(f"template={self.template!r}: choose plain, vicuna_v1 or chat")
        if not self.data.sources:
            raise RecipeError("data.sources is empty")
        if self.init_from is None and not (self.model.text_model or self.model.text_config):
            raise RecipeError("set init_from (a previous stage's export) or model.text_model / "
                              "model.text_config")
        if lr.get("aligner") and (self.teacher is None or self.align_weight <= 0):
            raise RecipeError("optim.lr.aligner is set but there is no teacher (or align_weight is 0)")
        if self.teacher_cache is not None and not self.aligning:
            raise RecipeError("teacher_cache is set but there is no teacher (or align_weight is 0)")
        if self.teacher is not None and self.teacher.scale < 1:
            raise RecipeError(f"teacher.scale={self.teacher.scale} must be an integer >= 1")

    @property
    def aligning(self) -> bool:
        return self.teacher is not None and self.align_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading ----------------------------------------------------------------------------------------
def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from a dict, strictly: unknown keys and wrong types name their key."""
    if not isinstance(values, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"{where + '.' if where else ''}{unknown[0]}: unknown key; known keys: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"{where or 'recipe'}: {e}") from e


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        hint, origin, args = options[0], typing.get_origin(options[0]), typing.get_args(options[0])
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where}: expected a list")
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        if inner is not None:
            return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    if origin is dict and len(args) == 2 and args[1] is not Any:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and not isinstance(value, bool):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}={value!r}: expected a number") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise RecipeError(f"{where}={value!r}: expected {hint.__name__}")
    return value


def set_override(values: dict[str, Any], override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to a nested dict."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key=value (e.g. optim.lr.pel=1e-4)")
    key, raw = override.split("=", 1)
    target = values
    parts = key.strip().split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise RecipeError(f"override {key}: {part} is not a mapping")
    target[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe YAML, apply `key=value` overrides, validate, and check data paths exist."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe file {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    for override in overrides:
        set_override(values, override)
    values["source_path"] = str(path)
    recipe = _build(Recipe, values, "")
    _check_paths(recipe)
    return recipe


def _check_paths(recipe: Recipe) -> None:
    for i, source in enumerate(recipe.data.sources):
        for key in ("path", "image_root"):
            value = source.options.get(key)
            if value is not None and not Path(value).exists():
                raise RecipeError(f"data.sources[{i}].options.{key}: {value} does not exist")
