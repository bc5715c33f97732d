"""Builders shared by the server tests: images, messages, a tiny model, a server in a thread."""

from __future__ import annotations

import base64
import dataclasses
import io
import socket
import threading
import time

import numpy as np
import torch
import uvicorn
from PIL import Image

from eve_vlm.infer import Generator
from eve_vlm.serve import ServeSettings, create_app
from eve_vlm.testing import tiny_model_and_processor

MODEL_NAME = "eve-tiny"


def png_bytes(height: int, width: int, seed: int = 0) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = "What digit is this?") -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}]}


@dataclasses.dataclass
class Server:
    url: str
    app: object
    settings: ServeSettings
    generator: Generator

    @property
    def stats(self):
        return self.app.state.batcher.stats


def tiny_generator() -> Generator:
    """A tiny random EVE that never says EOS under greedy decoding (its EOS logit is always 0 while the
    largest of the other 511 random logits is positive), so answers run to max_tokens."""
    model, processor = tiny_model_and_processor()
    with torch.no_grad():
        model.get_output_embeddings().weight[processor.tokenizer.eos_token_id].zero_()
    return Generator(model, processor)


def start_server(generator: Generator, settings: ServeSettings) -> tuple[Server, uvicorn.Server, threading.Thread]:
    """uvicorn in a daemon thread on a free loopback port, started before this returns."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(generator, settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = sock.getsockname()[1]
    return Server(f"http://127.0.0.1:{port}", app, settings, generator), server, thread
