"""An OpenAI-compatible server for EVE models, with dynamic batching and a web page.

    eve-vlm serve --model runs/eve-tiny --host 127.0.0.1 --port 8000

POST /v1/chat/completions takes OpenAI chat requests whose user messages hold `text` and
`image_url` parts (data: URLs with base64; local files only under --allow-local-dir; http(s)
URLs only with --allow-remote-urls), `stream`, `temperature`, `top_p`, `max_tokens`, `stop`, and
`n` = 1. Concurrent requests are decoded together (see `batcher`). Limits (`ServeSettings`, with
their defaults) bound image size, body size, images per request, prompt tokens, max_tokens and
the queue. Every error is an OpenAI error body with a 4xx status for bad input:

| status | code | when |
| --- | --- | --- |
| 400 | invalid_json | the body is not JSON |
| 400 | invalid_value | a field has the wrong type or range, a reserved marker in text, too many stop strings |
| 400 | unsupported_value | n > 1, tools |
| 400 | invalid_image_url / invalid_base64 / invalid_image | the image cannot be read |
| 400 | image_too_large / too_many_images | over --max-image-pixels / --max-images |
| 400 | remote_urls_disabled / local_files_disabled / path_not_allowed / image_fetch_failed | image sources |
| 400 | invalid_messages | roles out of order, no user message |
| 400 | context_length_exceeded / max_tokens_too_large | over --max-prompt-tokens, the context, --max-tokens-cap |
| 404 | model_not_found / not_found | another model name; an unknown route |
| 405 | method_not_allowed | e.g. GET on /v1/chat/completions |
| 413 | request_too_large | the body is over --max-body-bytes |
| 429 | queue_full | --max-queue requests are waiting (Retry-After: 1) |
"""

from .app import create_app
from .batcher import BatcherStats, DynamicBatcher
from .errors import APIError
from .settings import ServeSettings

__all__ = ["APIError", "BatcherStats", "DynamicBatcher", "ServeSettings", "create_app"]
