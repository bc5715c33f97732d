"""The model side of evaluation: answers and log-likelihoods from a saved EVE model.

Loading and generation are inference's own (:func:`eve_vlm.infer.load_model`,
:class:`eve_vlm.infer.Generator`: the model's template, left-padded batches, per-request
``max_new_tokens`` and stop strings, answers cut at the first stop string). What is evaluation's:

- an :class:`EvalItem` is asked as one user message, its images first, then its prompt (LLaVA's
  ``<image>\\n{question}``);
- requests are sorted by prompt length (image tokens included) before they are cut into batches of
  ``batch_size``, so a batch holds prompts of similar length and padding stays small;
- answers are stripped;
- log-likelihood scoring of continuations (lmms-eval's multiple-choice tasks), which inference has not.

Both `eve-vlm eval` (through :meth:`EveGenerator.answer_fn`) and the lmms-eval plugin
(``eve_vlm.eval.lmms_plugin``) use :class:`EveGenerator`, so a benchmark asked either way is asked alike.
Greedy decoding and at most 128 new tokens are the EVE paper's settings (spec section 7).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from eve_vlm.data.processor import EveProcessor
from eve_vlm.data.templates import Message
from eve_vlm.eval.base import EvalItem
from eve_vlm.infer import GenerationRequest, Generator, PreparedRequest, PromptTooLongError, SamplingParams
from eve_vlm.infer.engine import group_by_decoding_key, request_images

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
"""EVE paper (spec section 7): greedy decoding, at most 128 new tokens per answer."""


def device_name(device: torch.device) -> str:
    """A distributed process's device as :func:`eve_vlm.infer.load_model` takes it: ``"cpu"`` (which
    accelerate may call ``cpu:0``) or ``"cuda:N"``."""
    return "cpu" if device.type == "cpu" else str(device)


def user_message(text: str, num_images: int) -> Message:
    """One user turn: an image part per image, then the text."""
    return {"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": text}]}


def item_request(item: EvalItem, params: SamplingParams) -> GenerationRequest:
    """A benchmark item as one user message: its images, then its prompt."""
    return GenerationRequest([user_message(item.prompt, len(item.images))], list(item.images), params)


class EveGenerator:
    """Answers and scores batches of requests with one EVE model and its processor."""

    def __init__(self, model: PreTrainedModel, processor: EveProcessor, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.generator = Generator(model, processor)
        self.model = model
        self.processor = processor
        self.batch_size = batch_size

    # --- generation -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One answer per request, in order (each with its own params): stop strings cut, stripped.

        Requests that share a decoding key (greedy, or the same sampling settings) are sorted by
        prompt length, longest first, and answered ``batch_size`` at a time.
        """
        prepared = [self._prepare(request) for request in requests]
        lengths = [p.prompt_tokens for p in prepared]
        answers = [""] * len(prepared)
        for group in group_by_decoding_key(prepared).values():
            for rows in self._length_sorted_batches(group, lengths):
                for i, result in zip(rows, self.generator.run([prepared[i] for i in rows])):
                    answers[i] = result.text.strip()
        return answers

    def answer_fn(
        self, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> Callable[[list[EvalItem]], list[str]]:
        """The runner's ``answer_fn``: each item's images + prompt as one user message, greedy."""
        params = SamplingParams(max_new_tokens=max_new_tokens)

        def answer(items: list[EvalItem]) -> list[str]:
            return self.generate([item_request(item, params) for item in items])

        return answer

    def _prepare(self, request: GenerationRequest) -> PreparedRequest:
        """``Generator.prepare``; a prompt that fits the context but leaves less room than
        ``max_new_tokens`` is answered with the room there is (a warning), not refused."""
        try:
            return self.generator.prepare(request)
        except PromptTooLongError:
            # raises when even one new token does not fit
            one_token = dataclasses.replace(
                request, params=dataclasses.replace(request.params, max_new_tokens=1)
            )
            prepared = self.generator.prepare(one_token)
            room = self.generator.context_length - prepared.prompt_tokens  # type: ignore[operator]
            logger.warning(
                "a prompt of %d tokens leaves room in the model's context for %d new tokens, not "
                "max_new_tokens=%d: the answer may be cut short",
                prepared.prompt_tokens,
                room,
                request.params.max_new_tokens,
            )
            return dataclasses.replace(
                prepared, params=dataclasses.replace(request.params, max_new_tokens=room)
            )

    # --- scoring --------------------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str]
    ) -> list[tuple[float, bool]]:
        """(sum of the log-probabilities of the continuation's tokens, whether greedy decoding yields
        exactly them) for each request, as the assistant's reply after the generation prompt.
        The requests' params are not used."""
        if len(requests) != len(continuations):
            raise ValueError(f"{len(requests)} requests but {len(continuations)} continuations")
        samples, context_lengths = [], []
        for request, continuation in zip(requests, continuations):
            sample, context_length = self._encode_with_continuation(request, continuation)
            samples.append(sample)
            context_lengths.append(context_length)
        lengths = [len(s["input_ids"]) for s in samples]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        for rows in self._length_sorted_batches(range(len(samples)), lengths):
            batch = self.processor.collate([samples[i] for i in rows], padding_side="right")
            with torch.inference_mode():
                logits = self.model(**self._to_device(batch)).logits  # (B, T, V)
            for row, i in enumerate(rows):
                start, end = context_lengths[i], lengths[i]
                if start == end:
                    continue  # empty continuation: log 1 = 0, trivially greedy
                # logits at position t predict token t + 1
                log_probs = torch.log_softmax(logits[row, start - 1 : end - 1].float(), dim=-1)  # (N, V)
                targets = batch["input_ids"][row, start:end].to(log_probs.device)  # (N,)
                total = log_probs.gather(-1, targets.unsqueeze(-1)).sum().item()
                results[i] = (total, bool((log_probs.argmax(-1) == targets).all()))
        return results

    def _encode_with_continuation(
        self, request: GenerationRequest, continuation: str
    ) -> tuple[dict[str, Any], int]:
        """The prompt (as ``Generator.prepare`` renders it) followed by ``continuation``, and the
        number of prompt tokens.

        As lm-eval does, the whole text is tokenised once and split after the prompt's token count,
        so the continuation's tokens are those the model would produce.
        """
        prompt = self.processor.apply_chat_template(list(request.messages), add_generation_prompt=True)
        pixel_values = self.processor.process_images(request_images(request))
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

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        # pixel_values stay where they are: the model moves them to the PEL's device and dtype
        device = self.model.device
        return {
            key: value.to(device) if key in ("input_ids", "attention_mask") else value
            for key, value in batch.items()
            if key != "labels"
        }

    # --- shared ---------------------------------------------------------------------------------
    def _length_sorted_batches(self, rows: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
        """``rows`` sorted by length (longest first, so memory runs out early if at all), in batches."""
        order = sorted(rows, key=lambda i: -lengths[i])
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
