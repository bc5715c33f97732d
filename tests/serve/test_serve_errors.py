"""Malformed and refused requests get OpenAI error bodies with 4xx statuses; the server keeps serving."""

from __future__ import annotations

import http.server
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image
from serve_helpers import MODEL_NAME, data_url, image_message, png_bytes

pytestmark = pytest.mark.timeout(120)

GOOD_IMAGE = data_url(png_bytes(28, 28))


def solid_png(height: int, width: int) -> bytes:
    """Many pixels in few bytes: the pixel limit, not the body limit, must refuse it."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def body(**overrides) -> dict:
    return {"model": MODEL_NAME, "messages": [image_message(GOOD_IMAGE)], "max_tokens": 4, "temperature": 0,
            **overrides}


def text_body(content: str, **overrides) -> dict:
    return body(messages=[{"role": "user", "content": content}], **overrides)


CASES = {
    "bad json": (b"{\"model\": ", 400, "invalid_json", None),
    "not an object": ([1, 2], 400, "invalid_value", None),
    "missing messages": ({"model": MODEL_NAME}, 400, "invalid_value", "messages"),
    "empty messages": (body(messages=[]), 400, "invalid_value", "messages"),
    "bad role": (body(messages=[{"role": "robot", "content": "x"}]), 400, "invalid_value", "messages.0.role"),
    "assistant first": (body(messages=[{"role": "assistant", "content": "x"}]), 400, "invalid_messages", "messages"),
    "temperature out of range": (body(temperature=5), 400, "invalid_value", "temperature"),
    "bad base64": (body(messages=[image_message("data:image/png;base64,!!notbase64!!")]), 400, "invalid_base64",
                   "messages.0.content.0.image_url"),
    "data url without base64": (body(messages=[image_message("data:image/png,rawbytes")]), 400, "invalid_image_url",
                                "messages.0.content.0.image_url"),
    "not an image": (body(messages=[image_message(data_url(b"just some text, no pixels"))]), 400, "invalid_image",
                     "messages.0.content.0.image_url"),
    "huge image": (body(messages=[image_message(data_url(solid_png(1000, 1000)))]), 400, "image_too_large",
                   "messages.0.content.0.image_url"),
    "too many images": (body(messages=[{"role": "user", "content": [
        *[{"type": "image_url", "image_url": {"url": GOOD_IMAGE}}] * 3, {"type": "text", "text": "?"}]}]),
        400, "too_many_images", "messages"),
    "image in an assistant message": (body(messages=[{"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": GOOD_IMAGE}}]}]), 400, "invalid_value", "messages.0.content.0"),
    "reserved marker": (text_body("look: <image>"), 400, "invalid_value", "messages.0.content"),
    "unknown model": (body(model="gpt-4o"), 404, "model_not_found", "model"),
    "max_tokens over the cap": (body(max_tokens=5000), 400, "max_tokens_too_large", "max_tokens"),
    "prompt over the limit": (text_body("the cat sat on the mat " * 200), 400, "context_length_exceeded",
                              "messages"),
    "n=2": (body(n=2), 400, "unsupported_value", "n"),
    "tools": (body(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_value", "tools"),
    "too many stop strings": (body(stop=["a", "b", "c", "d", "e"]), 400, "invalid_value", "stop"),
    "remote url": (body(messages=[image_message("https://example.com/cat.png")]), 400, "remote_urls_disabled",
                   "messages.0.content.0.image_url"),
    "other scheme": (body(messages=[image_message("ftp://example.com/cat.png")]), 400, "invalid_image_url",
                     "messages.0.content.0.image_url"),
    "path outside the allowed dir": (body(messages=[image_message("file:///etc/passwd")]), 400, "path_not_allowed",
                                     "messages.0.content.0.image_url"),
    "relative path escaping": (body(messages=[image_message("../../../etc/passwd")]), 400, "path_not_allowed",
                               "messages.0.content.0.image_url"),
    "missing local file": (body(messages=[image_message("nothere.png")]), 400, "invalid_image",
                           "messages.0.content.0.image_url"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_requests_get_openai_errors(server, name):
    payload, status, code, param = CASES[name]
    kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    response = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error" and error["message"]


def test_body_over_the_limit_is_413(server):
    huge = body(messages=[image_message("data:image/png;base64," + "A" * 1_200_000)])
    response = httpx.post(f"{server.url}/v1/chat/completions", json=huge, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/chat/completions", 405, "method_not_allowed"), ("GET", "/v1/nothing", 404, "not_found")])
def test_unknown_routes(server, method, path, status, code):
    response = httpx.request(method, f"{server.url}{path}")
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_openai_client_sees_the_errors(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=[image_message(GOOD_IMAGE)], n=2)
    assert info.value.code == "unsupported_value" and info.value.param == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[image_message(GOOD_IMAGE)])


def test_local_file_inside_the_allowed_dir(server, allowed_dir):
    for url in ("digit.png", f"file://{allowed_dir / 'digit.png'}"):
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body(messages=[image_message(url)]),
                              timeout=30)
        assert response.status_code == 200, response.text


def test_symlink_out_of_the_allowed_dir_is_refused(server, allowed_dir, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(28, 28))
    link = allowed_dir / "link.png"
    link.symlink_to(outside)
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body(messages=[image_message("link.png")]))
    assert response.json()["error"]["code"] == "path_not_allowed"


def test_server_keeps_serving_after_errors(server):
    for payload, *_ in CASES.values():
        kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
        httpx.post(f"{server.url}/v1/chat/completions", timeout=30, **kwargs)
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body(), timeout=30)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 4


def test_full_queue_is_429_with_retry_after(serve, generator):
    """One request decoding (held), one queued (the limit), the next refused; then all is served."""
    release = threading.Event()
    run = generator.run

    class HeldGenerator:
        def __getattr__(self, name):
            return getattr(generator, name)

        def run(self, *args, **kwargs):
            release.wait(timeout=30)
            return run(*args, **kwargs)

    server = serve(HeldGenerator(), max_queue=1, max_batch_size=1, batch_wait_ms=0)
    url = f"{server.url}/v1/chat/completions"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url, json=body(), timeout=30)
        assert _wait_for(lambda: server.app.state.batcher.running == 1)
        second = pool.submit(httpx.post, url, json=body(), timeout=30)
        assert _wait_for(lambda: server.app.state.batcher.queued == 1)
        refused = httpx.post(url, json=body(), timeout=30)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        release.set()
        assert first.result().status_code == second.result().status_code == 200


def test_remote_urls_when_allowed(serve, generator):
    """--allow-remote-urls fetches http(s) images (here from a loopback server)."""
    image = png_bytes(28, 56)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = image if self.path == "/cat.png" else b""
            self.send_response(200 if data else 404)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    try:
        server = serve(generator, allow_remote_urls=True)
        base = f"http://127.0.0.1:{images.server_address[1]}"
        ok = httpx.post(f"{server.url}/v1/chat/completions", json=body(messages=[image_message(f"{base}/cat.png")]))
        assert ok.status_code == 200, ok.text
        missing = httpx.post(f"{server.url}/v1/chat/completions",
                             json=body(messages=[image_message(f"{base}/missing.png")]))
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "image_fetch_failed"
    finally:
        images.shutdown()


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False



def test_bare_image_url_string_is_accepted(server):
    message = {"role": "user", "content": [{"type": "image_url", "image_url": GOOD_IMAGE},
                                           {"type": "text", "text": "?"}]}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body(messages=[message]), timeout=30)
    assert response.status_code == 200, response.text
