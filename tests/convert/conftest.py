"""Fixtures of the conversion tests: tiny checkpoints in the reference EVE layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reference_layout import reference_state, write_reference


@pytest.fixture
def make_reference(tmp_path: Path) -> Callable[..., Path]:
    """make_reference(name="ref", state=None, config=None, fmt="safetensors", shards=1) -> folder."""
    def make(name: str = "ref", state: dict[str, torch.Tensor] | None = None, config: dict | None = None,
             fmt: str = "safetensors", shards: int = 1) -> Path:
        return write_reference(tmp_path / name, reference_state() if state is None else state, config, fmt, shards)

    return make
