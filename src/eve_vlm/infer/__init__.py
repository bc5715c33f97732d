"""Inference: load a checkpoint, answer chat requests in batches, stream answers.

    model, processor = load_model("runs/eve-tiny", device="auto", dtype="auto")
    generator = Generator(model, processor)
    request = GenerationRequest([{"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                                             {"type": "text", "text": "What is this?"}]}])
    print(generator.generate([request])[0].text)
    for piece in generator.stream(request):
        print(piece, end="", flush=True)
"""

from .engine import Generator, PreparedRequest, PromptTooLongError
from .loading import load_model
from .params import GenerationRequest, GenerationResult, SamplingParams
from .stopping import StopFilter, cut_at_stop

__all__ = ["GenerationRequest", "GenerationResult", "Generator", "PreparedRequest", "PromptTooLongError",
           "SamplingParams", "StopFilter", "cut_at_stop", "load_model"]
