"""`POST /v1/chat/completions`: OpenAI request -> prepared generation request -> OpenAI response or SSE stream.

Every check that can fail on bad input happens here, before a request is queued, and fails with
a 4xx `APIError`; the decoder only ever sees requests it can run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..data.templates import IMAGE_TOKEN, Message
from ..infer.engine import Generator, PreparedRequest, PromptTooLongError
from ..infer.params import GenerationRequest, GenerationResult, SamplingParams
from .batcher import Job
from .errors import APIError
from .images import resolve_image
from .schemas import ChatCompletionRequest, ChatMessage, stop_strings
from .settings import ServeSettings

# How often a waiting non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than `limit` bytes (413) before reading them all."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise APIError(413, f"the request body is {length} bytes; this server takes at most {limit}",
                       "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is over {limit} bytes", "request_too_large")
    try:
        return await run_in_threadpool(json.loads, bytes(body))  # megabytes of base64 would stall the loop
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", "invalid_json") from e


async def prepare_chat(chat: ChatCompletionRequest, generator: Generator, settings: ServeSettings) -> PreparedRequest:
    """Check the request against the server's rules and limits, load its images, tokenise it."""
    _check_supported(chat, settings)
    requested = chat.max_completion_tokens or chat.max_tokens
    if requested is not None and requested > settings.max_tokens_cap:
        raise APIError(400, f"max_tokens={requested} exceeds this server's cap of {settings.max_tokens_cap}",
                       "max_tokens_too_large", "max_tokens")
    params = SamplingParams(max_new_tokens=requested or 1, stop=stop_strings(chat.stop),
                            temperature=settings.default_temperature if chat.temperature is None else chat.temperature,
                            top_p=1.0 if chat.top_p is None else chat.top_p, top_k=chat.top_k or 0)
    messages, urls = convert_messages(chat.messages)
    if len(urls) > settings.max_images_per_request:
        raise APIError(400, f"the request has {len(urls)} images; this server takes at most "
                            f"{settings.max_images_per_request}", "too_many_images", "messages")
    images = [await run_in_threadpool(resolve_image, url, param, settings) for url, param in urls]
    try:
        prepared = await run_in_threadpool(generator.prepare, GenerationRequest(messages, images, params))
    except PromptTooLongError as e:
        raise APIError(400, str(e), "context_length_exceeded", "messages") from e
    except ValueError as e:  # the conversation (roles, order) or its images do not fit the template
        raise APIError(400, str(e), "invalid_messages", "messages") from e
    if prepared.prompt_tokens > settings.max_prompt_tokens:
        raise APIError(400, f"the prompt has {prepared.prompt_tokens} tokens (images included); this server "
                            f"takes at most {settings.max_prompt_tokens}", "context_length_exceeded", "messages")
    if requested is None:  # as many as the cap and the context allow
        room = settings.max_tokens_cap
        if generator.context_length is not None:
            room = min(room, generator.context_length - prepared.prompt_tokens)
        prepared = replace(prepared, params=replace(params, max_new_tokens=room))
    return prepared


def _check_supported(chat: ChatCompletionRequest, settings: ServeSettings) -> None:
    if chat.model != settings.model_name:
        raise APIError(404, f"the model {chat.model!r} does not exist; this server serves {settings.model_name!r}",
                       "model_not_found", "model")
    if chat.n not in (None, 1):
        raise APIError(400, f"n={chat.n} is not supported; this server returns one choice (n=1)",
                       "unsupported_value", "n")
    if chat.tools:
        raise APIError(400, "tools are not supported by this server", "unsupported_value", "tools")


def convert_messages(messages: list[ChatMessage]) -> tuple[list[Message], list[tuple[str, str]]]:
    """OpenAI messages -> transformers messages with `{"type": "image"}` parts, and the image URLs
    in order, each with the `param` path that names it in errors."""
    converted: list[Message] = []
    urls: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            converted.append({"role": role, "content": _text(message.content, f"messages.{i}.content")})
            continue
        parts: list[dict[str, str]] = []
        for j, part in enumerate(message.content):
            param = f"messages.{i}.content.{j}"
            if part.type == "text":
                parts.append({"type": "text", "text": _text(part.text, param)})
            elif part.image_url is None:
                raise APIError(400, "an image_url part needs an image_url object", "invalid_value", param)
            elif role != "user":
                raise APIError(400, f"images are accepted in user messages only, not in {role} messages",
                               "invalid_value", param)
            else:
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                parts.append({"type": "image"})
                urls.append((url, f"{param}.image_url"))
        content = parts if role == "user" else "".join(p["text"] for p in parts)
        converted.append({"role": role, "content": content})
    return converted, urls


def _text(text: str | None, param: str) -> str:
    if text is None:
        raise APIError(400, "a text part needs a text field", "invalid_value", param)
    if IMAGE_TOKEN in text:
        raise APIError(400, f"text may not contain the reserved marker {IMAGE_TOKEN}; send images as "
                            "image_url parts", "invalid_value", param)
    return text


# --- responses ---------------------------------------------------------------------------------
def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def completion_body(model: str, result: GenerationResult) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": usage(result)}


async def wait_result(job: Job, request: Request) -> GenerationResult:
    """The finished result; cancels the job if the client goes away while it waits."""
    getter: asyncio.Task | None = None
    try:
        while True:
            getter = getter or asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S)
            if not done:
                if await request.is_disconnected():
                    raise APIError(400, "the client disconnected", "client_disconnected")
                continue
            kind, value = getter.result()
            getter = None
            if kind == "done" and value is not None:
                return value
            if kind == "error":
                raise _generation_error(value)
    finally:
        job.cancelled.set()  # no-op once finished
        if getter is not None:
            getter.cancel()


def _generation_error(error: BaseException) -> APIError:
    if isinstance(error, RuntimeError) and "shutting down" in str(error):
        return APIError(503, str(error), "server_shutting_down", type="server_error")
    return APIError(500, f"generation failed ({type(error).__name__}: {error})", "generation_failed",
                    type="server_error")


async def stream_events(job: Job, model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.

    If the client disconnects, the response task is cancelled while it awaits the next piece;
    the `finally` then cancels the job, which stops its row in the running batch.
    """
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**head, "choices": [choice]})

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                yield chunk({"content": value})
            elif kind == "error":
                yield _sse(_generation_error(value).body())
                break
            elif value is not None:
                yield chunk({}, value.finish_reason)
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": usage(value)})
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
