"""Shared pieces for training tests: a tiny random teacher and a tiny stage recipe on disk."""

import copy

import pytest
import yaml
from transformers import Dinov2Config, Dinov2Model

TINY_STAGE = {
    "name": "test-stage",
    "model": {
        "text_config": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512,
                        "max_position_embeddings": 512},
        "tokenizer": "tiny",
        "eve": {"vision_width": 16, "vision_heads": 4, "image_size": 56, "aligner_heads": 4, "template": "plain"},
    },
    "template": "plain",
    "align_weight": 1.0,
    "data": {"sources": [{"kind": "shapes", "options": {"size": 64, "task": "caption", "image_size": 48}}],
             "max_length": 64},
    "optim": {"lr": {"pel": 1e-2, "aligner": 1e-2}, "warmup_ratio": 0.0},
    "global_batch": 4,
    "micro_batch": 2,
    "max_steps": 6,
    "log_every": 1,
    "checkpoint_every": 3,
    "seed": 0,
}


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          patch_size=14, image_size=56)
    Dinov2Model(config).save_pretrained(path)
    return str(path)


@pytest.fixture()
def write_recipe(tmp_path, teacher_path):
    """write_recipe(**changes) -> path of a YAML recipe (nested keys as dotted strings)."""
    def write(name="stage.yaml", **changes):
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
