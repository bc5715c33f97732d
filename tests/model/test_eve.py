"""EveForCausalLM: merging, the count check, generation with the cache, batching, saving."""

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor, LlamaForCausalLM

from eve_vlm import EveConfig, EveForCausalLM, EveProcessor
from eve_vlm.testing import tiny_config, tiny_model_and_processor


def _image(width, height, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy())


def _prompt(processor, question, images=1):
    content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor()


def test_image_features_have_one_sequence_per_image(tiny):
    model, _ = tiny
    features = model.get_image_features([torch.randn(3, 56, 84), torch.randn(3, 112, 28)])
    assert [tuple(f.shape) for f in features] == [(1 + 2 * 4, 64), (1 + 4 * 2, 64)]


def test_count_mismatch_raises_naming_both_counts(tiny):
    model, processor = tiny
    image_id = processor.image_token_id
    ids = torch.tensor([[1, 2] + [image_id] * 8 + [3]])  # a 56x84 image needs 9
    with pytest.raises(ValueError, match=r"placeholder tokens \(8\) and visual tokens \(9\)"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 56, 84))
    two = torch.tensor([[image_id] * 9 + [5] + [image_id] * 9])  # two images, three given
    with pytest.raises(ValueError, match=r"\(18\) and visual tokens \(27\)"):
        model(input_ids=two, pixel_values=torch.randn(3, 3, 56, 84))
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=ids)


def test_visual_tokens_land_at_placeholders(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, "What digit is this?"), images=_image(60, 40))
    embeds = model.embed_inputs(inputs["input_ids"], inputs["pixel_values"])
    mask = inputs["input_ids"][0] == processor.image_token_id
    features = model.get_image_features(inputs["pixel_values"])[0]
    torch.testing.assert_close(embeds[0, mask], features)
    text_ids = inputs["input_ids"][0, ~mask]
    torch.testing.assert_close(embeds[0, ~mask], model.get_input_embeddings()(text_ids))


def test_several_images_per_sample_and_mixed_sizes(tiny):
    model, processor = tiny
    prompt = _prompt(processor, "Compare them.", images=2)
    inputs = processor(text=prompt, images=[_image(60, 40), _image(40, 90, 1)])
    assert isinstance(inputs["pixel_values"], list)
    out = model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape


def test_generate_with_cache_equals_without(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, "What is it?"), images=_image(90, 60))
    with_cache = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=True)
    without = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


def test_image_is_embedded_once_in_prefill(tiny, monkeypatch):
    model, processor = tiny
    calls = []
    original = model._embed_same_size
    monkeypatch.setattr(model, "_embed_same_size", lambda px: calls.append(px.shape) or original(px))
    inputs = processor(text=_prompt(processor, "What is it?"), images=_image(90, 60))
    model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert len(calls) == 1


def test_left_padded_batch_equals_single_samples(tiny):
    model, processor = tiny
    prompts = [_prompt(processor, "What digit is this?"), _prompt(processor, "Is it a cat on the mat, yes or no?")]
    images = [_image(60, 40), _image(120, 120, 2)]
    batch = processor(text=prompts, images=images)
    batched = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for i in range(2):
        single = processor(text=prompts[i], images=images[i])
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)[:, single["input_ids"].shape[1]:]
        assert torch.equal(batched[i], alone[0]), i


def test_save_load_round_trip_with_auto_classes(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, EveForCausalLM) and isinstance(loaded_processor, EveProcessor)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    inputs = loaded_processor(text=_prompt(loaded_processor, "What?"), images=_image(50, 50))
    torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_tied_embeddings_stay_tied_after_loading(tmp_path):
    model, _ = tiny_model_and_processor(text={"tie_word_embeddings": True})
    model.save_pretrained(tmp_path)
    loaded = EveForCausalLM.from_pretrained(tmp_path)
    lm = loaded.language_model
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()


def test_qwen2_backbone_works():
    model, processor = tiny_model_and_processor("qwen2")
    assert type(model.language_model).__name__ == "Qwen2ForCausalLM"
    inputs = processor(text=_prompt(processor, "What?"), images=_image(30, 70))
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_from_text_model_keeps_the_llm_weights_and_inits_norm_from_embeddings():
    config = tiny_config(text={"tie_word_embeddings": True})
    llm = LlamaForCausalLM(config.text_config)
    before = {k: v.clone() for k, v in llm.state_dict().items()}
    model = EveForCausalLM.from_text_model(llm, vision_width=32, vision_heads=4, image_size=112,
                                           projector_norm=True)
    for name, tensor in model.language_model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    embeddings = llm.get_input_embeddings().weight
    torch.testing.assert_close(model.projector.norm.weight, embeddings.std(0))
    torch.testing.assert_close(model.projector.norm.bias, embeddings.mean(0))


def test_labels_give_a_loss_only_on_answers(tiny):
    model, processor = tiny
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]},
                {"role": "assistant", "content": "seven"}]
    sample = processor.encode_conversation(messages, [_image(56, 56)])
    batch = processor.collate([sample])
    out = model(**batch)
    logits = out.logits[0, :-1]
    targets = batch["labels"][0, 1:]
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="vision_width"):
        EveConfig(vision_width=30, vision_heads=8)
    with pytest.raises(ValueError, match="image_size"):
        EveConfig(image_size=690)
    with pytest.raises(ValueError, match="template"):
        EveConfig(template="alpaca")
    assert EveConfig(image_size=1344).size_multiple == 56
    assert EveConfig().size_multiple == 28


def _future_changes_past(model, width):
    decoder = model.language_model.get_decoder()
    x = torch.randn(2, 10, width)
    later = x.clone()
    later[:, 5:] += 1.0
    with torch.no_grad():
        a = decoder(inputs_embeds=x, attention_mask=torch.ones(2, 10, dtype=torch.long)).last_hidden_state
        b = decoder(inputs_embeds=later, attention_mask=torch.ones(2, 10, dtype=torch.long)).last_hidden_state
    return (a[:, :5] - b[:, :5]).abs().max().item()


def test_attention_stays_causal_around_a_loaded_llm(tmp_path):
    """Regression: wrapping a loaded LLM once reset its attention implementation to None, which
    dropped the causal mask (tokens saw the future, training loss fell to ~0)."""
    config = tiny_config()
    LlamaForCausalLM(config.text_config).save_pretrained(tmp_path / "llm")
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "llm")
    model = EveForCausalLM.from_text_model(loaded, vision_width=32, vision_heads=4, image_size=112)
    assert model.language_model.config._attn_implementation is not None
    assert _future_changes_past(model, 64) == 0.0
    model.save_pretrained(tmp_path / "eve")
    assert _future_changes_past(EveForCausalLM.from_pretrained(tmp_path / "eve"), 64) == 0.0


def test_generate_projects_only_the_last_position_at_prefill(tiny, monkeypatch):
    model, processor = tiny
    shapes = []
    head = model.get_output_embeddings()
    monkeypatch.setattr(head, "forward", lambda x, f=head.forward: shapes.append(tuple(x.shape)) or f(x))
    inputs = processor(text=_prompt(processor, "What?"), images=_image(56, 56))
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert shapes[0][1] == 1  # (batch, 1, D): not every prompt position
