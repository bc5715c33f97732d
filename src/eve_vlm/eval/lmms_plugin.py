"""The lmms-eval model ``eve_vlm``: run lmms-eval's tasks on a saved EVE model.

    lmms-eval --model eve_vlm --model_args pretrained=PATH --tasks pope,mme --batch_size 8
    accelerate launch --num_processes 8 -m lmms_eval --model eve_vlm --model_args pretrained=PATH ...

Chat (default) for generation tasks; lmms-eval builds loglikelihood / multiple-choice requests for
simple models only, so run those with ``--force_simple`` (the same model as ``EveLmmsSimple``).

Model arguments: ``pretrained`` (the model folder), ``device`` (auto), ``dtype`` (auto: bfloat16 on
a GPU), ``batch_size`` (also lmms-eval's ``--batch_size``), ``max_new_tokens`` (128, used when a task
sets none). Found through the ``lmms_eval.models`` entry point (``eve_vlm.eval.lmms_manifest``); only
lmms-eval imports this module, and it imports lmms-eval first.

Requests (``Instance.args``) by type, as lmms-eval builds them:

- generate_until, chat task: ``(context, doc_to_messages, gen_kwargs, doc_id, task, split)``
  (lmms-eval's guide also shows the 5-tuple without ``context``; both are read);
- generate_until, simple task: ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``;
- loglikelihood: ``(context, continuation or doc_to_target, doc_to_visual, doc_id, task, split)``;
- generate_until_multi_round, chat task: as generate_until (``doc_to_messages`` also takes the round);
- generate_until_multi_round, simple task: ``(context, gen_kwargs, doc_to_visual, doc_to_text, doc_id,
  task, split)``.

Every request goes through :class:`~eve_vlm.eval.generate.EveGenerator` (inference's ``load_model``
and ``Generator``), as ``eve-vlm eval`` does: the model's own template, images before the text,
length-sorted batches. Beam search is not offered: a task's ``num_beams`` > 1 is ignored (a warning).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from eve_vlm.data.templates import IMAGE_TOKEN
from eve_vlm.eval.generate import DEFAULT_MAX_NEW_TOKENS, EveGenerator, device_name, user_message
from eve_vlm.infer import GenerationRequest, SamplingParams, load_model

logger = logging.getLogger(__name__)


def sampling_params(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> SamplingParams:
    """A task's ``generation_kwargs`` -> our params: ``temperature`` 0 (or absent) is greedy whatever
    ``do_sample`` says; ``until`` (a string or a list; empty strings dropped) are the stop strings."""
    until = gen_kwargs.get("until") or []
    num_beams = int(gen_kwargs.get("num_beams") or 1)
    if num_beams > 1:
        _warn_no_beam_search(num_beams)
    return SamplingParams(
        max_new_tokens=int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens),
        temperature=float(gen_kwargs.get("temperature") or 0.0),
        top_p=float(gen_kwargs.get("top_p") or 1.0),
        stop=tuple(s for s in ((until,) if isinstance(until, str) else until) if s),
    )


@functools.cache
def _warn_no_beam_search(num_beams: int) -> None:
    logger.warning("eve_vlm decodes without beam search: ignoring num_beams=%d", num_beams)


def chat_request(messages: Sequence[Any]) -> GenerationRequest:
    """lmms-eval chat messages (``{"role", "content": [{"type": "image", "url": ...}, {"type": "text",
    "text": ...}]}``, dicts or its pydantic objects) -> a :class:`GenerationRequest` (default params)."""
    converted, images = [], []
    for message in messages:
        message = message.model_dump() if hasattr(message, "model_dump") else message
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        parts = []
        for part in content:
            if part["type"] == "image":
                parts.append({"type": "image"})
                images.append(part["url"])
            elif part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ValueError(f"EVE reads images and text; this task sends a {part['type']!r} part")
        converted.append({"role": message["role"], "content": parts})
    return GenerationRequest(converted, images)


def simple_request(context: str, visuals: Any) -> GenerationRequest:
    """A context string and ``doc_to_visual``'s images -> one user turn; images go first unless the
    context places them itself with ``<image>`` markers."""
    images = [] if visuals is None else list(visuals) if isinstance(visuals, list | tuple) else [visuals]
    if any(isinstance(image, dict) for image in images):
        raise ValueError("EVE reads images and text; this task sends audio")
    if IMAGE_TOKEN in context:
        return GenerationRequest([{"role": "user", "content": context}], images)
    return GenerationRequest([user_message(context, len(images))], images)


@register_model("eve_vlm")
class EveLmms(lmms):
    """lmms-eval chat model (``is_simple = False``) around :class:`EveGenerator`."""

    is_simple = False

    def __init__(
        self,
        pretrained: str,
        device: str | None = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.warning("eve_vlm ignores the model arguments %s", sorted(unused))
        # lmms-eval gathers across processes through `accelerator` when world_size > 1; cpu=True
        # without CUDA makes CPU processes join one gloo group instead of each running alone
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        if self.accelerator.num_processes > 1:
            device = device_name(self.accelerator.device)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        try:
            self.batch_size = int(batch_size)
        except ValueError as err:
            raise ValueError(f"eve_vlm: batch_size must be an integer, got {batch_size!r}") from err
        self.pretrained = str(pretrained)
        self.max_new_tokens = int(max_new_tokens)
        model, processor = load_model(self.pretrained, device=device or "auto", dtype=dtype)
        self._device = model.device
        self.generator = EveGenerator(model, processor, self.batch_size)

    @property
    def device(self) -> Any:
        return self._device

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    # --- generate_until -------------------------------------------------------------------------
    def generate_until(self, requests: list[Any]) -> list[str]:
        parsed = [self._generation_request(request.args) for request in requests]
        answers = self.generator.generate([request for request, _, _ in parsed])
        for (_, context, gen_kwargs), answer in zip(parsed, answers):
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
        logger.info("eve_vlm rank %d: answered %d requests", self.rank, len(requests))
        return answers

    def _generation_request(self, args: tuple) -> tuple[GenerationRequest, str, dict[str, Any]]:
        if callable(args[0]) or not isinstance(args[1], dict):  # chat task, with or without the context
            context, doc_to_messages, gen_kwargs, doc_id, task, split = (
                ("", *args) if callable(args[0]) else args
            )
            request = chat_request(doc_to_messages(self._doc(task, split, doc_id)))
        else:  # simple task
            context, gen_kwargs, doc_to_visual, doc_id, task, split = args
            request = simple_request(context, doc_to_visual(self._doc(task, split, doc_id)))
        params = sampling_params(gen_kwargs, self.max_new_tokens)
        return dataclasses.replace(request, params=params), context, gen_kwargs

    # --- loglikelihood --------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """``(negative log-likelihood, is_greedy)`` per request: the NEGATED sum of the continuation
        tokens' log-probabilities, because lmms-eval's multiple-choice scoring takes the argmin
        ("we return the actual loss", as its LLaVA model does)."""
        batch, continuations, keys = [], [], []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            continuation = target if isinstance(target, str) else target(doc)
            if not isinstance(continuation, str):
                raise TypeError(
                    f"eve_vlm: task {task!r} gives a {type(continuation).__name__} continuation, "
                    "expected a string"
                )
            batch.append(simple_request(context, doc_to_visual(doc)))
            continuations.append(continuation)
            keys.append((context, continuation))
        results = [
            (-log_prob, is_greedy)
            for log_prob, is_greedy in self.generator.loglikelihood(batch, continuations)
        ]
        for key, result in zip(keys, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    # --- generate_until_multi_round -------------------------------------------------------------
    def generate_until_multi_round(self, requests: list[Any]) -> list[list[str]]:
        """Each round is one turn, asked afresh with what the task gives for it; a request's result
        is the list of its rounds' answers (lmms-eval scores the last).

        Chat tasks: round 0 is ``doc_to_messages(doc)``; round k is ``doc_to_messages(doc, round_idx=k,
        previous_output=answers, previous_round_info=info) -> (messages, done, _, info)`` (as
        lmms-eval's vLLM chat model asks). Simple tasks: round 0 is the context and
        ``doc_to_visual(doc)``; round k is ``doc_to_text(doc, ...) -> (visuals, text, done, _, info)``
        (as its LLaVA-OneVision does). Like those, ``until`` is not applied: answers may hold blank lines.
        """
        results = []
        for request in requests:
            args = request.args
            if len(args) == 7:  # simple
                context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = args
                doc = self._doc(task, split, doc_id)
                first = simple_request(context, doc_to_visual(doc))
                later = functools.partial(_simple_round, doc, doc_to_text)
            else:  # chat
                _, doc_to_messages, gen_kwargs, doc_id, task, split = args
                doc = self._doc(task, split, doc_id)
                first = chat_request(doc_to_messages(doc))
                later = functools.partial(_chat_round, doc, doc_to_messages)
            no_stop = {key: value for key, value in gen_kwargs.items() if key != "until"}
            results.append(self._rounds(first, later, sampling_params(no_stop, self.max_new_tokens)))
        return results

    def _rounds(
        self, first: GenerationRequest, later: Callable[..., tuple], params: SamplingParams
    ) -> list[str]:
        answers: list[str] = []
        request: GenerationRequest | None = first
        info = None
        while request is not None:
            answers.append(self.generator.generate([dataclasses.replace(request, params=params)])[0])
            # round k (counted from 0) has just been answered; ask the task for round k + 1
            request, info = later(
                round_idx=len(answers), previous_output=list(answers), previous_round_info=info
            )
        return answers


def _simple_round(
    doc: Any, doc_to_text: Callable[..., Any], **round_kwargs: Any
) -> tuple[GenerationRequest | None, Any]:
    visuals, text, done, _, info = doc_to_text(doc, **round_kwargs)
    return (None if done else simple_request(text, visuals)), info


def _chat_round(
    doc: Any, doc_to_messages: Callable[..., Any], **round_kwargs: Any
) -> tuple[GenerationRequest | None, Any]:
    payload = doc_to_messages(doc, **round_kwargs)
    if not (isinstance(payload, tuple) and len(payload) == 4):  # a task without rounds: one turn only
        return None, None
    messages, done, _, info = payload
    return (None if done else chat_request(messages)), info


class EveLmmsSimple(EveLmms):
    """The same model as a simple (legacy) lmms-eval model, for ``--force_simple``."""

    is_simple = True
