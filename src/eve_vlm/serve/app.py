"""`create_app`: the FastAPI application (OpenAI-compatible chat completions, models, health, web page).

Routes: POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics (batching counters),
GET / (the web page; its files under /static).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..infer.engine import Generator
from .batcher import DynamicBatcher, Job, QueueFullError
from .completions import completion_body, prepare_chat, read_json, stream_events, wait_result
from .errors import APIError, install_error_handlers
from .schemas import parse_chat_request
from .settings import ServeSettings

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def create_app(generator: Generator, settings: ServeSettings) -> FastAPI:
    """The app; its batching worker runs while the app's lifespan does (uvicorn, TestClient)."""
    batcher = DynamicBatcher(generator, settings.max_batch_size, settings.batch_wait_ms / 1000.0,
                             settings.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        logger.info("serving %s (batches of up to %d)", settings.model_name, settings.max_batch_size)
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="eve-vlm", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.settings = settings
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    created = int(time.time())

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "queued": batcher.queued, "running": batcher.running}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {**batcher.stats.as_dict(), "queued": batcher.queued, "running": batcher.running}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "eve-vlm"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        chat = parse_chat_request(await read_json(request, settings.max_body_bytes))
        prepared = await prepare_chat(chat, generator, settings)
        job = Job(prepared, chat.stream, asyncio.get_running_loop())
        try:
            batcher.submit(job)
        except QueueFullError as e:
            raise APIError(429, f"the server is busy ({e}); retry shortly", "queue_full",
                           type="rate_limit_error", headers={"Retry-After": "1"}) from e
        except RuntimeError as e:
            raise APIError(503, str(e), "server_shutting_down", type="server_error") from e
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(stream_events(job, settings.model_name, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await wait_result(job, request)
        return JSONResponse(completion_body(settings.model_name, result))

    return app
