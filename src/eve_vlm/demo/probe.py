"""Digit probes of a demo model: how well it tells MNIST test digits apart, in three contexts.

    python -m eve_vlm.demo.probe runs/demo/stage1/export --context plain        # after stage 1 or 2
    python -m eve_vlm.demo.probe runs/demo/final --context chat                 # after stage 3

`plain`: "<image>a handwritten digit ___" in the plain template, arg-max over the ten digit words
(what stage 1 learns). `chat`: "What digit is this?" in the LLM's chat template, arg-max over "0".."9"
at the answer's first token (what stage 3 learns and the demo's evaluation asks). `chat-caption`: the
image as the user's turn and "a handwritten digit ___" as the assistant's, over the digit words (the
caption inside the chat template: tells the context apart from the task). One forward pass per
batch, no generation: seconds for 500 digits.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

CONTEXTS = ("plain", "chat", "chat-caption")


def digit_probe(path: str, context: str = "plain", n: int = 500, batch_size: int = 50) -> float:
    """Percentage of `n` MNIST test digits whose right answer scores highest among the ten."""
    from ..data.processor import EveProcessor
    from ..model.eve import EveForCausalLM

    predicted, labels = digit_predictions(EveForCausalLM.from_pretrained(path).eval(),
                                          EveProcessor.from_pretrained(path), context, n, batch_size)
    return 100 * float((predicted == labels).float().mean())


def digit_predictions(model: Any, processor: Any, context: str, n: int,
                      batch_size: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted digit, true digit) for the first `n` MNIST test digits (the evaluation's), in `context`.

    `model(**inputs, logits_to_keep=1).logits` scores the next token; `processor` is switched to the
    context's template."""
    from ..assets import DIGIT_WORDS
    from .data import DIGIT_QUESTION, MnistSource

    if context not in CONTEXTS:
        raise ValueError(f"context={context!r}: choose one of {CONTEXTS}")
    processor.template = "plain" if context == "plain" else "chat"
    if context == "chat":
        answers = [str(d) for d in range(10)]
        user = [{"type": "image"}, {"type": "text", "text": DIGIT_QUESTION}]
    else:
        answers = [" " + word for word in DIGIT_WORDS]
        user = [{"type": "image"}]
    candidates = torch.tensor([processor.tokenizer(a, add_special_tokens=False).input_ids[0] for a in answers])
    if context == "plain":
        prompt = "<image>a handwritten digit"
    else:
        prompt = processor.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True)
        prompt += "a handwritten digit" if context == "chat-caption" else ""
    digits = MnistSource(split="test", task="qa", limit=n, seed=1)
    predicted, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(digits), batch_size):
            samples = [digits[i] for i in range(start, min(len(digits), start + batch_size))]
            inputs = processor(text=[prompt] * len(samples), images=[s.images[0] for s in samples])
            predicted.append(model(**inputs, logits_to_keep=1).logits[:, -1, candidates].argmax(-1))
            labels.append(torch.tensor([int(s.messages[1]["content"]) for s in samples]))
    return torch.cat(predicted), torch.cat(labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eve_vlm.demo.probe", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a demo model folder (a stage's export or runs/demo/final)")
    parser.add_argument("--context", choices=CONTEXTS, default="plain")
    parser.add_argument("-n", type=int, default=500, help="MNIST test digits")
    args = parser.parse_args(argv)
    print(f"{args.model}: {args.context} digit probe {digit_probe(args.model, args.context, args.n):.1f}% "
          f"on {args.n} MNIST test digits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
