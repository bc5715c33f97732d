"""EveProcessor: placeholder expansion, templates and labels."""

import pytest
import torch
from PIL import Image

from eve_vlm.data.processor import IGNORE_INDEX, EveProcessor
from eve_vlm.data.templates import VICUNA_SYSTEM, ConversationError, render
from eve_vlm.testing import tiny_config, tiny_tokenizer


@pytest.fixture()
def processor():
    return EveProcessor.from_config(tiny_tokenizer(), tiny_config(image_size=672))


def _decode_labels(processor, labels):
    return processor.tokenizer.decode([t for t in labels if t != IGNORE_INDEX])


def test_each_image_expands_to_its_token_count(processor):
    text = "<image>\nand<image>"
    inputs = processor(text=text, images=[Image.new("RGB", (672, 672)), Image.new("RGB", (640, 480))])
    ids = inputs["input_ids"][0]
    assert int((ids == processor.image_token_id).sum()) == 601 + (1 + 18 * 25)
    assert inputs["pixel_values"][0].shape == (3, 672, 672) and inputs["pixel_values"][1].shape == (3, 504, 672)


def test_marker_and_image_counts_must_agree(processor):
    with pytest.raises(ValueError, match="1 <image> markers but 2 images"):
        processor(text="<image> hi", images=[Image.new("RGB", (9, 9))] * 2)


def test_vicuna_v1_renders_the_spec_and_labels_only_answers(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit is this?"}]},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Is it odd?"},
        {"role": "assistant", "content": "yes"},
    ]
    rendered = render(messages, "vicuna_v1", "</s>")
    assert rendered.text == (VICUNA_SYSTEM + " USER: <image>\nWhat digit is this? ASSISTANT: 7</s>"
                             "USER: Is it odd? ASSISTANT: yes</s>")
    sample = processor.encode_conversation(messages, [Image.new("RGB", (56, 56))])
    assert _decode_labels(processor, sample["labels"]) == " 7</s> yes</s>"
    prompt = processor.apply_chat_template(messages[:1], add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhat digit is this? ASSISTANT:")


def test_plain_template_is_image_caption_newline():
    messages = [{"role": "user", "content": [{"type": "image"}]},
                {"role": "assistant", "content": "a handwritten digit seven"}]
    rendered = render(messages, "plain")
    assert rendered.text == "<image>a handwritten digit seven\n"
    assert rendered.text[slice(*rendered.targets[0])] == "a handwritten digit seven\n"


def test_chat_template_labels_the_assistant_turns():
    processor = EveProcessor.from_config(tiny_tokenizer(), tiny_config(template="chat"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]},
                {"role": "assistant", "content": "seven"}]
    sample = processor.encode_conversation(messages, [Image.new("RGB", (56, 56))])
    assert _decode_labels(processor, sample["labels"]) == "seven<|im_end|>\n"
    assert processor.apply_chat_template(messages[:1], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")


def test_prompt_tokens_equal_the_prefix_of_the_training_sample(processor):
    """Inference tokenises a prompt exactly as training did."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]},
                {"role": "assistant", "content": "seven"}]
    image = Image.new("RGB", (56, 84))
    train = processor.encode_conversation(messages, [image])["input_ids"]
    prompt = processor.encode_conversation(messages[:1], [image], add_generation_prompt=True)["input_ids"]
    assert train[:len(prompt)] == prompt


@pytest.mark.parametrize(("messages", "error"), [
    ([{"role": "assistant", "content": "hi"}], "expected 'user'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "expected 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}], "empty assistant answer"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "unknown message content part"),
])
def test_bad_conversations_are_named(messages, error):
    with pytest.raises(ConversationError, match=error):
        render(messages, "vicuna_v1")


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = EveProcessor.from_pretrained(tmp_path)
    assert loaded.image_token_id == processor.image_token_id and loaded.template == processor.template
    assert loaded.image_processor == processor.image_processor
    a = processor(text="<image> hi", images=Image.new("RGB", (90, 60)))
    b = loaded(text="<image> hi", images=Image.new("RGB", (90, 60)))
    assert torch.equal(a["input_ids"], b["input_ids"])
