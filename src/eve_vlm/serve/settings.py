"""`ServeSettings`: the server's limits and batching, each with its documented default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeSettings:
    """Everything `create_app` needs besides the model; validated on construction."""

    model_name: str
    """The id clients send as `model` and `GET /v1/models` lists."""
    max_image_pixels: int = 25_000_000
    """Largest image (width x height, before the EVE resize) a request may send; checked before decoding."""
    max_body_bytes: int = 20 * 1024 * 1024
    """Largest request body (images as base64 data URLs included); larger -> 413."""
    max_images_per_request: int = 8
    """Most image_url parts in one request's messages."""
    max_prompt_tokens: int = 8192
    """Most prompt tokens (each image counts its visual tokens) a request may need."""
    max_tokens_cap: int = 1024
    """Largest `max_tokens` a request may ask for; also the default when it asks for none."""
    max_queue: int = 64
    """Requests that may wait for the decoder; one more gets 429 with Retry-After."""
    max_batch_size: int = 16
    """Most requests decoded together in one batch."""
    batch_wait_ms: float = 10.0
    """How long an idle decoder waits for more requests to batch with the first one."""
    default_temperature: float = 1.0
    """Temperature of requests that give none (1.0, as OpenAI's API; 0 = greedy)."""
    allow_local_dir: Path | None = None
    """Images may be local files (file:// URLs or paths) only inside this folder; None refuses them."""
    allow_remote_urls: bool = False
    """Whether http(s) image URLs are fetched (off by default: the server would fetch any URL it is given)."""
    remote_timeout_s: float = 10.0
    """Time limit for fetching one remote image."""

    def __post_init__(self) -> None:
        positive = ("max_image_pixels", "max_body_bytes", "max_images_per_request", "max_prompt_tokens",
                    "max_tokens_cap", "max_queue", "max_batch_size", "remote_timeout_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"ServeSettings.{name}={getattr(self, name)} must be > 0 "
                                 f"(--{name.replace('_', '-')})")
        if self.batch_wait_ms < 0:
            raise ValueError(f"ServeSettings.batch_wait_ms={self.batch_wait_ms} must be >= 0 (--batch-wait-ms)")
        if not 0.0 <= self.default_temperature <= 2.0:
            raise ValueError(f"ServeSettings.default_temperature={self.default_temperature} must lie in [0, 2] "
                             "(--default-temperature)")
        if self.allow_local_dir is not None and not Path(self.allow_local_dir).is_dir():
            raise ValueError(f"ServeSettings.allow_local_dir={self.allow_local_dir} is not a folder "
                             "(--allow-local-dir)")
