"""`Generator`: answers batches of chat requests with transformers' `generate` (batched, streamed).

A request is prepared once (template, images, token ids), then any set of prepared requests that
share a decoding key runs as one left-padded batch; `BatchTracker` gives each row its own limits,
stop strings, stream and cancellation. Sampling, padding of finished rows and the KV cache are
transformers' own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from ..data.image import ImageInput
from ..data.processor import EveProcessor
from .params import GenerationRequest, GenerationResult, SamplingParams
from .stopping import BatchTracker, Row, StopFilter, cut_at_stop

logger = logging.getLogger(__name__)


class PromptTooLongError(ValueError):
    """The prompt plus max_new_tokens do not fit the model's context."""


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready for the decoder: prompt ids (images expanded) and processed images."""

    input_ids: list[int]
    pixel_values: list[torch.Tensor]  # (3, H_i, W_i) each, in placeholder order
    params: SamplingParams

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)


class Generator:
    """Chat inference for one model and its processor."""

    def __init__(self, model: PreTrainedModel, processor: EveProcessor) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.context_length: int | None = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.eos_token_ids = _eos_token_ids(model, processor)
        # fast tokenizers may refuse concurrent calls ("Already borrowed"); encoding is cheap
        self._encode_lock = threading.Lock()

    # --- preparing ------------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Render, tokenise and process the images; raises ValueError (ImageError, ...) on bad input."""
        images = request_images(request)
        text = self.processor.apply_chat_template(list(request.messages), add_generation_prompt=True)
        pixel_values = self.processor.process_images(images)
        sizes = [tuple(p.shape[-2:]) for p in pixel_values]
        with self._encode_lock:
            input_ids, _ = self.processor.encode(text, sizes)
        total = len(input_ids) + request.params.max_new_tokens
        if self.context_length is not None and total > self.context_length:
            raise PromptTooLongError(f"the prompt has {len(input_ids)} tokens (images included); with "
                                     f"max_new_tokens={request.params.max_new_tokens} that exceeds the "
                                     f"model's context of {self.context_length} tokens")
        return PreparedRequest(input_ids, pixel_values, request.params)

    # --- generating -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], batch_size: int | None = None) -> list[GenerationResult]:
        """Answer every request, in order; requests that share a decoding key run together, in
        batches of at most `batch_size` (None: all of them in one)."""
        prepared = [self.prepare(r) for r in requests]
        results: list[GenerationResult | None] = [None] * len(prepared)
        for indices in group_by_decoding_key(prepared).values():
            step = batch_size or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                for i, result in zip(chunk, self.run([prepared[i] for i in chunk])):
                    results[i] = result
        return results  # type: ignore[return-value]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Pieces of the answer as they are decoded (transformers' `TextIteratorStreamer`).

        The request is prepared now (bad input raises here); generation runs in a thread once
        iteration starts, and closing the iterator early stops it after the current step.
        """
        return self._stream(self.prepare(request))

    def _stream(self, prepared: PreparedRequest) -> Iterator[str]:
        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True)
        cancelled = threading.Event()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self.run([prepared], streamers=[streamer], cancelled=[cancelled])
            except BaseException as e:  # re-raised in the consuming thread
                errors.append(e)

        thread = threading.Thread(target=work, name="eve-generate", daemon=True)
        thread.start()
        stop_filter = StopFilter(prepared.params.stop)
        try:
            for text in streamer:
                if released := stop_filter.push(text):
                    yield released
            if released := stop_filter.flush():
                yield released
        finally:
            cancelled.set()
            thread.join()
        if errors:
            raise errors[0]

    def run(self, batch: Sequence[PreparedRequest], streamers: Sequence[BaseStreamer | None] | None = None,
            cancelled: Sequence[threading.Event | None] | None = None) -> list[GenerationResult]:
        """One `generate` call over requests with the same decoding key.

        `streamers[i]` (a transformers `TextStreamer`, fed row i's generated ids only) streams row i;
        setting `cancelled[i]` stops row i after the current step (finish_reason "cancelled").
        """
        keys = {p.params.decoding_key() for p in batch}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one decoding key (temperature, top_p, top_k); got {keys}")
        streamers = streamers or [None] * len(batch)
        cancelled = cancelled or [None] * len(batch)
        rows = [Row(p.params.max_new_tokens, p.params.stop, s, c) for p, s, c in zip(batch, streamers, cancelled)]
        tracker = BatchTracker(rows, self.tokenizer, self.eos_token_ids)
        inputs = self._collate(batch)
        config = self._generation_config(batch[0].params, max(p.params.max_new_tokens for p in batch))
        try:
            with torch.inference_mode():
                self.model.generate(**inputs, generation_config=config,
                                    stopping_criteria=StoppingCriteriaList([tracker]))
        finally:
            tracker.finish_all("length")  # also ends every stream if generate raised
        return [self._result(p, row) for p, row in zip(batch, rows)]

    def _collate(self, batch: Sequence[PreparedRequest]) -> dict[str, object]:
        samples = [{"input_ids": p.input_ids, "pixel_values": p.pixel_values} for p in batch]
        inputs = self.processor.collate(samples, padding_side="left")
        device = self.model.device
        pixel_values = inputs.get("pixel_values")
        if isinstance(pixel_values, list):
            inputs["pixel_values"] = [p.to(device) for p in pixel_values]
        elif pixel_values is not None:
            inputs["pixel_values"] = pixel_values.to(device)
        inputs["input_ids"] = inputs["input_ids"].to(device)
        inputs["attention_mask"] = inputs["attention_mask"].to(device)
        return inputs

    def _generation_config(self, params: SamplingParams, max_new_tokens: int) -> GenerationConfig:
        sampling = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=params.do_sample,
                                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=list(self.eos_token_ids),
                                bos_token_id=self.tokenizer.bos_token_id, **(sampling if params.do_sample else {}))

    def _result(self, prepared: PreparedRequest, row: Row) -> GenerationResult:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        text, _ = cut_at_stop(text, prepared.params.stop)
        return GenerationResult(text, row.finish_reason or "length", prepared.prompt_tokens, len(row.tokens))


def request_images(request: GenerationRequest) -> list[ImageInput]:
    """The request's images: `images`, or else the `"image"` values of its image parts, in order."""
    if request.images:
        return list(request.images)
    images: list[ImageInput] = []
    for i, message in enumerate(request.messages):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image":
                if part.get("image") is None:
                    raise ValueError(f"message {i} has an image part without an 'image' value, and the "
                                     "request gives no images")
                images.append(part["image"])
    return images


def group_by_decoding_key(prepared: Sequence[PreparedRequest]) -> dict[tuple, list[int]]:
    """Indices of requests that can share one `generate` call, by decoding key, in order."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(p.params.decoding_key(), []).append(i)
    return groups


def _eos_token_ids(model: PreTrainedModel, processor: EveProcessor) -> tuple[int, ...]:
    """The model's EOS ids and the tokenizer's (the templates end answers with the tokenizer's EOS)."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, list | tuple) else [configured]
    ids.append(processor.tokenizer.eos_token_id)
    return tuple(dict.fromkeys(i for i in ids if i is not None))
