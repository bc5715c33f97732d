"""`Generator`: batching is invisible (left padding), per-request limits and stops, streaming, loading."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from infer_helpers import random_image, user
from transformers.generation.streamers import BaseStreamer

from eve_vlm.infer import (
    GenerationRequest,
    Generator,
    PromptTooLongError,
    SamplingParams,
    StopFilter,
    cut_at_stop,
    load_model,
)
from eve_vlm.infer.engine import request_images

GREEDY = SamplingParams(max_new_tokens=12)


class TokenRecorder(BaseStreamer):
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.tokens += value.tolist()

    def end(self) -> None:
        self.ended = True


def mixed_requests(params: SamplingParams = GREEDY) -> list[GenerationRequest]:
    """Different image sizes and counts, and prompt lengths from a few tokens to a few dozen."""
    return [
        GenerationRequest([user("What digit is this?", 1)], [random_image(60, 90, 1)], params),
        GenerationRequest([user("the cat sat on the mat with a red ball and a blue box, what is it?", 1)],
                          [random_image(100, 40, 2)], params),
        GenerationRequest([user("Compare the two images.", 2)], [random_image(64, 64, 3), random_image(30, 120, 4)],
                          params),
        GenerationRequest([user("hello")], [], params),
        GenerationRequest([user("What is it?", 1), {"role": "assistant", "content": "a horse"},
                           user("and its colour?")], [random_image(112, 112, 5)], params),
    ]


def test_batched_generation_equals_one_by_one(generator):
    requests = mixed_requests()
    batched = generator.generate(requests)
    one_by_one = [generator.generate([r])[0] for r in requests]
    assert batched == one_by_one
    assert generator.generate(requests, batch_size=2) == batched
    assert all(r.completion_tokens == 12 and r.finish_reason == "length" for r in batched)
    assert len({r.prompt_tokens for r in batched}) == len(batched)  # the batch really was ragged


def test_single_request_matches_plain_generate(generator, tiny):
    """The per-row tracker changes nothing: same ids as transformers' generate on the processor's batch."""
    model, processor = tiny
    request = mixed_requests()[0]
    prompt = processor.apply_chat_template(request.messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=list(request.images))
    reference = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = processor.decode(reference[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert generator.generate([request])[0].text == expected


def test_max_new_tokens_is_per_request_within_a_batch(generator):
    base = mixed_requests()[1]
    lengths = [3, 9, 1]
    requests = [GenerationRequest(base.messages, base.images, SamplingParams(max_new_tokens=n)) for n in lengths]
    results = generator.generate(requests)
    assert [r.completion_tokens for r in results] == lengths
    assert all(r.finish_reason == "length" for r in results)
    longest = results[1].text
    assert longest.startswith(results[0].text) and longest.startswith(results[2].text)


def test_stop_string_cuts_the_answer_and_ends_that_row_only(generator):
    base = mixed_requests()[0]
    full = generator.generate([GenerationRequest(base.messages, base.images, SamplingParams(max_new_tokens=20))])[0]
    stop = full.text[6:9]
    assert stop.strip() and "\ufffd" not in stop, f"pick another slice of {full.text!r}"
    stopped, other = generator.generate([
        GenerationRequest(base.messages, base.images, SamplingParams(max_new_tokens=20, stop=("zzz-never", stop))),
        GenerationRequest(base.messages, base.images, SamplingParams(max_new_tokens=20)),
    ])
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 20
    assert other == full


def test_eos_ends_a_row_with_stop_and_is_not_counted(tiny):
    generator = Generator(*tiny)
    request = mixed_requests()[3]
    recorder = TokenRecorder()
    generator.run([generator.prepare(request)], streamers=[recorder])
    third = recorder.tokens[2]
    assert third not in recorder.tokens[:2]
    generator.eos_token_ids = (third,)  # pretend the model's EOS is the token it gives third
    result = generator.generate([request])[0]
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 2


@pytest.mark.parametrize("index", range(5))
def test_streaming_yields_the_same_text(generator, index):
    request = mixed_requests(SamplingParams(max_new_tokens=16))[index]
    expected = generator.generate([request])[0].text
    pieces = list(generator.stream(request))
    assert "".join(pieces) == expected
    assert len(pieces) > 1 or " " not in expected.strip()  # the streamer releases text word by word


def test_streaming_with_a_stop_string_yields_the_same_text(generator):
    request = mixed_requests(SamplingParams(max_new_tokens=20))[2]
    full = generator.generate([request])[0].text
    stop = full[5:8]
    stopped = GenerationRequest(request.messages, request.images, SamplingParams(max_new_tokens=20, stop=(stop,)))
    assert "".join(generator.stream(stopped)) == generator.generate([stopped])[0].text == full[: full.find(stop)]


def test_closing_a_stream_stops_generation(generator, monkeypatch):
    finished = []
    run = generator.run
    monkeypatch.setattr(generator, "run", lambda *args, **kwargs: finished.extend(run(*args, **kwargs)))
    stream = generator.stream(mixed_requests(SamplingParams(max_new_tokens=2000))[3])
    next(stream)
    stream.close()  # sets the cancel flag, then joins the generating thread
    assert finished[0].finish_reason == "cancelled"
    assert finished[0].completion_tokens < 2000


def test_cancelled_row_stops_after_one_step_and_others_continue(generator):
    requests = mixed_requests(SamplingParams(max_new_tokens=10))[:2]
    prepared = [generator.prepare(r) for r in requests]
    cancel = threading.Event()
    cancel.set()
    results = generator.run(prepared, cancelled=[cancel, None])
    assert (results[0].finish_reason, results[0].completion_tokens) == ("cancelled", 1)
    assert (results[1].finish_reason, results[1].completion_tokens) == ("length", 10)


def test_sampling_is_seeded_and_mixed_decoding_keys_are_grouped(generator):
    sampled = SamplingParams(max_new_tokens=8, temperature=0.8, top_p=0.9, top_k=20)
    requests = mixed_requests(sampled)[:2] + mixed_requests()[:1]
    torch.manual_seed(0)
    first = generator.generate(requests)
    torch.manual_seed(0)
    assert generator.generate(requests) == first
    assert first[2] == generator.generate(mixed_requests()[:1])[0]  # the greedy one ran apart


def test_run_refuses_mixed_decoding_keys(generator):
    prepared = [generator.prepare(mixed_requests()[3]),
                generator.prepare(mixed_requests(SamplingParams(temperature=1.0))[3])]
    with pytest.raises(ValueError, match="decoding key"):
        generator.run(prepared)


def test_images_can_ride_in_the_message_parts(generator):
    image = random_image(60, 90, 1)
    inline = GenerationRequest([{"role": "user", "content": [{"type": "image", "image": image},
                                                             {"type": "text", "text": "What digit is this?"}]}],
                               params=GREEDY)
    assert len(request_images(inline)) == 1
    assert generator.generate([inline]) == generator.generate(mixed_requests()[:1])


def test_bad_requests_raise_value_errors(generator):
    with pytest.raises(ValueError, match="markers"):
        generator.prepare(GenerationRequest([user("two images?", 2)], [random_image(40, 40)]))
    with pytest.raises(ValueError, match="without an 'image'"):
        generator.prepare(GenerationRequest([user("where is it?", 1)]))
    with pytest.raises(PromptTooLongError, match="context"):
        generator.prepare(GenerationRequest([user("hi")], params=SamplingParams(max_new_tokens=100_000)))


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": -1},
                                    {"stop": ("",)}])
def test_sampling_params_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


# --- stop strings in streamed text --------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abc\n ", max_size=40), stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4),
                                                                     max_size=3),
       cuts=st.lists(st.integers(0, 40), max_size=8))
@example(text="aaca", stops=["c", "aca"], cuts=[3])  # the stop that completes first wins
def test_stop_filter_equals_cutting_the_whole_text(text, stops, cuts):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    stop_filter = StopFilter(stops)
    streamed = "".join(stop_filter.push(text[a:b]) for a, b in zip(bounds, bounds[1:])) + stop_filter.flush()
    assert streamed == cut_at_stop(text, stops)[0]


# --- loading ------------------------------------------------------------------------------------
def test_load_model_round_trip(tiny_model_dir, generator):
    model, processor = load_model(tiny_model_dir, device="cpu", dtype="float32")
    assert not model.training
    loaded = Generator(model, processor)
    assert loaded.generate(mixed_requests()[:2]) == generator.generate(mixed_requests()[:2])


def test_load_model_bfloat16(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"dtype": "float8"}, ValueError, "dtype"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"quantization": "3bit"}, ValueError, "quantization"),
    ({"quantization": "8bit"}, ValueError, "bitsandbytes|CUDA"),
])
def test_load_model_errors_are_clear(tiny_model_dir, kwargs, error, match):
    if kwargs.get("quantization") == "8bit" and torch.cuda.is_available():
        pytest.skip("a GPU is present: 8-bit loading may work here")
    with pytest.raises(error, match=match):
        load_model(tiny_model_dir, **{"device": "cpu", **kwargs})


def test_load_model_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
