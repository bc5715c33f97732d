"""`eve-vlm serve`: the OpenAI-compatible server and web page (argument parsing only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..infer.commands import add_model_arguments, load_generator

# (flag, ServeSettings field, type, help); defaults come from ServeSettings itself
_LIMITS = (
    ("--max-image-pixels", "max_image_pixels", int, "largest image (width x height) a request may send"),
    ("--max-body-bytes", "max_body_bytes", int, "largest request body in bytes"),
    ("--max-images", "max_images_per_request", int, "most images in one request"),
    ("--max-prompt-tokens", "max_prompt_tokens", int, "most prompt tokens (images included)"),
    ("--max-tokens-cap", "max_tokens_cap", int, "largest max_tokens a request may ask for (and the default)"),
    ("--max-queue", "max_queue", int, "requests that may wait; one more gets 429"),
    ("--max-batch-size", "max_batch_size", int, "most requests decoded together"),
    ("--batch-wait-ms", "batch_wait_ms", float, "how long an idle decoder waits to batch more requests"),
    ("--default-temperature", "default_temperature", float, "temperature of requests that give none"),
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from .settings import ServeSettings

    serve = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server with a web page",
                                  description="Serves POST /v1/chat/completions (streaming, dynamic batching), "
                                              "GET /v1/models, GET /health, GET /metrics and a web page at /.",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--model-name", default=None, help="the model id clients send (None: the model folder's name)")
    serve.add_argument("--allow-local-dir", type=Path, default=None,
                       help="let requests name image files inside this folder (None: refused)")
    serve.add_argument("--allow-remote-urls", action="store_true",
                       help="fetch http(s) image URLs (refused unless given)")
    for flag, name, kind, help_text in _LIMITS:
        serve.add_argument(flag, dest=name, type=kind, default=ServeSettings.__dataclass_fields__[name].default,
                           help=help_text)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
        from .settings import ServeSettings
    except ModuleNotFoundError as e:
        print(f"error: eve-vlm serve needs {e.name}: pip install 'eve-vlm[serve]'", file=sys.stderr)
        return 2
    limits = {name: getattr(args, name) for _, name, _, _ in _LIMITS}
    try:
        settings = ServeSettings(model_name=args.model_name or args.model.resolve().name,
                                 allow_local_dir=args.allow_local_dir, allow_remote_urls=args.allow_remote_urls,
                                 **limits)
        generator = load_generator(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = create_app(generator, settings)
    print(f"serving {settings.model_name} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0
