"""Reference EVE checkpoints (EVE-7B, EVE-7B-HD; spec section 9) <-> eve-vlm checkpoints.

`convert_official` reads a reference folder (config.json with model_type "eve", the weights as
safetensors or `.bin`, sharded or not, and the LLM's tokenizer) and writes an `EveForCausalLM`
checkpoint with its processor; the training-only PAL goes to `DST/aligner/`, the CLIP teacher is
dropped. `export_official` writes our checkpoint (and its aligner) back in the reference layout,
so that the reference evaluation scripts can run weights trained here.

Every tensor name of either side is mapped by the one table `NAME_RULES`. Tensors are checked by
name and shape before anything is written and streamed one at a time; dtypes are kept.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, LlamaConfig, PreTrainedTokenizerBase

from ..config import CLIP_MEAN, CLIP_STD, EveConfig
from ..data.processor import EveProcessor
from ..data.templates import IMAGE_TOKEN
from ..model.aligner import ALIGNER_CONFIG, ALIGNER_WEIGHTS, PatchAligner, aligner_layers
from ..model.eve import EveForCausalLM
from .tensors import DEFAULT_MAX_SHARD_BYTES, ShardedWriter, TensorSource, TensorSpec

logger = logging.getLogger(__name__)

REFERENCE_MODEL_TYPE = "eve"
REFERENCE_ARCHITECTURE = "EVELlamaForCausalLM"
REFERENCE_HEADS = 8  # the reference hard-codes 8 heads in CA1, CA2 and CA3 (spec sections 2, 4)
REFERENCE_LAYER_INTERVAL = 4  # its PAL reads hidden states L, L-4, ..., 0 (spec section 4)
REFERENCE_PREPROCESSORS = {672: "openai/eve-patch14-anypixel-672", 1344: "openai/eve-patch14-anypixel-1344"}
REFERENCE_TEACHER = "openai/clip-vit-large-patch14-336"
ALIGNER_DIR = "aligner"
# config.json fields of the reference that are LLaVA's / EVE's, not Llama's (besides every "mm_*")
REFERENCE_ONLY_FIELDS = frozenset({
    "architectures", "model_type", "_name_or_path", "transformers_version", "requires_cliploss",
    "image_aspect_ratio", "image_grid_pinpoints", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
    "use_mm_proj", "vision_tower_lr", "tokenizer_padding_side", "tokenizer_model_max_length",
})
# transformers' generic config bookkeeping, left out of an exported config.json
_GENERIC_CONFIG_FIELDS = ("architectures", "model_type", "_name_or_path", "transformers_version", "id2label",
                          "label2id", "return_dict", "output_hidden_states", "output_attentions",
                          "problem_type", "chunk_size_feed_forward", "is_encoder_decoder")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "chat_template.jinja", "chat_template.json")

# Where a tensor goes: our model, our aligner directory, or nowhere.
MODEL, ALIGNER, TEACHER, DERIVED = "model", "aligner", "teacher", "derived"

# Every reference tensor name and its name here; the first matching rule wins. `{rest}` matches the
# remainder of a name, any other `{field}` one dotted segment; rules without our name drop the tensor.
NAME_RULES: tuple[tuple[str, str | None, str], ...] = (
    # PEL (spec section 2): conv 14/14, CLS, SPLIT, CA1 = local, CA2 = global attention
    ("model.vision_tower.patch_embedding.weight", "patch_embed.conv.weight", MODEL),
    ("model.vision_tower.class_embedding", "patch_embed.cls_embedding", MODEL),
    ("model.vision_tower.split_embedding", "patch_embed.split_embedding", MODEL),
    ("model.vision_tower.{block}_attention.q.0.{param}", "patch_embed.{block}_attn.q_norm.{param}", MODEL),
    ("model.vision_tower.{block}_attention.q.1.{param}", "patch_embed.{block}_attn.q_proj.{param}", MODEL),
    ("model.vision_tower.{block}_attention.kv.0.{param}", "patch_embed.{block}_attn.kv_norm.{param}", MODEL),
    ("model.vision_tower.{block}_attention.kv.1.{param}", "patch_embed.{block}_attn.kv_proj.{param}", MODEL),
    ("model.vision_tower.{block}_attention.proj.{param}", "patch_embed.{block}_attn.out_proj.{param}", MODEL),
    # projector: LLaVA's mlp{N}x_gelu Sequential numbers its Linears 0, 2, ... as ours does
    ("model.mm_projector.{rest}", "projector.mlp.{rest}", MODEL),
    # PAL (spec section 4), training only: norm_layer.N is hidden state L - 4N, as our layer_proj.N
    ("model.vision_tower_compressor.norm_layer.{rest}", "layer_proj.{rest}", ALIGNER),
    ("model.vision_tower_compressor.input_layer.{rest}", "input_proj.{rest}", ALIGNER),
    ("model.vision_tower_compressor.output_layer.{rest}", "output_proj.{rest}", ALIGNER),
    # the CLIP teacher, also reachable through the compressor: training code loads its own
    ("model.vision_tower_compressor.clip_layer.{rest}", None, TEACHER),
    ("model.vision_clip.{rest}", None, TEACHER),
    # RoPE frequencies that old transformers versions stored: recomputed from the config
    ("model.layers.{layer}.self_attn.rotary_emb.inv_freq", None, DERIVED),
    # the Llama causal LM
    ("model.{rest}", "language_model.model.{rest}", MODEL),
    ("lm_head.{rest}", "language_model.lm_head.{rest}", MODEL),
)


def _pattern(template: str) -> re.Pattern[str]:
    regex = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        regex += re.escape(literal)
        if name:
            regex += f"(?P<{name}>.+)" if name == "rest" else f"(?P<{name}>[^.]+)"
    return re.compile(regex)


_RULES = [(_pattern(ref), ref, _pattern(ours) if ours else None, ours, part) for ref, ours, part in NAME_RULES]


def reference_to_ours(name: str) -> tuple[str, str | None] | None:
    """A reference tensor name -> (part, our name; None for a dropped part), None if no rule knows it."""
    for ref_regex, _, _, ours, part in _RULES:
        if match := ref_regex.fullmatch(name):
            return part, ours.format(**match.groupdict()) if ours else None
    return None


def ours_to_reference(part: str, name: str) -> str | None:
    """Our tensor name in `part` (MODEL or ALIGNER) -> the reference name, None if no rule knows it."""
    for _, ref, ours_regex, _, rule_part in _RULES:
        if rule_part == part and ours_regex is not None and (match := ours_regex.fullmatch(name)):
            return ref.format(**match.groupdict())
    return None


class CheckpointMismatchError(ValueError):
    """Tensors that do not fit the expected layout; the message names each one."""


@dataclass
class ConversionSummary:
    """What a conversion wrote and what it left out."""

    files: list[Path] = field(default_factory=list)
    tensors: int = 0
    nbytes: int = 0
    aligner_tensors: int = 0
    dropped: dict[str, tuple[int, int]] = field(default_factory=dict)  # part -> (tensors, bytes)


# --- reference -> eve-vlm ------------------------------------------------------------------------
def convert_official(src: str | Path, dst: str | Path, image_size: int | None = None,
                     tokenizer_dir: str | Path | None = None,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> ConversionSummary:
    """A reference EVE checkpoint folder -> an eve-vlm checkpoint (+ `aligner/`) in `dst`.

    `image_size` overrides the 672/1344 read from the name of `mm_vision_tower`; the tokenizer is
    read from `tokenizer_dir` (default: `src`). Nothing is written if any tensor does not fit.
    """
    src, dst = Path(src), Path(dst)
    reference = _read_reference_config(src)
    source = TensorSource.from_directory(src)
    routed, dropped, unknown = _route(source.specs)
    config = eve_config_from_reference(reference, image_size, _teacher_width(routed[ALIGNER], source.specs),
                                       _main_dtype(source.specs))
    model_specs = {ours: (ref, source.specs[ref]) for ours, ref in routed[MODEL].items()}
    problems = _layout_problems(model_specs, _expected_shapes(_meta_model(config)), unknown,
                                lambda ours: f"{ours_to_reference(MODEL, ours)} (ours: {ours})")
    if routed[ALIGNER]:
        problems += _aligner_problems(routed[ALIGNER], source.specs, config)
    if problems:
        raise CheckpointMismatchError(f"{src} does not fit the reference EVE layout of its config.json:\n"
                                      + "\n".join(problems))
    tokenizer = _reference_tokenizer(Path(tokenizer_dir) if tokenizer_dir else src, config)

    _prepare_output(dst)
    summary = ConversionSummary()
    writer = ShardedWriter(dst, "model", max_shard_bytes)
    to_ours = {ref: ours for ours, ref in routed[MODEL].items()}
    for ref, tensor in source.tensors(to_ours):
        writer.add(to_ours[ref], tensor)
        summary.tensors += 1
    summary.files += writer.close()
    summary.nbytes = writer.total_bytes
    if routed[ALIGNER]:
        summary.files += _write_aligner(source, routed[ALIGNER], config, dst / ALIGNER_DIR)
        summary.aligner_tensors = len(routed[ALIGNER])
    else:
        logger.info("%s holds no PAL weights (model.vision_tower_compressor.*): no aligner written", src)
    for part, names in dropped.items():
        if names:
            nbytes = sum(source.specs[n].nbytes for n in names)
            summary.dropped[part] = (len(names), nbytes)
            what = ("the CLIP teacher (training loads its own)" if part == TEACHER
                    else "RoPE inv_freq buffers (recomputed from the config)")
            logger.info("dropped %d tensors, %.1f MB: %s", len(names), nbytes / 1e6, what)

    processor = EveProcessor.from_config(tokenizer, config)  # records config.image_token_id
    processor.save_pretrained(dst)
    config.save_pretrained(dst)
    logger.info("wrote an eve-vlm checkpoint: %d tensors, %.1f MB, image_size %d, in %s",
                summary.tensors, summary.nbytes / 1e6, config.image_size, dst)
    return summary


def _route(names: Iterable[str]) -> tuple[dict[str, dict[str, str]], dict[str, list[str]], list[str]]:
    """Reference names -> ({part: {our name: reference name}}, {dropped part: names}, unknown names)."""
    routed: dict[str, dict[str, str]] = {MODEL: {}, ALIGNER: {}}
    dropped: dict[str, list[str]] = {TEACHER: [], DERIVED: []}
    unknown: list[str] = []
    for name in names:
        route = reference_to_ours(name)
        if route is None:
            unknown.append(name)
        elif route[1] is None:
            dropped[route[0]].append(name)
        else:
            routed[route[0]][route[1]] = name
    return routed, dropped, unknown


def _read_reference_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{src} has no config.json: not a checkpoint folder")
    reference = json.loads(path.read_text())
    architectures = reference.get("architectures") or []
    if reference.get("model_type") != REFERENCE_MODEL_TYPE or REFERENCE_ARCHITECTURE not in architectures:
        raise ValueError(f"{path}: model_type={reference.get('model_type')!r}, architectures={architectures}; "
                         f"a reference EVE checkpoint has model_type {REFERENCE_MODEL_TYPE!r} and "
                         f"architecture {REFERENCE_ARCHITECTURE!r}")
    missing = [k for k in ("mm_vision_tower", "mm_hidden_size", "mm_projector_type") if k not in reference]
    if missing:
        raise ValueError(f"{path} lacks the reference EVE fields {missing}")
    return reference


def reference_image_size(vision_tower: str) -> int:
    """672 or 1344, as named by the reference's `mm_vision_tower` (its preprocessor's folder)."""
    sizes = {int(s) for s in re.findall(r"(?<!\d)(672|1344)(?!\d)", vision_tower)}
    if len(sizes) != 1:
        raise ValueError(f"mm_vision_tower={vision_tower!r} does not name one image size (672 or 1344, as in "
                         f"{REFERENCE_PREPROCESSORS[672]!r}); give the image size (--image-size)")
    return sizes.pop()


def eve_config_from_reference(reference: Mapping[str, Any], image_size: int | None = None,
                              teacher_width: int = 1024, dtype: torch.dtype | None = None) -> EveConfig:
    """The `EveConfig` of a reference config.json: its Llama fields + the PEL/PAL it implies."""
    projector = re.fullmatch(r"mlp(\d+)x_gelu", str(reference["mm_projector_type"]))
    if projector is None:
        raise ValueError(f"mm_projector_type={reference['mm_projector_type']!r}: only 'mlp<N>x_gelu' "
                         "projectors (EVE's is 'mlp2x_gelu') have a counterpart here")
    text = {k: v for k, v in reference.items() if k not in REFERENCE_ONLY_FIELDS and not k.startswith("mm_")}
    if "torch_dtype" in text:  # the name older transformers versions write
        text["dtype"] = text.pop("torch_dtype")
    if "rope_scaling" in text and text["rope_scaling"] is None:  # the default, deprecated by name
        del text["rope_scaling"]
    if dtype is not None:
        text["dtype"] = str(dtype).removeprefix("torch.")
    return EveConfig(
        text_config=LlamaConfig(**text),
        vision_width=int(reference["mm_hidden_size"]),
        vision_heads=REFERENCE_HEADS,
        projector_depth=int(projector.group(1)),
        image_size=image_size or reference_image_size(str(reference["mm_vision_tower"])),
        template="vicuna_v1",
        aligner_layer_interval=REFERENCE_LAYER_INTERVAL,
        aligner_heads=REFERENCE_HEADS,
        teacher_width=teacher_width,
        dtype=text.get("dtype"),
    )


def _teacher_width(aligner: Mapping[str, str], specs: Mapping[str, TensorSpec]) -> int:
    """Ct, the rows of the PAL's input Linear (D -> Ct); CLIP-ViT-L's 1024 without a PAL."""
    ref = aligner.get("input_proj.weight")
    return specs[ref].shape[0] if ref is not None and len(specs[ref].shape) == 2 else 1024


def _main_dtype(specs: Mapping[str, TensorSpec]) -> torch.dtype | None:
    """The floating dtype holding most bytes: the checkpoint's dtype."""
    counts: Counter[torch.dtype] = Counter()
    for spec in specs.values():
        if spec.dtype.is_floating_point:
            counts[spec.dtype] += spec.nbytes
    return counts.most_common(1)[0][0] if counts else None


def _aligner_problems(aligner: Mapping[str, str], specs: Mapping[str, TensorSpec], config: EveConfig) -> list[str]:
    """The reference PAL must have one norm_layer per hidden state our PatchAligner reads."""
    layers = aligner_layers(config.num_hidden_layers, config.aligner_layer_interval)
    found = sorted({int(m.group(1)) for ours in aligner if (m := re.match(r"layer_proj\.(\d+)\.", ours))})
    if len(found) != len(layers):
        return [f"  the PAL has {len(found)} norm_layer entries (model.vision_tower_compressor.norm_layer."
                f"{{{','.join(map(str, found))}}}), but a {config.num_hidden_layers}-layer LLM read every "
                f"{config.aligner_layer_interval} layers gives {len(layers)} ({layers}); this conversion "
                "cannot place them"]
    aligner_specs = {ours: (ref, specs[ref]) for ours, ref in aligner.items()}
    return _layout_problems(aligner_specs, _expected_shapes(_meta_aligner(config)), [],
                            lambda ours: f"{ours_to_reference(ALIGNER, ours)} (ours: aligner {ours})")


def _write_aligner(source: TensorSource, aligner: Mapping[str, str], config: EveConfig, directory: Path) -> list[Path]:
    """The PAL tensors, in their own dtype, saved by `PatchAligner.save_pretrained` (small: ~40M params)."""
    to_ours = {ref: ours for ours, ref in aligner.items()}
    state = {to_ours[ref]: tensor for ref, tensor in source.tensors(to_ours)}
    module = _meta_aligner(config)
    module.load_state_dict(state, assign=True)  # assign: keep each tensor's dtype
    module.save_pretrained(directory)
    logger.info("wrote the PAL (%d tensors, hidden states %s) to %s", len(state), module.layers, directory)
    return [directory / ALIGNER_CONFIG, directory / ALIGNER_WEIGHTS]


def _reference_tokenizer(directory: Path, config: EveConfig) -> PreTrainedTokenizerBase:
    try:  # the LLM's config picks the tokenizer class where tokenizer_config.json does not
        tokenizer = AutoTokenizer.from_pretrained(directory, config=config.text_config)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the LLM's tokenizer from {directory} ({e}); give its folder "
                         "(--tokenizer), e.g. the base vicuna-7b-v1.5") from e
    if tokenizer.pad_token is None and tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token  # the reference pads with <unk> (vicuna_v1)
    if len(tokenizer) > config.vocab_size:
        logger.warning("the tokenizer of %s has %d tokens, more than the LLM's vocab_size %d", directory,
                       len(tokenizer), config.vocab_size)
    return tokenizer


# --- eve-vlm -> reference ------------------------------------------------------------------------
def export_official(src: str | Path, dst: str | Path, aligner_dir: str | Path | None = None,
                    vision_tower: str | None = None, vision_tower_clip: str = REFERENCE_TEACHER,
                    tokenizer_dir: str | Path | None = None,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> ConversionSummary:
    """An eve-vlm checkpoint (+ its aligner) -> the reference EVE layout, for the reference scripts.

    The aligner is read from `aligner_dir` (default: `src/aligner` where it exists).
    `vision_tower` names the reference preprocessor (default: the published one of the image size);
    the tokenizer files are copied from `tokenizer_dir` (e.g. the base LLM, for tokenizer formats
    of older transformers) or else from `src`, without our `<image>` token.
    """
    src, dst = Path(src), Path(dst)
    config = EveConfig.from_pretrained(src)
    if aligner_dir is None and (src / ALIGNER_DIR / ALIGNER_CONFIG).is_file():
        aligner_dir = src / ALIGNER_DIR
    aligner_config = json.loads((Path(aligner_dir) / ALIGNER_CONFIG).read_text()) if aligner_dir else None
    incompatible = _reference_incompatibilities(config, aligner_config, vision_tower)
    if incompatible:
        raise ValueError(f"{src} cannot be expressed in the reference EVE layout:\n" + "\n".join(incompatible))

    source = TensorSource.from_directory(src)
    sources = [(MODEL, source)]
    problems = _layout_problems({name: (name, spec) for name, spec in source.specs.items()},
                                _expected_shapes(_meta_model(config)), [], str)
    if aligner_config is not None:
        sources.append((ALIGNER, TensorSource([Path(aligner_dir) / ALIGNER_WEIGHTS])))
        problems += _layout_problems({name: (name, spec) for name, spec in sources[-1][1].specs.items()},
                                     _expected_shapes(_meta_aligner_from(**aligner_config)), [],
                                     lambda name: f"aligner {name}")
    renames = {part: {name: ours_to_reference(part, name) for name in tensors.specs} for part, tensors in sources}
    unnamed = sorted(name for names in renames.values() for name, ref in names.items() if ref is None)
    if unnamed:
        problems.append(f"  {len(unnamed)} tensors without a reference name: " + ", ".join(unnamed))
    if problems:
        raise CheckpointMismatchError(f"{src} does not fit the eve-vlm layout of its config.json:\n"
                                      + "\n".join(problems))

    _prepare_output(dst)
    summary = ConversionSummary()
    writer = ShardedWriter(dst, "model", max_shard_bytes)
    for part, tensors in sources:
        for name, tensor in tensors.tensors():
            writer.add(renames[part][name], tensor)
            summary.tensors += part == MODEL
            summary.aligner_tensors += part == ALIGNER
    summary.files += writer.close()
    summary.nbytes = writer.total_bytes
    reference = reference_config(config, requires_cliploss=aligner_config is not None,
                                 vision_tower=vision_tower or REFERENCE_PREPROCESSORS[config.image_size],
                                 vision_tower_clip=vision_tower_clip,
                                 dtype=_main_dtype(source.specs))
    (dst / "config.json").write_text(json.dumps(reference, indent=2) + "\n")
    summary.files.append(dst / "config.json")
    summary.files += _write_reference_tokenizer(Path(tokenizer_dir) if tokenizer_dir else src, dst,
                                                strip_image_token=tokenizer_dir is None)
    logger.info("wrote a reference EVE checkpoint: %d tensors (%d of the PAL), %.1f MB, in %s",
                summary.tensors + summary.aligner_tensors, summary.aligner_tensors, summary.nbytes / 1e6, dst)
    if "eve" not in dst.name.lower():
        logger.warning("LLaVA-style loaders, as the reference's, may pick the model class by folder name: "
                       "consider a name containing 'eve' instead of %s", dst.name)
    return summary


def _reference_incompatibilities(config: EveConfig, aligner_config: Mapping[str, Any] | None,
                                 vision_tower: str | None) -> list[str]:
    """What the reference code cannot express: it fixes the LLM family, heads, strides and preprocessing."""
    checks = [
        (config.text_config.model_type == "llama", f"text_config.model_type={config.text_config.model_type!r}: "
         f"the reference {REFERENCE_ARCHITECTURE} is a Llama"),
        ((config.patch_size, config.pool_size) == (14, 2),
         f"patch_size={config.patch_size}, pool_size={config.pool_size}: the reference uses 14 and 2"),
        (config.vision_heads == REFERENCE_HEADS,
         f"vision_heads={config.vision_heads}: the reference PEL has {REFERENCE_HEADS} heads"),
        (not config.projector_norm, "projector_norm=True: the reference projector has no output LayerNorm"),
        (vision_tower is not None or config.image_size in REFERENCE_PREPROCESSORS,
         f"image_size={config.image_size}: the reference preprocessors are {sorted(REFERENCE_PREPROCESSORS)} "
         "(or name one with --vision-tower)"),
        (config.size_multiple == 28 * max(1, config.image_size // 672),
         f"size_multiple={config.size_multiple}: the reference rounds to 28 px (56 px at 1344)"),
        (list(config.image_mean) == list(CLIP_MEAN) and list(config.image_std) == list(CLIP_STD),
         "image_mean/image_std: the reference normalises with CLIP's"),
    ]
    if aligner_config is not None:
        checks += [
            ((aligner_config["hidden_size"], aligner_config["num_layers"])
             == (config.hidden_size, config.num_hidden_layers),
             f"aligner hidden_size={aligner_config['hidden_size']}, num_layers={aligner_config['num_layers']} "
             f"do not match the LLM's {config.hidden_size}, {config.num_hidden_layers}"),
            ((aligner_config["layer_interval"], aligner_config["heads"]) == (REFERENCE_LAYER_INTERVAL, REFERENCE_HEADS),
             f"aligner layer_interval={aligner_config['layer_interval']}, heads={aligner_config['heads']}: "
             f"the reference PAL uses {REFERENCE_LAYER_INTERVAL} and {REFERENCE_HEADS}"),
        ]
    return [f"  {why}" for ok, why in checks if not ok]


def reference_config(config: EveConfig, requires_cliploss: bool, vision_tower: str,
                     vision_tower_clip: str = REFERENCE_TEACHER, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The reference config.json: Llama fields (in the names older transformers read) + EVE's fields."""
    text = {k: v for k, v in config.text_config.to_dict().items() if k not in _GENERIC_CONFIG_FIELDS}
    rope = dict(text.pop("rope_parameters", None) or {})
    if rope:
        text["rope_theta"] = rope.pop("rope_theta", 10000.0)
        rope_type = rope.pop("rope_type", "default")
        text["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
    text.pop("dtype", None)
    return {
        "architectures": [REFERENCE_ARCHITECTURE],
        "model_type": REFERENCE_MODEL_TYPE,
        **text,
        "torch_dtype": str(dtype or torch.float16).removeprefix("torch."),
        "mm_vision_tower": vision_tower,
        "mm_vision_tower_clip": vision_tower_clip,
        "mm_hidden_size": config.vision_width,
        "mm_projector_type": f"mlp{config.projector_depth}x_gelu",
        "mm_vision_select_layer": -2,  # the teacher's penultimate layer (spec section 4)
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "requires_cliploss": requires_cliploss,
        "tune_mm_mlp_adapter": False,
        "use_mm_proj": True,
    }


def _write_reference_tokenizer(src: Path, dst: Path, strip_image_token: bool) -> list[Path]:
    """Copy the tokenizer files; ours carry an added `<image>` token that the reference must not see."""
    written = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            written.append(dst / name)
    if not written:
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {src}")
    if strip_image_token:
        _remove_added_token(dst, IMAGE_TOKEN)
        logger.info("tokenizer written in the format of transformers %s; for older versions give the base "
                    "LLM's tokenizer folder (--tokenizer)", transformers.__version__)
    return written


def _remove_added_token(directory: Path, token: str) -> None:
    """Remove an added token from the tokenizer files in `directory` (ids of other tokens are unchanged)."""
    def edit(name: str, change: Callable[[Any], Any]) -> None:
        path = directory / name
        if path.is_file():
            path.write_text(json.dumps(change(json.loads(path.read_text())), indent=2, ensure_ascii=False) + "\n")

    def other(entry: Any) -> bool:
        return (entry.get("content") if isinstance(entry, dict) else entry) != token

    def clean_config(data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("added_tokens_decoder"), dict):
            data["added_tokens_decoder"] = {k: v for k, v in data["added_tokens_decoder"].items() if other(v)}
        for key in ("additional_special_tokens", "extra_special_tokens"):
            if isinstance(data.get(key), list):
                data[key] = [entry for entry in data[key] if other(entry)]
        return data

    edit("tokenizer.json", lambda data: {**data, "added_tokens": [t for t in data["added_tokens"] if other(t)]})
    edit("tokenizer_config.json", clean_config)
    edit("special_tokens_map.json", clean_config)
    edit("added_tokens.json", lambda data: {k: v for k, v in data.items() if k != token})


# --- shared --------------------------------------------------------------------------------------
def _meta_model(config: EveConfig) -> nn.Module:
    with torch.device("meta"):  # shapes only, no memory
        return EveForCausalLM(config)


def _meta_aligner(config: EveConfig) -> PatchAligner:
    return _meta_aligner_from(hidden_size=config.hidden_size, teacher_width=config.teacher_width,
                              num_layers=config.num_hidden_layers, layer_interval=config.aligner_layer_interval,
                              heads=config.aligner_heads)


def _meta_aligner_from(**aligner_config: Any) -> PatchAligner:
    with torch.device("meta"):
        return PatchAligner(**aligner_config)


def _expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """The stored tensors of a module and their shapes; tied weights are stored once."""
    seen: set[int] = set()
    shapes = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            shapes[name] = tuple(tensor.shape)
    return shapes


def _layout_problems(found: Mapping[str, tuple[str, TensorSpec]], expected: Mapping[str, tuple[int, ...]],
                     unknown: list[str], describe_missing: Callable[[str], str]) -> list[str]:
    """Unknown, missing and misshapen tensors; `found` maps our name -> (stored name, spec)."""
    unknown = sorted(unknown + [stored for ours, (stored, _) in found.items() if ours not in expected])
    missing = sorted(set(expected) - set(found))
    misshapen = sorted((stored, ours, spec.shape, expected[ours]) for ours, (stored, spec) in found.items()
                       if ours in expected and spec.shape != expected[ours])
    problems = []
    if unknown:
        problems.append(f"  {len(unknown)} unknown tensors (no place for them here): " + ", ".join(unknown))
    if missing:
        problems.append(f"  {len(missing)} missing tensors: "
                        + ", ".join(f"{describe_missing(ours)} {list(expected[ours])}" for ours in missing))
    for stored, ours, shape, want in misshapen:
        where = f" (ours: {ours})" if ours != stored else ""
        problems.append(f"  wrong shape: {stored}{where} is {list(shape)}, the config implies {list(want)}")
    return problems


def _prepare_output(dst: Path) -> None:
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose a new folder")
    dst.mkdir(parents=True, exist_ok=True)
