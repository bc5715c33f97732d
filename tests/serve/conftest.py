"""A real server (uvicorn in a thread, loopback, a free port) around a tiny random EVE."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import uvicorn
from serve_helpers import MODEL_NAME, Server, png_bytes, start_server, tiny_generator

from eve_vlm.infer import Generator
from eve_vlm.serve import ServeSettings


@pytest.fixture(scope="session")
def generator() -> Generator:
    return tiny_generator()


@pytest.fixture(scope="session")
def allowed_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("allowed")
    (directory / "digit.png").write_bytes(png_bytes(56, 84, seed=7))
    return directory


@pytest.fixture(scope="session")
def serve():
    """Start servers on demand; all are stopped at the end of the session."""
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(generator: Generator, **overrides) -> Server:
        settings = ServeSettings(**{"model_name": MODEL_NAME, **overrides})
        handle, server, thread = start_server(generator, settings)
        started.append((server, thread))
        return handle

    yield serve
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(serve, generator, allowed_dir) -> Server:
    """The shared server: small limits so every one of them can be hit cheaply."""
    return serve(generator, max_image_pixels=200_000, max_body_bytes=1_000_000, max_images_per_request=2,
                 max_prompt_tokens=600, max_tokens_cap=3000, batch_wait_ms=150, allow_local_dir=allowed_dir)
