"""Shared pieces of the reliability tests: the bad-data corpus, a tiny teacher, tiny stage recipes."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml
from transformers import Dinov2Config, Dinov2Model

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # corpus.py
sys.path.insert(0, str(HERE.parent / "serve"))  # serve_helpers.py

import corpus as corpus_module  # noqa: E402

# as tests/train/conftest.py's stage, with the vicuna template (multi-turn records) and room for a sample
TINY_STAGE = {
    "name": "reliability",
    "model": {
        "text_config": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512,
                        "max_position_embeddings": 512},
        "tokenizer": "tiny",
        "eve": {"vision_width": 16, "vision_heads": 4, "image_size": 56, "aligner_heads": 4, "template": "vicuna_v1"},
    },
    "template": "vicuna_v1",
    "align_weight": 1.0,
    "data": {"sources": [{"kind": "shapes", "options": {"size": 64, "task": "qa", "image_size": 48}}],
             "max_length": 160},
    "optim": {"lr": {"pel": 1e-2, "aligner": 1e-2}, "warmup_ratio": 0.0},
    "global_batch": 4,
    "micro_batch": 2,
    "max_steps": 6,
    "log_every": 1,
    "checkpoint_every": 100,
    "seed": 0,
}


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("teacher")
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          patch_size=14, image_size=56)
    Dinov2Model(config).save_pretrained(path)
    return str(path)


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
