"""Reference EVE checkpoints -> eve-vlm -> reference: every tensor placed, checked against the spec."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference_layout import (
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    LAYERS,
    VOCAB,
    WIDTH,
    reference_config,
    reference_state,
)
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from eve_vlm.cli import main
from eve_vlm.config import EveConfig
from eve_vlm.convert import CheckpointMismatchError, convert_official, export_official
from eve_vlm.convert.official import (
    ALIGNER,
    DERIVED,
    MODEL,
    TEACHER,
    eve_config_from_reference,
    ours_to_reference,
    reference_to_ours,
)
from eve_vlm.convert.tensors import TensorSource, parse_size
from eve_vlm.data.processor import EveProcessor
from eve_vlm.model.aligner import ALIGNER_WEIGHTS, PatchAligner
from eve_vlm.model.eve import EveForCausalLM
from eve_vlm.testing import tiny_model_and_processor


# --- independent computations from the reference tensors (spec section 2) ------------------------
def reference_visual_tokens(ref: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """The PEL + projector of one (3, H, W) image, written out by loops: (1 + h*(w+1), D)."""
    w = {name: t.float() for name, t in ref.items()}
    feat = F.conv2d(image[None], w["model.vision_tower.patch_embedding.weight"], stride=14)[0]  # (C, 2h, 2w)
    c, h, wd = feat.shape[0], feat.shape[1] // 2, feat.shape[2] // 2

    def attention(block: str, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        p = f"model.vision_tower.{block}_attention."
        q = F.layer_norm(query, (c,), w[p + "q.0.weight"], w[p + "q.0.bias"]) @ w[p + "q.1.weight"].T
        kv = F.layer_norm(context, (c,), w[p + "kv.0.weight"], w[p + "kv.0.bias"]) @ w[p + "kv.1.weight"].T
        k, v = kv.view(-1, 2, HEADS, c // HEADS).unbind(1)  # (K, 8, C/8) each: k rows first, then v
        scores = torch.einsum("qhd,khd->hqk", q.view(-1, HEADS, c // HEADS), k) * c**-0.5  # full-width scale
        out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(-1, c)
        return query + out @ w[p + "proj.weight"].T + w[p + "proj.bias"]

    grid = torch.empty(h, wd, c)
    for i in range(h):
        for j in range(wd):
            window = feat[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(c, 4).T  # its own 4 patches
            grid[i, j] = attention("local", window.mean(0, keepdim=True), window)[0]  # CA1
    cls = attention("global", w["model.vision_tower.class_embedding"][None], grid.reshape(-1, c))  # CA2
    split = w["model.vision_tower.split_embedding"][None]
    sequence = torch.cat([cls, *[torch.cat([grid[i], split]) for i in range(h)]])  # (1 + h*(w+1), C)
    hidden = F.gelu(sequence @ w["model.mm_projector.0.weight"].T + w["model.mm_projector.0.bias"])
    return hidden @ w["model.mm_projector.2.weight"].T + w["model.mm_projector.2.bias"]


def reference_llama(ref: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """A plain transformers Llama holding the reference LLM tensors (fp32)."""
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB, rms_norm_eps=1e-5,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    llama = LlamaForCausalLM(config).eval()
    llm = {name: t.float() for name, t in ref.items()
           if name.startswith(("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head."))}
    llama.load_state_dict(llm, strict=True)
    return llama


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.uint8)


# --- the name table -------------------------------------------------------------------------------
def test_name_table_maps_every_tensor_both_ways():
    config = eve_config_from_reference(reference_config(), teacher_width=16)
    with torch.device("meta"):
        model = EveForCausalLM(config)
        aligner = PatchAligner(HIDDEN, 16, LAYERS, 4, 8)
    for part, module in ((MODEL, model), (ALIGNER, aligner)):
        for name in module.state_dict():
            reference = ours_to_reference(part, name)
            assert reference is not None, name
            assert reference_to_ours(reference) == (part, name)
    for name in reference_state():
        assert reference_to_ours(name) is not None, name
    assert reference_to_ours("model.vision_clip.vision_tower.x.weight") == (TEACHER, None)
    assert reference_to_ours("model.layers.3.self_attn.rotary_emb.inv_freq") == (DERIVED, None)
    assert reference_to_ours("vision_head.weight") is None


# --- conversion places every tensor ---------------------------------------------------------------
def test_converted_model_computes_the_reference_visual_tokens_and_logits(make_reference, tmp_path):
    ref = reference_state()
    convert_official(make_reference(state=ref), tmp_path / "ours")
    model, info = EveForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    model.eval()
    torch.manual_seed(0)
    image = torch.randn(3, 56, 84)  # a 2 x 3 grid of visual tokens

    with torch.no_grad():
        expected_tokens = reference_visual_tokens(ref, image)
        tokens = model.get_image_features(image[None])[0]
        assert tokens.shape == (1 + 2 * (3 + 1), HIDDEN)
        torch.testing.assert_close(tokens, expected_tokens, atol=1e-4, rtol=1e-4)

        processor = EveProcessor.from_pretrained(tmp_path / "ours")
        input_ids, _ = processor.encode("USER: <image>\nWhat digit is this? ASSISTANT:", [(56, 84)])
        input_ids = torch.tensor([input_ids])
        logits = model(input_ids=input_ids, pixel_values=image[None]).logits

        llama = reference_llama(ref)
        is_image = input_ids[0] == processor.image_token_id
        embeds = llama.get_input_embeddings()(input_ids.masked_fill(is_image[None], 0))
        embeds[0, is_image] = expected_tokens
        expected_logits = llama(inputs_embeds=embeds).logits
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=1e-4)


def test_converted_config_and_processor(make_reference, tmp_path):
    convert_official(make_reference(), tmp_path / "ours")
    config = EveConfig.from_pretrained(tmp_path / "ours")
    assert (config.vision_width, config.vision_heads, config.hidden_size, config.num_hidden_layers) == (
        WIDTH, HEADS, HIDDEN, LAYERS)
    assert (config.image_size, config.size_multiple, config.template) == (672, 28, "vicuna_v1")
    assert config.text_config.model_type == "llama" and config.text_config.rms_norm_eps == 1e-5
    processor = EveProcessor.from_pretrained(tmp_path / "ours")
    assert processor.image_token_id == config.image_token_id == VOCAB  # added after the LLM's vocabulary
    pixels = processor.process_images([Image.fromarray(np.zeros((50, 100, 3), dtype=np.uint8))])[0]
    assert pixels.shape == (3, 336, 672)


def test_image_size_is_read_from_the_preprocessor_name():
    hd = eve_config_from_reference(reference_config(mm_vision_tower="/data/openai/eve-patch14-anypixel-1344/"))
    assert (hd.image_size, hd.size_multiple) == (1344, 56)
    unnamed = reference_config(mm_vision_tower="openai/eve-patch14-anypixel")
    with pytest.raises(ValueError, match="--image-size"):
        eve_config_from_reference(unnamed)
    assert eve_config_from_reference(unnamed, image_size=672).image_size == 672
    with pytest.raises(ValueError, match="mm_projector_type='linear'"):
        eve_config_from_reference(reference_config(mm_projector_type="linear"))


# --- round trip -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "shards", "dtype"), [
    ("safetensors", 1, torch.float16), ("bin", 2, torch.float16), ("safetensors", 3, torch.bfloat16)])
def test_round_trip_is_bit_identical(make_reference, tmp_path, fmt, shards, dtype):
    ref = reference_state(dtype)
    config = reference_config(torch_dtype=str(dtype).removeprefix("torch."))
    src = make_reference(state=ref, config=config, fmt=fmt, shards=shards)
    convert_official(src, tmp_path / "ours", max_shard_bytes=40_000)
    assert len(list((tmp_path / "ours").glob("model-*-of-*.safetensors"))) > 1  # bounded shards + index
    export_official(tmp_path / "ours", tmp_path / "eve-export", max_shard_bytes=40_000)

    exported = dict(TensorSource.from_directory(tmp_path / "eve-export").tensors())
    kept = {name: t for name, t in ref.items() if reference_to_ours(name)[0] in (MODEL, ALIGNER)}
    assert len(kept) == len(ref) - 3  # only the teacher is left out
    assert sorted(exported) == sorted(kept)
    for name, tensor in kept.items():
        assert exported[name].dtype == dtype, name
        assert torch.equal(bits(exported[name]), bits(tensor)), name

    reference = json.loads((tmp_path / "eve-export" / "config.json").read_text())
    for field, value in config.items():
        if field not in ("_name_or_path", "transformers_version"):
            assert reference[field] == value, field
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "eve-export", config=LlamaConfig())
    assert "<image>" not in tokenizer.get_vocab() and len(tokenizer) == VOCAB

    convert_official(tmp_path / "eve-export", tmp_path / "ours-again")  # the export reads back
    first = dict(TensorSource.from_directory(tmp_path / "ours").tensors())
    again = dict(TensorSource.from_directory(tmp_path / "ours-again").tensors())
    assert sorted(first) == sorted(again)
    assert all(torch.equal(bits(first[name]), bits(again[name])) for name in first)


# --- the aligner and the teacher ------------------------------------------------------------------
def test_aligner_is_written_apart_and_the_teacher_dropped(make_reference, tmp_path, caplog):
    ref = reference_state()
    with caplog.at_level(logging.INFO, logger="eve_vlm.convert"):
        summary = convert_official(make_reference(state=ref), tmp_path / "ours")
    teacher = [name for name in ref if "vision_clip" in name or "clip_layer" in name]
    teacher_bytes = sum(ref[name].numel() * ref[name].element_size() for name in teacher)
    assert summary.dropped == {TEACHER: (3, teacher_bytes)}
    assert f"dropped 3 tensors, {teacher_bytes / 1e6:.1f} MB: the CLIP teacher" in caplog.text
    model_names = set(TensorSource.from_directory(tmp_path / "ours").specs)
    assert not any("clip" in name or "compressor" in name or "layer_proj" in name for name in model_names)

    aligner = PatchAligner.from_pretrained(tmp_path / "ours" / "aligner")
    assert aligner.layers == (LAYERS - torch.arange(0, LAYERS + 1, 4)).tolist()  # the reference's layer_idx
    for i in range(len(aligner.layers)):
        prefix = f"model.vision_tower_compressor.norm_layer.{i}."
        assert torch.equal(aligner.layer_proj[i][0].weight, ref[prefix + "0.weight"].float())
        assert torch.equal(aligner.layer_proj[i][0].bias, ref[prefix + "0.bias"].float())
        assert torch.equal(aligner.layer_proj[i][1].weight, ref[prefix + "1.weight"].float())
    assert torch.equal(aligner.input_proj.weight, ref["model.vision_tower_compressor.input_layer.weight"].float())
    assert torch.equal(aligner.output_proj.bias, ref["model.vision_tower_compressor.output_layer.bias"].float())
    stored = TensorSource([tmp_path / "ours" / "aligner" / ALIGNER_WEIGHTS]).specs
    assert {spec.dtype for spec in stored.values()} == {torch.float16}


def test_a_checkpoint_without_aligner(make_reference, tmp_path):
    convert_official(make_reference(state=reference_state(aligner=False, teacher=False)), tmp_path / "ours")
    assert not (tmp_path / "ours" / "aligner").exists()
    export_official(tmp_path / "ours", tmp_path / "eve-export")
    reference = json.loads((tmp_path / "eve-export" / "config.json").read_text())
    assert reference["requires_cliploss"] is False
    assert not any("compressor" in name for name in TensorSource.from_directory(tmp_path / "eve-export").specs)


# --- errors ---------------------------------------------------------------------------------------
def test_unknown_tensors_are_an_error_naming_them(make_reference, tmp_path):
    ref = reference_state()
    ref["model.vision_tower.position_embedding"] = torch.zeros(4, dtype=torch.float16)
    ref["vision_head.weight"] = torch.zeros(2, 2, dtype=torch.float16)
    with pytest.raises(CheckpointMismatchError, match="2 unknown tensors") as error:
        convert_official(make_reference(state=ref), tmp_path / "out")
    assert "model.vision_tower.position_embedding" in str(error.value) and "vision_head.weight" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_tensor_is_an_error_naming_it(make_reference, tmp_path):
    ref = reference_state()
    del ref["model.mm_projector.2.bias"]
    with pytest.raises(CheckpointMismatchError,
                       match=r"1 missing tensors: model\.mm_projector\.2\.bias \(ours: projector\.mlp\.2\.bias\) \[64\]"):
        convert_official(make_reference(state=ref), tmp_path / "out")


def test_wrong_shape_is_an_error_naming_tensor_and_shapes(make_reference, tmp_path):
    ref = reference_state()
    ref["model.vision_tower.local_attention.kv.1.weight"] = torch.zeros(2 * WIDTH, WIDTH + 1, dtype=torch.float16)
    with pytest.raises(CheckpointMismatchError,
                       match=r"wrong shape: model\.vision_tower\.local_attention\.kv\.1\.weight \(ours: "
                             r"patch_embed\.local_attn\.kv_proj\.weight\) is \[64, 33\], the config implies \[64, 32\]"):
        convert_official(make_reference(state=ref), tmp_path / "out")


def test_aligner_layer_count_must_match(make_reference, tmp_path):
    ref = reference_state()
    for suffix in ("0.weight", "0.bias"):
        ref[f"model.vision_tower_compressor.norm_layer.2.{suffix}"] = torch.ones(HIDDEN, dtype=torch.float16)
    ref["model.vision_tower_compressor.norm_layer.2.1.weight"] = torch.zeros(16, HIDDEN, dtype=torch.float16)
    with pytest.raises(CheckpointMismatchError, match=r"the PAL has 3 norm_layer entries .* gives 2 \(\[4, 0\]\)"):
        convert_official(make_reference(state=ref), tmp_path / "out")


def test_not_a_reference_checkpoint(make_reference, tmp_path):
    src = make_reference(config={**reference_config(), "model_type": "llava_llama"})
    with pytest.raises(ValueError, match="model_type='llava_llama'"):
        convert_official(src, tmp_path / "out")


def test_export_refuses_what_the_reference_cannot_express(tmp_path):
    model, processor = tiny_model_and_processor()  # 4 PEL heads, 112 px images
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="vision_heads=4") as error:
        export_official(tmp_path / "tiny", tmp_path / "eve-out")
    assert "image_size=112" in str(error.value)


# --- command line ---------------------------------------------------------------------------------
def test_command_line(make_reference, tmp_path, capsys):
    src = make_reference(fmt="bin")
    assert main(["convert-official", str(src), str(tmp_path / "ours")]) == 0
    assert main(["export-official", str(tmp_path / "ours"), str(tmp_path / "eve-export"),
                 "--max-shard-size", "100KB"]) == 0
    output = capsys.readouterr().out
    assert "aligner with 10 tensors" in output and "dropped 3 teacher tensors" in output
    assert (tmp_path / "eve-export" / "model.safetensors.index.json").is_file()
    with pytest.raises(SystemExit, match="is not empty"):
        main(["convert-official", str(src), str(tmp_path / "ours")])


def test_parse_size():
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1GiB") == 1024**3
    with pytest.raises(ValueError, match="not a number of bytes"):
        parse_size("big")
