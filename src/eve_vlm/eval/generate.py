"""Batched generation and scoring with a saved EVE model: the model side of evaluation.

Both `eve-vlm eval` (through :meth:`EveGenerator.answer_fn`) and the lmms-eval plugin
(``eve_vlm.eval.lmms_plugin``) use this one class, so a benchmark asked either way is asked alike:

- prompts are rendered with the template recorded with the model (``processor.template``);
- a request's images come first in its user message, then its text (LLaVA's ``<image>\\n{question}``);
- requests are sorted by token count (image tokens included) and cut into batches of ``batch_size``,
  left-padded, so a batch holds prompts of similar length and padding stays small;
- only the new tokens are decoded, cut at the first stop string and stripped.

Greedy decoding and at most 128 new tokens are the EVE paper's settings (spec section 7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eve_vlm.data.image import ImageInput
from eve_vlm.data.processor import EveProcessor
from eve_vlm.data.templates import Message
from eve_vlm.eval.base import EvalItem
from eve_vlm.model.eve import EveForCausalLM

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
"""EVE paper (spec section 7): greedy decoding, at most 128 new tokens per answer."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    """``"auto"`` (or None) is the first CUDA GPU when one is visible, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` is bfloat16 on a GPU and float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {('auto', *DTYPES)}")
    return DTYPES[dtype]


def load_model(
    path: str | Path, device: torch.device, dtype: str = "auto"
) -> tuple[EveForCausalLM, EveProcessor]:
    """A folder written by ``save_pretrained`` (model and processor) -> (model in eval mode on ``device``, processor)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no EVE model (config.json is missing)")
    model = EveForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device))
    processor = EveProcessor.from_pretrained(path)
    logger.info("loaded %s (template %s) on %s", path, processor.template, device)
    return model.to(device).eval(), processor


def user_message(text: str, num_images: int) -> Message:
    """One user turn: an image part per image, then the text."""
    return {"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": text}]}


@dataclass(frozen=True)
class Request:
    """One conversation to continue: messages (transformers' format, ending with a user turn) and
    the images their image parts refer to, in order."""

    messages: list[Message]
    images: list[ImageInput] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode; the defaults are the EVE paper's (greedy, 128 new tokens)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Most new tokens per answer."""
    temperature: float = 0.0
    """0 decodes greedily; above 0 samples at this temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold when sampling (1 = off)."""
    num_beams: int = 1
    """Beam search width (1 = none)."""
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends at the first one, which is cut from the answer."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any (non-empty) stop string."""
    cut = len(text)
    for s in stop:
        if s and s in text:
            cut = min(cut, text.index(s))
    return text[:cut]


class EveGenerator:
    """Answers and scores batches of requests with one EVE model and its processor."""

    def __init__(self, model: EveForCausalLM, processor: EveProcessor, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # --- generation -----------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[Request], settings: GenerationSettings = GenerationSettings()
    ) -> list[str]:
        """One answer per request, in order: new tokens only, cut at the first stop string, stripped."""
        samples = [self._encode(request) for request in requests]
        answers: list[str] = [""] * len(requests)
        for rows in self._length_sorted_batches([len(s["input_ids"]) for s in samples]):
            batch = self.processor.collate([samples[i] for i in rows], padding_side="left")
            prompt_length = batch["input_ids"].shape[1]
            with torch.inference_mode():
                output_ids = self.model.generate(**self._to_device(batch), **self._generate_kwargs(settings))
            texts = self.processor.batch_decode(output_ids[:, prompt_length:], skip_special_tokens=True)
            for i, text in zip(rows, texts):
                answers[i] = cut_at_stop(text, settings.stop).strip()
        return answers

    def answer_fn(
        self, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> Callable[[list[EvalItem]], list[str]]:
        """The runner's ``answer_fn``: each item's images + prompt as one user message, greedy."""
        settings = GenerationSettings(max_new_tokens=max_new_tokens)

        def answer(items: list[EvalItem]) -> list[str]:
            requests = [
                Request([user_message(item.prompt, len(item.images))], list(item.images)) for item in items
            ]
            return self.generate(requests, settings)

        return answer

    def _generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "num_beams": settings.num_beams,
            "do_sample": settings.temperature > 0,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
        }
        if settings.temperature > 0:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        stop = [s for s in settings.stop if s]
        if stop:  # stop early; the answer is cut at the stop string afterwards
            kwargs.update(stop_strings=stop, tokenizer=self.processor.tokenizer)
        return kwargs

    # --- scoring --------------------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[Request], continuations: Sequence[str]
    ) -> list[tuple[float, bool]]:
        """(sum of the log-probabilities of the continuation's tokens, whether greedy decoding yields
        exactly them) for each request, as the assistant's reply after the generation prompt."""
        if len(requests) != len(continuations):
            raise ValueError(f"{len(requests)} requests but {len(continuations)} continuations")
        samples, context_lengths = [], []
        for request, continuation in zip(requests, continuations):
            sample, context_length = self._encode_with_continuation(request, continuation)
            samples.append(sample)
            context_lengths.append(context_length)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        for rows in self._length_sorted_batches([len(s["input_ids"]) for s in samples]):
            batch = self.processor.collate([samples[i] for i in rows], padding_side="right")
            with torch.inference_mode():
                logits = self.model(**self._to_device(batch)).logits  # (B, T, V)
            for row, i in enumerate(rows):
                start, end = context_lengths[i], len(samples[i]["input_ids"])
                if start == end:
                    continue  # empty continuation: log 1 = 0, trivially greedy
                # logits at position t predict token t + 1
                log_probs = torch.log_softmax(logits[row, start - 1 : end - 1].float(), dim=-1)  # (N, V)
                targets = batch["input_ids"][row, start:end].to(log_probs.device)  # (N,)
                total = log_probs.gather(-1, targets.unsqueeze(-1)).sum().item()
                results[i] = (total, bool((log_probs.argmax(-1) == targets).all()))
        return results

    def _encode_with_continuation(self, request: Request, continuation: str) -> tuple[dict[str, Any], int]:
        """The prompt followed by ``continuation``, and the number of prompt tokens.

        As lm-eval does, the whole text is tokenised once and split after the prompt's token count,
        so the continuation's tokens are those the model would produce.
        """
        prompt = self.processor.render(request.messages, add_generation_prompt=True).text
        pixel_values = self.processor.process_images(request.images)
        sizes = [tuple(p.shape[-2:]) for p in pixel_values]
        context_ids, _ = self.processor.encode(prompt, sizes)
        whole_ids, _ = self.processor.encode(prompt + continuation, sizes)
        if not context_ids:  # nothing to condition on: the first token has no prediction
            raise ValueError("loglikelihood needs a non-empty prompt (the template rendered none)")
        if whole_ids[: len(context_ids)] != context_ids:  # a token spans the boundary: encode apart
            whole_ids = (
                context_ids + self.processor.tokenizer(continuation, add_special_tokens=False).input_ids
            )
        return {"input_ids": whole_ids, "pixel_values": pixel_values}, len(context_ids)

    # --- shared ---------------------------------------------------------------------------------
    def _encode(self, request: Request) -> dict[str, Any]:
        sample = self.processor.encode_conversation(
            request.messages, request.images, add_generation_prompt=True
        )
        return {"input_ids": sample["input_ids"], "pixel_values": sample["pixel_values"]}

    def _length_sorted_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Row indices sorted by length (longest first, so memory runs out early if at all), in batches."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        # pixel_values stay where they are: the model moves them to the PEL's device and dtype
        return {
            key: value.to(self.device) if key in ("input_ids", "attention_mask") else value
            for key, value in batch.items()
            if key != "labels"
        }
