"""What one generation asks for (`GenerationRequest`, `SamplingParams`) and what it gives back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..data.image import ImageInput
from ..data.templates import Message

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request; validated on construction."""

    max_new_tokens: int = 256
    """Most tokens to generate (the answer may end earlier, at EOS or a stop string)."""
    temperature: float = 0.0
    """0 decodes greedily; above 0 samples from the softmax at this temperature."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to top_p (1 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens when sampling (0 = off)."""
    stop: tuple[str, ...] = ()
    """Strings that end the answer; the answer is cut before the first one (OpenAI semantics)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens={self.max_new_tokens} must be >= 1")
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"SamplingParams.temperature={self.temperature} must lie in [0, 100]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p={self.top_p} must lie in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k={self.top_k} must be >= 0")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop={self.stop!r} must hold non-empty strings")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0.0

    def decoding_key(self) -> tuple[bool, float, float, int]:
        """Requests with equal keys can share one `generate` call (its logits processors are batch-wide);
        max_new_tokens and stop strings are per row."""
        if not self.do_sample:
            return (False, 0.0, 1.0, 0)
        return (True, self.temperature, self.top_p, self.top_k)


@dataclass(frozen=True)
class GenerationRequest:
    """A conversation to answer.

    `messages` are transformers' chat messages; each `{"type": "image"}` content part is one image.
    The images are `images` in order or, when that is empty, the parts' own `"image"` values
    (a path, bytes, PIL image or array), as in `{"type": "image", "image": "cat.png"}`.
    """

    messages: Sequence[Message]
    images: Sequence[ImageInput] = ()
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class GenerationResult:
    """One answer, with token counts as the OpenAI API reports them."""

    text: str
    """The answer, cut before any stop string, special tokens removed."""
    finish_reason: str
    """"stop" (EOS or a stop string), "length" (max_new_tokens) or "cancelled"."""
    prompt_tokens: int
    """Tokens the model read, image placeholders included."""
    completion_tokens: int
    """Tokens generated, EOS not counted."""
