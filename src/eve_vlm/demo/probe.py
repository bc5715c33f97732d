"""Digit probes of a demo model: how well it tells MNIST test digits apart, in three contexts.

    python -m eve_vlm.demo.probe runs/demo/stage1/export --context plain        # after stage 1 or 2
    python -m eve_vlm.demo.probe runs/demo/final --context chat                 # after stage 3

`plain`: "<image>a handwritten digit ___" in the plain template, arg-max over the ten digit words
(what stage 1 learns). `chat`: "What digit is this?" in the LLM's chat template, arg-max over "0".."9"
at the answer's first token (what stage 3 learns and the demo's evaluation asks). `chat-caption`: the
image as the user's turn and "a handwritten digit ___" as the assistant's, over the digit words (the
caption inside the chat template: tells the context apart from the task). One forward pass per
batch, no generation: seconds for 500 digits.

Two diagnostics tell the features apart from the LLM's reading of them (a softmax regression fitted on
3,000 MNIST training digits, scored on the same test digits):

    python -m eve_vlm.demo.probe runs/demo/stage1/export --context linear      # on the visual tokens
    python -m eve_vlm.demo.probe --teacher dinov2-small --teacher-scale 2       # on the teacher's features
    python -m eve_vlm.demo.probe --pixels                                       # on the 28x28 pixels

When the visual tokens separate the digits far better than the LLM names them, the reading is the
bottleneck; when the teacher's features separate them better than the visual tokens, the teacher
has more to give.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

CONTEXTS = ("plain", "chat", "chat-caption")
LINEAR_TRAIN = 3000
"""MNIST training digits the linear probes fit on."""


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


def linear_probe(features: Any, n: int = 500, n_train: int = LINEAR_TRAIN, batch_size: int = 100) -> float:
    """Percentage of `n` MNIST test digits a softmax regression on `features(images) -> (N, F)` gets
    right, fitted (L-BFGS, L2 1e-3, standardised features) on `n_train` training digits."""
    from .data import MnistSource

    def encode(split: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        digits = MnistSource(split=split, task="qa", limit=count, seed=seed)
        xs, ys = [], []
        with torch.inference_mode():
            for start in range(0, len(digits), batch_size):
                samples = [digits[i] for i in range(start, min(len(digits), start + batch_size))]
                xs.append(features([s.images[0] for s in samples]).flatten(1).float())
                ys.append(torch.tensor([int(s.messages[1]["content"]) for s in samples]))
        return torch.cat(xs), torch.cat(ys)

    x_train, y_train = encode("train", n_train, seed=3)
    x_test, y_test = encode("test", n, seed=1)  # the evaluation's digits
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weight = torch.zeros(x_train.shape[1], 10, requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ weight + bias, y_train) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return 100 * float(((x_test @ weight + bias).argmax(-1) == y_test).float().mean())


def visual_token_features(path: str) -> Any:
    """images -> (N, tokens * D): a demo model's visual tokens (PEL + projector), as the LLM receives them."""
    from ..data.processor import EveProcessor
    from ..model.eve import EveForCausalLM

    model, processor = EveForCausalLM.from_pretrained(path).eval(), EveProcessor.from_pretrained(path)
    return lambda images: torch.stack(model.get_image_features(torch.stack(processor.process_images(images))))


def teacher_features(path: str, scale: int, image_size: int = 56, token_pixels: int = 28) -> Any:
    """images -> (N, cells * Ct): the aligner's targets for the demo's digits (a `image_size` px image,
    `token_pixels` px per EVE token), from the teacher at `path` with `scale`."""
    from ..train.recipe import TeacherSpec
    from ..train.teacher import VisionTeacher

    teacher = VisionTeacher.from_spec(TeacherSpec(path, layer=-1, image_size=224, scale=scale))
    grid = (image_size // token_pixels, image_size // token_pixels)
    return lambda images: teacher(torch.stack([teacher.transform(image, grid) for image in images]),
                                  [grid] * len(images)).view(len(images), -1)


def pixel_features(images: Sequence[Any]) -> torch.Tensor:
    """images -> (N, 784): each digit's 28 x 28 grey levels (the floor that learned features should beat)."""
    import numpy as np

    return torch.stack([torch.from_numpy(np.asarray(image.convert("L").resize((28, 28)), dtype=np.float32))
                        for image in images])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eve_vlm.demo.probe", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a demo model folder (a stage's export or runs/demo/final)")
    parser.add_argument("--context", choices=(*CONTEXTS, "linear"), default="plain",
                        help="linear: a softmax regression on the model's visual tokens")
    parser.add_argument("--teacher", help="instead of a model: a softmax regression on this teacher's features")
    parser.add_argument("--teacher-scale", type=int, default=1, help="the teacher's scale (see TeacherSpec)")
    parser.add_argument("--pixels", action="store_true", help="instead of a model: a softmax regression on the pixels")
    parser.add_argument("-n", type=int, default=500, help="MNIST test digits")
    args = parser.parse_args(argv)
    if sum((args.model is not None, args.teacher is not None, args.pixels)) != 1:
        parser.error("give one of: a model folder, --teacher, --pixels")
    if args.model is not None and args.context != "linear":
        print(f"{args.model}: {args.context} digit probe {digit_probe(args.model, args.context, args.n):.1f}% "
              f"on {args.n} MNIST test digits")
        return 0
    if args.pixels:
        what, features = "pixels", pixel_features
    elif args.teacher is not None:
        what, features = f"{args.teacher} at scale {args.teacher_scale}", teacher_features(args.teacher,
                                                                                            args.teacher_scale)
    else:
        what, features = f"{args.model}, visual tokens", visual_token_features(args.model)
    print(f"{what}: linear probe {linear_probe(features, args.n):.1f}% on {args.n} MNIST test digits "
          f"({LINEAR_TRAIN} training digits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
