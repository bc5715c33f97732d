"""The server through the real `openai` client: answers equal the engine's, streaming, batching, disconnects."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_helpers import MODEL_NAME, data_url, image_message, png_bytes

from eve_vlm.data.image import load_image
from eve_vlm.infer import GenerationRequest, SamplingParams

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def engine_answer(generator, image: bytes | None, text: str, max_tokens: int, stop: tuple[str, ...] = ()) -> str:
    """What the engine answers directly for the same request (greedy)."""
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    request = GenerationRequest([{"role": "user", "content": content}], [load_image(image)] if image else [],
                                SamplingParams(max_new_tokens=max_tokens, stop=stop))
    return generator.generate([request])[0].text


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_chat_completion_with_a_data_url_image(client, server):
    image = png_bytes(60, 90, seed=1)
    response = client.chat.completions.create(model=MODEL_NAME, messages=[image_message(data_url(image))],
                                              max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == engine_answer(server.generator, image, "What digit is this?", 12)
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 12
    assert response.usage.prompt_tokens > 12  # the image's visual tokens count
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_streaming_gives_the_same_text_in_openai_chunks(client):
    image = png_bytes(100, 40, seed=2)
    kwargs = {"model": MODEL_NAME, "messages": [image_message(data_url(image), "Describe it.")],
              "max_tokens": 16, "temperature": 0}
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == full
    assert sum(1 for p in pieces if p) > 1  # it really streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert len({c.id for c in chunks}) == 1


def test_stop_strings_and_a_text_only_conversation(client, server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "the cat sat on the mat"}]
    full = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0)
    text = full.choices[0].message.content
    stop = text[6:9]
    for stream in (False, True):
        response = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0,
                                                  stop=[stop], stream=stream)
        if stream:
            chunks = list(response)
            answer = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            answer, finish = response.choices[0].message.content, response.choices[0].finish_reason
        assert (answer, finish) == (text[: text.find(stop)], "stop")


def test_sampling_parameters_are_accepted(client):
    response = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hello"}],
                                              max_tokens=5, temperature=0.7, top_p=0.9, n=1,
                                              extra_body={"top_k": 20})
    assert response.usage.completion_tokens == 5


def test_concurrent_requests_are_batched_and_answer_as_alone(client, server):
    images = [png_bytes(28 * (i + 1), 56, seed=10 + i) for i in range(6)]
    texts = ["What digit is this?", "the cat sat on the mat with a red ball", "hi", "What does this emoji show?",
             "zero one two", "Answer the question using a single word or phrase."]
    expected = [engine_answer(server.generator, image, text, 10) for image, text in zip(images, texts)]
    before = server.stats.batches, server.stats.requests

    def ask(i: int) -> str:
        stream = i % 2 == 1
        response = client.chat.completions.create(model=MODEL_NAME, messages=[image_message(data_url(images[i]),
                                                                                            texts[i])],
                                                  max_tokens=10, temperature=0, stream=stream)
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in response)
        return response.choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, range(6)))
    assert answers == expected
    assert server.stats.requests - before[1] == 6
    assert server.stats.batches - before[0] < 6  # some requests shared a batch
    assert server.stats.largest_batch > 1
    metrics = httpx.get(f"{server.url}/metrics").json()
    assert metrics["largest_batch"] > 1 and metrics["queued"] == 0


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_client_disconnect_mid_stream_stops_the_work(server):
    cancelled, tokens = server.stats.cancelled, server.stats.generated_tokens
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3000,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any('"content"' in line for line in received)
    assert _wait_for(lambda: server.stats.cancelled == cancelled + 1)
    assert server.stats.generated_tokens - tokens < 3000  # stopped well before max_tokens
    assert _wait_for(lambda: server.app.state.batcher.running == 0, timeout=2)


def test_client_disconnect_while_waiting_stops_the_work(server):
    cancelled, tokens = server.stats.cancelled, server.stats.generated_tokens
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3000,
            "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(5, read=0.5))
    assert _wait_for(lambda: server.stats.cancelled == cancelled + 1)
    assert server.stats.generated_tokens - tokens < 3000
