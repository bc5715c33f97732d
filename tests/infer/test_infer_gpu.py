"""The engine on a CUDA GPU (run with `pytest -m gpu`): batching parity, bf16, loading, quantization errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from infer_helpers import random_image, user

from eve_vlm.infer import GenerationRequest, Generator, SamplingParams, load_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def requests(max_new_tokens: int = 12) -> list[GenerationRequest]:
    params = SamplingParams(max_new_tokens=max_new_tokens)
    return [GenerationRequest([user("What digit is this?", 1)], [random_image(60, 90, 1)], params),
            GenerationRequest([user("the cat sat on the mat with a red ball, what is it?", 1)],
                              [random_image(100, 40, 2)], params),
            GenerationRequest([user("Compare them.", 2)], [random_image(64, 64, 3), random_image(30, 120, 4)], params),
            GenerationRequest([user("hello")], [], params)]


def test_batched_equals_one_by_one_on_gpu_in_float32(tiny):
    model, processor = tiny
    generator = Generator(model.to("cuda"), processor)
    try:
        batched = generator.generate(requests())
        assert batched == [generator.generate([r])[0] for r in requests()]
        assert all(r.completion_tokens == 12 for r in batched)
    finally:
        model.to("cpu")


def test_bfloat16_generation_and_streaming(tiny_model_dir):
    model, processor = load_model(tiny_model_dir, device="auto", dtype="auto")
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    generator = Generator(model, processor)
    results = generator.generate(requests(16))
    assert all(r.completion_tokens == 16 or r.finish_reason == "stop" for r in results)
    for request, result in zip(requests(16), results):
        assert "".join(generator.stream(request)) == generator.generate([request])[0].text
        assert result.text  # something came out of every row of the bf16 batch


def test_quantization(tiny_model_dir):
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ValueError, match="pip install bitsandbytes"):
            load_model(tiny_model_dir, device="cuda", quantization="8bit")
        return
    model, processor = load_model(tiny_model_dir, device="cuda", quantization="4bit")
    assert Generator(model, processor).generate(requests(4))[0].completion_tokens == 4
