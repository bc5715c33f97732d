"""The demo's held-out evaluation: MNIST test digits and held-out Twemoji, answered by generation.

MNIST: the generated answer must be exactly the right digit. Twemoji: exact match and token F1 of
the generated name against its CLDR name (both lower-cased, punctuation stripped). A saved model
(the demo's `final/`, or any stage's `export/`) is re-evaluated on its own with

    python -m eve_vlm.demo.evaluate runs/demo/final --dtype float32
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from ..infer import GenerationRequest, Generator, SamplingParams
from .data import DIGIT_QUESTION, EMOJI_QUESTION, MnistSource, TwemojiSource


@dataclass(frozen=True)
class Answer:
    """One held-out question: the image, the expected and the generated answer."""

    task: str
    image: Image.Image
    expected: str
    answer: str


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two normalised strings."""
    pred, ref = normalise(prediction).split(), normalise(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_heldout(generator: Generator, mnist: int, twemoji: int, batch_size: int = 32) -> list[Answer]:
    """Greedy answers to `mnist` MNIST test digits and `twemoji` held-out emoji."""
    questions: list[tuple[str, Image.Image, str, str]] = []
    digits = MnistSource(split="test", task="qa", limit=mnist, seed=1)
    for i in range(len(digits)):
        sample = digits[i]
        questions.append(("mnist", sample.images[0], DIGIT_QUESTION, sample.messages[1]["content"]))
    emoji = TwemojiSource(split="heldout", task="qa", limit=twemoji, seed=1)
    for i in range(len(emoji)):
        sample = emoji[i]
        questions.append(("twemoji", sample.images[0], EMOJI_QUESTION, sample.messages[1]["content"]))
    params = SamplingParams(max_new_tokens=12)
    requests = [GenerationRequest([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                  [image], params) for _, image, q, _ in questions]
    results = generator.generate(requests, batch_size=batch_size)
    return [Answer(task, image, expected, result.text.strip())
            for (task, image, _, expected), result in zip(questions, results)]


def score(answers: list[Answer]) -> dict[str, float]:
    """MNIST accuracy; Twemoji exact match and token F1 (percentages) and the counts."""
    digits = [a for a in answers if a.task == "mnist"]
    emoji = [a for a in answers if a.task == "twemoji"]
    out: dict[str, float] = {"mnist_n": len(digits), "twemoji_n": len(emoji)}
    if digits:
        out["mnist_accuracy"] = 100 * sum(a.answer.strip() == a.expected for a in digits) / len(digits)
    if emoji:
        out["twemoji_exact_match"] = 100 * sum(normalise(a.answer) == normalise(a.expected) for a in emoji) / len(emoji)
        out["twemoji_token_f1"] = 100 * sum(token_f1(a.answer, a.expected) for a in emoji) / len(emoji)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from .run import DemoOptions

    parser = argparse.ArgumentParser(prog="python -m eve_vlm.demo.evaluate",
                                     description="the demo's held-out evaluation of a saved model")
    parser.add_argument("model", help="a saved EVE folder (runs/demo/final)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="the weights' dtype (default float32)")
    parser.add_argument("--mnist", type=int, default=DemoOptions.mnist_eval, help="MNIST test digits (default %(default)s)")
    parser.add_argument("--twemoji", type=int, default=DemoOptions.twemoji_eval, help="held-out emoji (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="questions generated together (default 32)")
    args = parser.parse_args(argv)
    from ..infer import load_model

    model, processor = load_model(args.model, device="cpu", dtype=args.dtype)
    start = time.perf_counter()
    scores = score(answer_heldout(Generator(model, processor), args.mnist, args.twemoji, args.batch_size))
    seconds = time.perf_counter() - start
    print(f"{args.model} in {args.dtype}: MNIST exact {scores.get('mnist_accuracy', 0):.1f}% of "
          f"{scores['mnist_n']}; Twemoji exact {scores.get('twemoji_exact_match', 0):.1f}%, token F1 "
          f"{scores.get('twemoji_token_f1', 0):.1f}% of {scores['twemoji_n']}; answered in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
