"""The server under load and abuse, on loopback: nothing is lost, nothing leaks, nothing is fetched.

200 concurrent requests are each answered or refused with 429 and Retry-After (never a 5xx); 100
malformed requests each get a clear 4xx; clients that leave mid-stream stop their work; local files
outside the allowed folder are refused; no URL a client gives is fetched unless the operator allowed it.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
import urllib.request

import httpx
import psutil
import pytest
from corpus import IMAGES, png_header_only
from serve_helpers import MODEL_NAME, data_url, image_message, png_bytes, start_server, tiny_generator

from eve_vlm.serve import ServeSettings

pytestmark = pytest.mark.timeout(180)
CONCURRENT = 200
MALFORMED = 100


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    (root / "inside.png").write_bytes(png_bytes(28, 28))
    outside = tmp_path_factory.mktemp("private")
    (outside / "secret.png").write_bytes(png_bytes(28, 28))
    (root / "link.png").symlink_to(outside / "secret.png")
    return root, outside


@pytest.fixture(scope="module")
def server(allowed):
    settings = ServeSettings(model_name=MODEL_NAME, max_queue=48, max_batch_size=16, batch_wait_ms=5,
                             max_image_pixels=200_000, max_body_bytes=1_000_000, max_tokens_cap=1024,
                             allow_local_dir=allowed[0])
    handle, uvicorn_server, thread = start_server(tiny_generator(), settings)
    yield handle
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def chat(i: int = 0, **overrides) -> dict:
    messages = [image_message(data_url(png_bytes(28, 56, seed=i)))] if i % 2 else \
        [{"role": "user", "content": f"hello number {i}"}]
    return {"model": MODEL_NAME, "messages": messages, "max_tokens": 4, "temperature": 0, **overrides}


async def post_all(url: str, bodies: list) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def post(body):
            if isinstance(body, tuple):  # (method, path, raw bytes)
                method, path, content = body
                return await client.request(method, url.replace("/v1/chat/completions", path), content=content)
            return await client.post(url, json=body)
        return await asyncio.gather(*(post(b) for b in bodies))


def metrics(server) -> dict:
    return httpx.get(f"{server.url}/metrics", timeout=10).json()


def wait_idle(server, cancelled: int | None = None, timeout: float = 30.0) -> dict:
    """GET /metrics until nothing runs or waits (and `cancelled` requests were counted, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = metrics(server)
        if current["running"] == 0 and current["queued"] == 0 and cancelled in (None, current["cancelled"]):
            return current
        time.sleep(0.05)
    raise AssertionError(f"the server did not go idle: {metrics(server)}")


def test_concurrent_requests_are_answered_or_refused_and_memory_stays_bounded(server):
    url = f"{server.url}/v1/chat/completions"
    asyncio.run(post_all(url, [chat(i) for i in range(16)]))  # warm up: buffers, threads, caches
    start_rss = rss_mb()
    rounds = []
    for _ in range(2):
        responses = asyncio.run(post_all(url, [chat(i) for i in range(CONCURRENT)]))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429, 503}, sorted(set(statuses))
        for response in responses:
            if response.status_code == 200:
                assert response.json()["usage"]["completion_tokens"] == 4
                assert response.json()["choices"][0]["message"]["content"]
            else:
                assert response.headers["retry-after"] and response.json()["error"]["code"] == "queue_full"
        rounds.append((statuses.count(200), len(statuses) - statuses.count(200), rss_mb()))
    wait_idle(server)
    served = sum(r[0] for r in rounds)
    refused = sum(r[1] for r in rounds)
    assert served + refused == 2 * CONCURRENT and served >= CONCURRENT // 2
    growth_first, growth_second = rounds[0][2] - start_rss, rounds[1][2] - rounds[0][2]
    assert growth_second < 40, (start_rss, rounds)  # a second identical round adds (almost) nothing
    print(f"\n{2 * CONCURRENT} concurrent requests: {served} served, {refused} refused (429 + Retry-After), "
          f"0 5xx; RSS {start_rss:.0f} MB -> {rounds[0][2]:.0f} -> {rounds[1][2]:.0f} MB")
    assert growth_first < 200


def malformed_requests(allowed) -> list:
    """100 bad requests: hand-written cases, then seeded variations of them."""
    root, outside = allowed
    good = chat(1)
    text = json.dumps(good).encode()

    def with_image(url: str) -> dict:
        return {**good, "messages": [image_message(url)]}
    bomb = data_url(png_header_only(30_000, 30_000))
    cases = [
        ("POST", "/v1/chat/completions", b""), ("POST", "/v1/chat/completions", b"{"),
        ("POST", "/v1/chat/completions", b"\xff\xfe\x00garbage"), ("POST", "/v1/chat/completions", b"null"),
        ("GET", "/v1/chat/completions", b""), ("POST", "/v1/nothing", b"{}"),
        ("POST", "/v1/chat/completions", b'{"model": "' + b"x" * 1_100_000 + b'"}'),
        [1, 2, 3], "a string", {}, {"model": MODEL_NAME}, {**good, "messages": []}, {**good, "messages": "hi"},
        {**good, "messages": [{"role": "user"}]}, {**good, "messages": [{"role": "robot", "content": "x"}]},
        {**good, "messages": [{"role": "assistant", "content": "I go first"}]},
        {**good, "messages": [{"role": "system", "content": "only a system message"}]},
        {**good, "model": "gpt-4o"}, {**good, "model": 7}, {**good, "temperature": -1}, {**good, "temperature": "hot"},
        {**good, "top_p": 0}, {**good, "max_tokens": 0}, {**good, "max_tokens": 10**9}, {**good, "n": 3},
        {**good, "stop": ["a", "b", "c", "d", "e"]}, {**good, "stop": [""]},
        {**good, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**good, "messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
        {**good, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {**good, "messages": [{"role": "user", "content": "<image> injected marker"}]},
        ("POST", "/v1/chat/completions", json.dumps({**good, "messages": [  # JSON's escape for a lone surrogate
            {"role": "user", "content": "a lone surrogate \ud800 in text"}]}).encode()),
        with_image("data:image/png;base64,!!!"), with_image("data:image/png,raw"),
        with_image(data_url(b"not an image at all")), with_image(data_url(IMAGES["cut.png"])), with_image(bomb),
        with_image(data_url(png_bytes(600, 600))),  # over max_image_pixels
        {**good, "messages": [{"role": "user", "content": [
            *[{"type": "image_url", "image_url": {"url": data_url(png_bytes(28, 28))}}] * 9,
            {"type": "text", "text": "?"}]}]},
        {**good, "messages": [{"role": "user", "content": "the cat sat on the mat " * 700}]},  # over the context
        with_image("file:///etc/passwd"), with_image("../../../etc/passwd"), with_image(str(outside / "secret.png")),
        with_image(f"file://{outside / 'secret.png'}"), with_image("link.png"), with_image("inside.png/../../x.png"),
        with_image("file:///inside.png%00.png"), with_image("nul\x00byte.png"), with_image("missing.png"),
        with_image("http://127.0.0.1:9/cat.png"), with_image("ftp://example.com/cat.png"),
    ]
    rng = random.Random(7)
    while len(cases) < MALFORMED:  # seeded variations: cut JSON, wrong types in random fields
        kind = rng.randrange(3)
        if kind == 0:
            cut = rng.randrange(1, len(text) - 1)
            cases.append(("POST", "/v1/chat/completions", text[:cut]))
        elif kind == 1:
            field = rng.choice(["messages", "temperature", "top_p", "max_tokens", "stop", "n", "stream_options"])
            cases.append({**good, field: rng.choice([{"x": 1}, [None], -5, "nope", [[1]]])})
        else:
            url = rng.choice(["data:image/png;base64,", "data:;base64,AAAA", "file:///proc/self/environ",
                              "/" * rng.randint(1, 4) + "etc/shadow", "data:image/png;base64," + "A" * rng.randint(1, 9)])
            cases.append(with_image(url))
    return cases[:MALFORMED]


def test_malformed_requests_each_get_a_clear_4xx(server, allowed):
    cases = malformed_requests(allowed)
    assert len(cases) == MALFORMED
    before = metrics(server)["requests"]
    responses = asyncio.run(post_all(f"{server.url}/v1/chat/completions", cases))
    for case, response in zip(cases, responses):
        assert 400 <= response.status_code < 500, (str(case)[:200], response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["message"] and error["code"] and error["type"] == "invalid_request_error", error
    assert metrics(server)["requests"] == before  # none of them reached the decoder
    codes = sorted({r.json()["error"]["code"] for r in responses})
    print(f"\n{MALFORMED} malformed requests: {MALFORMED} clear 4xx ({len(codes)} codes: {', '.join(codes)})")


def test_local_files_outside_the_allowed_folder_are_refused(server, allowed):
    root, outside = allowed
    url = f"{server.url}/v1/chat/completions"
    inside = httpx.post(url, json={**chat(1), "messages": [image_message("inside.png")]}, timeout=60)
    assert inside.status_code == 200, inside.text
    for path in ("file:///etc/passwd", str(outside / "secret.png"), f"file://{outside / 'secret.png'}", "link.png",
                 "../" + outside.name + "/secret.png", "file://localhost/etc/passwd", "nul\x00byte.png"):
        response = httpx.post(url, json={**chat(1), "messages": [image_message(path)]}, timeout=60)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] in ("path_not_allowed", "invalid_image_url"), (path, response.text)


class Listener:
    """A loopback TCP listener that records every connection made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_no_url_is_fetched_unless_the_operator_allows_it(server, monkeypatch):
    listener = Listener()
    opened = []
    real_urlopen = urllib.request.urlopen

    def recording_urlopen(url, *args, **kwargs):
        opened.append(url)
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    base = f"127.0.0.1:{listener.port}"
    urls = [f"http://{base}/cat.png", f"https://{base}/cat.png", f"HTTP://{base}/cat.png", f"//{base}/cat.png",
            f"http://localhost:{listener.port}/cat.png", f"file://{base}/cat.png", f"ftp://{base}/cat.png",
            f"gopher://{base}/", f"data:text/html,<img src=http://{base}/x>"]
    try:
        for url in urls:
            response = httpx.post(f"{server.url}/v1/chat/completions",
                                  json={**chat(1), "messages": [image_message(url)]}, timeout=60)
            assert response.status_code == 400, (url, response.text)
        time.sleep(0.2)
        assert listener.connections == 0 and opened == []  # nothing left the server
        # the control: a server whose operator allows remote URLs does connect
        settings = ServeSettings(model_name=MODEL_NAME, allow_remote_urls=True, remote_timeout_s=1.0)
        handle, uvicorn_server, thread = start_server(server.generator, settings)
        try:
            response = httpx.post(f"{handle.url}/v1/chat/completions",
                                  json={**chat(1), "messages": [image_message(urls[0])]}, timeout=60)
            assert response.status_code == 400 and response.json()["error"]["code"] == "image_fetch_failed"
            assert listener.connections == 1 and opened == [urls[0]]
        finally:
            uvicorn_server.should_exit = True
            thread.join(timeout=10)
    finally:
        listener.close()


def test_clients_that_leave_mid_stream_stop_their_work(server):
    url = f"{server.url}/v1/chat/completions"
    wait_idle(server)
    before = metrics(server)
    start_rss = rss_mb()
    leavers, max_tokens = 24, 1000

    async def leave_early(i: int) -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {**chat(i), "max_tokens": max_tokens, "stream": True}
            async with client.stream("POST", url, json=body) as response:
                assert response.status_code == 200
                chunks = 0
                async for line in response.aiter_lines():
                    chunks += line.startswith("data: ")
                    if chunks == 3:
                        break
                return chunks  # leaving the block closes the connection mid-stream

    async def give_up_waiting(i: int) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=0.3)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url, json={**chat(i), "max_tokens": max_tokens})

    async def both():
        return await asyncio.gather(*(leave_early(i) for i in range(leavers)),
                                    *(give_up_waiting(i) for i in range(8)))
    asyncio.run(both())
    after = wait_idle(server, cancelled=before["cancelled"] + leavers + 8)
    cancelled = after["cancelled"] - before["cancelled"]
    tokens = after["generated_tokens"] - before["generated_tokens"]
    assert cancelled == leavers + 8, (before, after)  # every one of them stopped, none ran to max_tokens
    assert tokens < (leavers + 8) * max_tokens // 4
    assert rss_mb() - start_rss < 40
    print(f"\n{leavers + 8} clients left early: {cancelled} cancelled, {tokens} tokens generated "
          f"of {(leavers + 8) * max_tokens} asked for")
