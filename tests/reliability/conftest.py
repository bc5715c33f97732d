"""Shared pieces of the reliability tests: the bad-data corpus, a tiny teacher, tiny stage recipes."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # corpus.py
sys.path.insert(0, str(HERE.parent / "serve"))  # serve_helpers.py

import corpus as corpus_module  # noqa: E402

from tiny_stage import TINY_STAGE as BASE_STAGE  # noqa: E402

# the shared tiny stage, with the vicuna template (multi-turn records) and room for a sample
TINY_STAGE = copy.deepcopy(BASE_STAGE)
TINY_STAGE["name"] = "reliability"
TINY_STAGE["model"]["eve"]["template"] = TINY_STAGE["template"] = "vicuna_v1"
TINY_STAGE["data"] = {"sources": [{"kind": "shapes", "options": {"size": 64, "task": "qa", "image_size": 48}}],
                      "max_length": 160}
TINY_STAGE["checkpoint_every"] = 100


@pytest.fixture()
def write_recipe(tmp_path, teacher_path):
    """write_recipe(name, **changes) -> path of a YAML recipe (nested keys joined by `__`; None removes)."""
    def write(name: str = "stage.yaml", **changes) -> Path:
        values = copy.deepcopy(TINY_STAGE)
        values["output_dir"] = str(tmp_path / name.replace(".yaml", ""))
        values["teacher"] = {"path": teacher_path, "layer": -1, "image_size": 56}
        for key, value in changes.items():
            target = values
            parts = key.split("__")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            if value is None:
                target.pop(parts[-1], None)
            else:
                target[parts[-1]] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(values))
        return path
    return write


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> corpus_module.Corpus:
    return corpus_module.build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the machine is shared (as OMP_NUM_THREADS=1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
