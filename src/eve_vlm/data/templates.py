"""Conversation templates (spec section 6): `plain`, vicuna `v1`, and the LLM's own chat template.

A template renders a conversation to text with `<image>` markers and returns the character spans
that are training targets (the answers); the processor tokenises the text once and marks the
tokens that overlap a target span, so training and inference tokenise a prompt identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_TOKEN = "<image>"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions.")
TEMPLATES = ("plain", "vicuna_v1", "chat")

Message = dict[str, Any]


class ConversationError(ValueError):
    """A conversation the templates cannot render (roles out of order, empty answer, ...)."""


@dataclass(frozen=True)
class Rendered:
    """Text with `<image>` markers, and the [start, end) character spans that are targets."""

    text: str
    targets: tuple[tuple[int, int], ...]


def message_text(message: Message) -> str:
    """The text of a message whose content is a string or transformers-style content parts.

    `{"type": "image"}` parts become `<image>`; an image directly followed by text is separated
    from it by a newline, as LLaVA writes `<image>\\n{question}`.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ConversationError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    pieces: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("image", "image_url"):
            pieces.append(IMAGE_TOKEN)
        elif kind == "text":
            if pieces and pieces[-1] == IMAGE_TOKEN:
                pieces.append("\n")
            pieces.append(str(part.get("text", "")))
        else:
            raise ConversationError(f"unknown message content part {part!r}")
    return "".join(pieces)


def _turns(messages: Sequence[Message]) -> tuple[str | None, list[tuple[str, str]]]:
    """Split off an optional system message and check user/assistant alternation."""
    system = None
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversationError(f"message {i} is a {type(message).__name__}, not a {{role, content}} mapping")
        role = message.get("role")
        if role == "system" and i == 0:
            system = message_text(message)
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationError(f"message {i} has role {role!r}, expected {expected!r} "
                                    "(a conversation alternates user, assistant, user, ...)")
        text = message_text(message)
        if role == "assistant" and not text.strip():
            raise ConversationError(f"message {i}: empty assistant answer")
        turns.append((role, text))
    if not turns:
        raise ConversationError("conversation has no user message")
    return system, turns


def render(messages: Sequence[Message], template: str, eos_token: str = "</s>",
           add_generation_prompt: bool = False, chat_template_fn: Any = None) -> Rendered:
    """Render a conversation; `add_generation_prompt` ends it where the assistant would answer.

    `chat_template_fn(messages, add_generation_prompt) -> str` renders the LLM's own template
    (the tokenizer's `apply_chat_template(..., tokenize=False)`); needed for template "chat".
    """
    system, turns = _turns(messages)
    if add_generation_prompt and turns[-1][0] == "assistant":
        raise ConversationError("add_generation_prompt needs the conversation to end with a user message")
    if template == "plain":
        return _render_plain(turns)
    if template == "vicuna_v1":
        return _render_vicuna(system, turns, eos_token)
    if template == "chat":
        if chat_template_fn is None:
            raise ConversationError("template 'chat' needs the tokenizer's chat template")
        return _render_chat(messages, chat_template_fn, add_generation_prompt)
    raise ConversationError(f"unknown template {template!r}; choose one of {TEMPLATES}")


def _render_plain(turns: list[tuple[str, str]]) -> Rendered:
    """`<image>` (one per image of the user turn) + caption + newline; loss on the caption."""
    if len(turns) > 2:
        raise ConversationError("the plain template takes one user turn (the images) and one caption")
    images = turns[0][1].count(IMAGE_TOKEN)
    text = IMAGE_TOKEN * images
    if len(turns) == 1:
        return Rendered(text, ())
    caption = turns[1][1].strip() + "\n"
    return Rendered(text + caption, ((len(text), len(text) + len(caption)),))


def _render_vicuna(system: str | None, turns: list[tuple[str, str]], eos_token: str) -> Rendered:
    """`{system} USER: {q} ASSISTANT: {a}</s>USER: ...`; loss on each answer and its `</s>`."""
    text = (system if system is not None else VICUNA_SYSTEM) + " "
    targets: list[tuple[int, int]] = []
    for role, content in turns:
        if role == "user":
            text += "USER: " + content + " ASSISTANT:"
        else:
            answer = " " + content.strip() + eos_token
            targets.append((len(text), len(text) + len(answer)))
            text += answer
    return Rendered(text, tuple(targets))


def _render_chat(messages: Sequence[Message], chat_template_fn: Any, add_generation_prompt: bool) -> Rendered:
    """The LLM's own template; each answer is what rendering its turn adds after the generation prompt."""
    flat = [{"role": m["role"], "content": message_text(m)} for m in messages]
    targets: list[tuple[int, int]] = []
    for i, message in enumerate(flat):
        if message["role"] != "assistant":
            continue
        prompt = chat_template_fn(flat[:i], True)
        full = chat_template_fn(flat[: i + 1], False)
        if not full.startswith(prompt):
            raise ConversationError("the chat template does not render a conversation as a prefix of its "
                                    "continuation; its answers cannot be located for the labels")
        targets.append((len(prompt), len(full)))
    text = chat_template_fn(flat, add_generation_prompt)
    return Rendered(text, tuple(targets))
