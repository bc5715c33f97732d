"""`EveProcessor`: images + text -> model inputs; used alike by training, evaluation and serving.

Each `<image>` in the text expands into exactly `num_image_tokens(h, w)` placeholder ids, with
(h, w) the image's size after the EVE resize; the tokenizer is the LLM's own, with `<image>` added
as a special token. Conversations are rendered by the model's template; labels keep only answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase

from ..config import EveConfig
from ..model.patch_embed import num_image_tokens
from .image import EveImageProcessor, ImageInput
from .templates import IMAGE_TOKEN, TEMPLATES, ConversationError, Message, render

PROCESSOR_CONFIG = "processor_config.json"
IGNORE_INDEX = -100


class EveProcessor:
    """Tokenizer + EVE image processor + conversation template of one model."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_processor: EveImageProcessor,
                 template: str = "vicuna_v1", patch_size: int = 14, pool_size: int = 2) -> None:
        if template not in TEMPLATES:
            raise ValueError(f"EveProcessor.template={template!r}: choose one of {TEMPLATES}")
        if not tokenizer.is_fast:
            raise ValueError("EveProcessor needs a fast tokenizer (character offsets locate the answers)")
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        self.patch_size = patch_size
        self.pool_size = pool_size
        self.image_token_id: int = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @property
    def add_bos(self) -> bool:
        """Start plain and vicuna sequences with the tokenizer's BOS when it has one (a chat template
        writes its own). Without it an image would open the sequence, in the position LLMs use as an
        attention sink, whose content they largely ignore."""
        return self.template != "chat" and self.tokenizer.bos_token_id is not None

    @classmethod
    def from_config(cls, tokenizer: PreTrainedTokenizerBase, config: EveConfig) -> EveProcessor:
        """The processor of a model with this config; records the placeholder id in the config."""
        image_processor = EveImageProcessor(config.image_size, config.size_multiple, tuple(config.image_mean),
                                            tuple(config.image_std))
        processor = cls(tokenizer, image_processor, config.template, config.patch_size, config.pool_size)
        config.image_token_id = processor.image_token_id
        return processor

    # --- images ---------------------------------------------------------------------------------
    def num_image_tokens(self, height: int, width: int) -> int:
        return num_image_tokens(height, width, self.patch_size, self.pool_size)

    def process_images(self, images: Sequence[ImageInput]) -> list[torch.Tensor]:
        return [self.image_processor(image) for image in images]

    # --- text -----------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False):
        """Render a conversation with the model's template (text with `<image>` + answer spans)."""
        return render(messages, self.template, self.tokenizer.eos_token or "", add_generation_prompt,
                      self._chat_template)

    def _chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = False,
                            tokenize: bool = False, **_: Any) -> str | list[int]:
        """transformers' message format -> the prompt text (or its ids, images expanded to 1 token)."""
        text = self.render(messages, add_generation_prompt).text
        return self.tokenizer(text, add_special_tokens=False).input_ids if tokenize else text

    def encode(self, text: str, image_sizes: Sequence[tuple[int, int]],
               targets: Sequence[tuple[int, int]] = ()) -> tuple[list[int], list[int]]:
        """Text with `<image>` markers -> (input_ids, labels); each marker becomes its image's run.

        `image_sizes` are the (H, W) of the processed images in marker order; `targets` are the
        character spans whose tokens keep their labels (everything else is -100).
        """
        chunks = text.split(IMAGE_TOKEN)
        if len(chunks) - 1 != len(image_sizes):
            raise ConversationError(f"text has {len(chunks) - 1} {IMAGE_TOKEN} markers but {len(image_sizes)} "
                                    "images were given")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # the tokenizer would fail with a TypeError
            raise ConversationError(f"text is not valid Unicode (a lone surrogate at character {e.start})") from e
        input_ids = [self.tokenizer.bos_token_id] if self.add_bos else []
        labels = [IGNORE_INDEX] * len(input_ids)
        offset = 0
        for i, chunk in enumerate(chunks):
            if chunk:
                encoded = self.tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
                for token, (start, end) in zip(encoded.input_ids, encoded.offset_mapping):
                    start, end = start + offset, end + offset
                    is_target = any(start < t_end and end > t_start for t_start, t_end in targets)
                    input_ids.append(token)
                    labels.append(token if is_target else IGNORE_INDEX)
            offset += len(chunk) + len(IMAGE_TOKEN)
            if i < len(image_sizes):
                run = self.num_image_tokens(*image_sizes[i])
                input_ids += [self.image_token_id] * run
                labels += [IGNORE_INDEX] * run
        return input_ids, labels

    def encode_conversation(self, messages: Sequence[Message], images: Sequence[ImageInput] = (),
                            add_generation_prompt: bool = False) -> dict[str, Any]:
        """One training or inference sample: input_ids, labels (answers only), pixel_values (list)."""
        rendered = self.render(messages, add_generation_prompt)
        pixel_values = self.process_images(images)
        input_ids, labels = self.encode(rendered.text, [tuple(p.shape[-2:]) for p in pixel_values],
                                        rendered.targets)
        return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values}

    def __call__(self, text: str | Sequence[str] | None = None,
                 images: ImageInput | Sequence[ImageInput] | Sequence[Sequence[ImageInput]] | None = None,
                 padding_side: str = "left", return_tensors: str = "pt", **_: Any) -> BatchFeature:
        """Prompt text(s) with `<image>` markers + images (flat, in marker order, or one list per
        text) -> input_ids, attention_mask (left-padded for generation) and pixel_values."""
        texts = [text] if isinstance(text, str) else list(text or [])
        if not texts:
            raise ValueError("EveProcessor needs text (with an <image> marker per image)")
        flat = _flatten_images(images)
        pixel_values = self.process_images(flat)
        sizes = [tuple(p.shape[-2:]) for p in pixel_values]
        markers = sum(t.count(IMAGE_TOKEN) for t in texts)
        if markers != len(sizes):
            raise ValueError(f"the text holds {markers} {IMAGE_TOKEN} markers but {len(sizes)} images were given")
        samples, start = [], 0
        for t in texts:
            n = t.count(IMAGE_TOKEN)
            ids, _ = self.encode(t, sizes[start:start + n])
            samples.append({"input_ids": ids, "pixel_values": pixel_values[start:start + n]})
            start += n
        return BatchFeature(self.collate(samples, padding_side=padding_side), tensor_type=None)

    def collate(self, samples: Sequence[dict[str, Any]], padding_side: str = "right",
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        """Pad encoded samples into a batch; pixel_values stacked when all sizes agree, else a list."""
        length = max(len(s["input_ids"]) for s in samples)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        has_labels = all("labels" in s for s in samples)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            span = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.tensor(sample["input_ids"], dtype=torch.long)
            attention_mask[row, span] = 1
            if has_labels:
                labels[row, span] = torch.tensor(sample["labels"], dtype=torch.long)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if has_labels:
            batch["labels"] = labels
        images = [p for s in samples for p in s.get("pixel_values", [])]
        if images:
            sizes = {tuple(p.shape) for p in images}
            batch["pixel_values"] = torch.stack(images) if len(sizes) == 1 else images
        return batch

    # --- decoding -------------------------------------------------------------------------------
    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    # --- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **_: Any) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        config = {"processor_class": type(self).__name__, "template": self.template,
                  "patch_size": self.patch_size, "pool_size": self.pool_size}
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, **_: Any) -> EveProcessor:
        directory = Path(directory)
        if not (directory / PROCESSOR_CONFIG).exists():
            raise FileNotFoundError(f"{directory} holds no EVE processor ({PROCESSOR_CONFIG} is missing)")
        config = json.loads((directory / PROCESSOR_CONFIG).read_text())
        config.pop("processor_class", None)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(tokenizer, EveImageProcessor.from_pretrained(directory), **config)


def _flatten_images(images: Any) -> list[ImageInput]:
    if images is None:
        return []
    if not isinstance(images, list | tuple):
        return [images]
    flat: list[ImageInput] = []
    for item in images:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    return flat
