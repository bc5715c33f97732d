"""The demo's real data as training sources: MNIST digits and Twemoji with their CLDR names.

Registered as source kinds `mnist` and `twemoji`, so the demo's recipes are ordinary recipe files.
Held-out data (MNIST's test split, the Twemoji held-out split) is never used for training.
"""

from __future__ import annotations

import random
from functools import cache

import numpy as np
from PIL import Image

from ..data.sources import Sample, Source, caption_sample, qa_sample, register_source

DIGIT_QUESTION = "What digit is this?"
EMOJI_QUESTION = "What does this emoji show?"


@cache
def _mnist():
    from ..assets import load_mnist

    return load_mnist()


@cache
def _twemoji():
    from ..assets import load_twemoji, twemoji_split

    train, heldout = twemoji_split(load_twemoji())
    return {"train": train, "heldout": heldout}


def digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    """A 28x28 MNIST digit as an RGB image of `size` px (dark digit on white, like ink)."""
    image = Image.fromarray(255 - pixels).convert("RGB")
    return image.resize((size, size), Image.Resampling.BICUBIC) if size != 28 else image


class _Conversations(Source):
    """A source whose sample is a conversation of `turns` items, one caption or question and answer each
    (a chat template's system prompt, ~20 tokens with SmolLM2's, is then paid once per conversation
    instead of once per item). Subclasses give `_items()` (how many) and `_single(index)`."""

    name: str
    turns: int = 1

    def _check_turns(self, kind: str, turns: int) -> None:
        if turns < 1:
            raise ValueError(f"{kind} turns={turns!r}: items per conversation, at least 1")
        self.turns = turns

    def _items(self) -> int:
        raise NotImplementedError

    def _single(self, index: int) -> Sample:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._items() // self.turns

    def __getitem__(self, index: int) -> Sample:
        turns = [self._single(i) for i in range(index * self.turns, (index + 1) * self.turns)]
        if self.turns == 1:
            return turns[0]
        return Sample(f"{self.name}-{index}", [m for t in turns for m in t.messages], [t.images[0] for t in turns],
                      self.name)


class MnistSource(_Conversations):
    """MNIST digits; task `caption` ("a handwritten digit seven", or "... 7" with caption_digits=numeral)
    or `qa` ("What digit is this?" -> "7"). With `turns` > 1 a sample is a conversation of that many
    digits."""

    def __init__(self, split: str = "train", task: str = "caption", limit: int | None = None,
                 image_size: int = 56, seed: int = 0, name: str = "", caption_digits: str = "word",
                 turns: int = 1) -> None:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"mnist split={split!r}: choose train, valid or test")
        if task not in ("caption", "qa"):
            raise ValueError(f"mnist task={task!r}: choose caption or qa")
        if caption_digits not in ("word", "numeral"):
            raise ValueError(f"mnist caption_digits={caption_digits!r}: choose word ('seven') or numeral ('7')")
        self._check_turns("mnist", turns)
        self.caption_digits = caption_digits
        images, labels = _mnist()[split]
        order = np.random.default_rng(seed).permutation(len(labels))[:limit]
        self.images, self.labels = images[order], labels[order]
        self.task, self.image_size = task, image_size
        self.name = name or f"mnist-{split}-{task}"

    def _items(self) -> int:
        return len(self.labels)

    def _single(self, index: int) -> Sample:
        from ..assets import DIGIT_WORDS

        label = int(self.labels[index])
        image = digit_image(self.images[index], self.image_size)
        sample_id = f"{self.name}-{index}"
        if self.task == "caption":
            digit = DIGIT_WORDS[label] if self.caption_digits == "word" else str(label)
            return caption_sample(sample_id, image, f"a handwritten digit {digit}", self.name)
        return qa_sample(sample_id, image, DIGIT_QUESTION, str(label), self.name)

    def text_length(self, index: int) -> int:
        return 32 * self.turns


class TwemojiSource(_Conversations):
    """Twemoji images named by CLDR ("astronaut"); task `caption` or `qa`; split `train` or `heldout`.
    With `turns` > 1 a sample is a conversation of that many emoji."""

    def __init__(self, split: str = "train", task: str = "caption", limit: int | None = None, seed: int = 0,
                 name: str = "", turns: int = 1) -> None:
        if split not in ("train", "heldout"):
            raise ValueError(f"twemoji split={split!r}: choose train or heldout")
        if task not in ("caption", "qa"):
            raise ValueError(f"twemoji task={task!r}: choose caption or qa")
        self._check_turns("twemoji", turns)
        items = list(_twemoji()[split])
        random.Random(seed).shuffle(items)
        self.items = items[:limit]
        self.task = task
        self.name = name or f"twemoji-{split}-{task}"

    def _items(self) -> int:
        return len(self.items)

    def _single(self, index: int) -> Sample:
        from ..assets import open_rgb

        item = self.items[index]
        image = open_rgb(item.path)
        sample_id = f"{self.name}-{item.path.stem}"
        if self.task == "caption":
            return caption_sample(sample_id, image, item.name, self.name)
        return qa_sample(sample_id, image, EMOJI_QUESTION, item.name, self.name)

    def text_length(self, index: int) -> int:
        return sum(len(self.items[i].name) + 30 for i in range(index * self.turns, (index + 1) * self.turns))


register_source("mnist", MnistSource)
register_source("twemoji", TwemojiSource)
