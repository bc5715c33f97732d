"""Suite-wide settings (property tests explore the same examples on every run) and shared fixtures."""

import pytest
from hypothesis import settings
from transformers import Dinov2Config, Dinov2Model

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          patch_size=14, image_size=56)
    Dinov2Model(config).save_pretrained(path)
    return str(path)
