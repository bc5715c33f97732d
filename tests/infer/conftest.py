"""A tiny random EVE (in memory and saved) and a `Generator` over it, shared by the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from infer_helpers import random_image
from PIL import Image

from eve_vlm.infer import Generator
from eve_vlm.testing import tiny_model_and_processor


@pytest.fixture(scope="session")
def tiny():
    return tiny_model_and_processor()


@pytest.fixture(scope="session")
def generator(tiny) -> Generator:
    return Generator(*tiny)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny, tmp_path_factory) -> Path:
    model, processor = tiny
    directory = tmp_path_factory.mktemp("tiny-eve")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> list[Path]:
    """Three PNGs of different sizes and aspect ratios."""
    directory = tmp_path_factory.mktemp("images")
    paths = []
    for i, (h, w) in enumerate([(60, 90), (100, 40), (64, 64)]):
        path = directory / f"img{i}.png"
        Image.fromarray(random_image(h, w, seed=i)).save(path)
        paths.append(path)
    return paths
