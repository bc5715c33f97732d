"""The request body of `POST /v1/chat/completions` (the OpenAI fields this server reads).

Unknown fields are ignored, as OpenAI-compatible servers do; fields that change the answer in
ways this server cannot honour (`n` > 1, tools) are refused by the app with a 400.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import APIError

MAX_STOP_STRINGS = 4  # as OpenAI


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | str | None = None  # a bare URL string is accepted too, as several clients send it


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)  # not OpenAI's; vLLM's extension
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict] | None = None


def parse_chat_request(data: object) -> ChatCompletionRequest:
    """Validate a decoded JSON body; a schema error becomes a 400 naming the first bad field."""
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param or 'body'}: {first['msg']}", "invalid_value", param) from e


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
        raise APIError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", "invalid_value", "stop")
    return tuple(stops)
