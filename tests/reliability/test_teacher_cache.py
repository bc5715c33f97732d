"""The teacher feature cache: training with it equals training without; bad entries are recomputed, never used."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from eve_vlm.train import teacher as teacher_module
from eve_vlm.train.loop import train
from eve_vlm.train.recipe import RecipeError, TeacherSpec, load_recipe
from eve_vlm.train.teacher import TeacherCache, VisionTeacher

pytestmark = pytest.mark.timeout(300)
EPOCHS = 3  # 8 samples, 4 per step: 2 steps an epoch


def recipe(write_recipe, name: str, cache: Path | None):
    return load_recipe(write_recipe(name, max_steps=2 * EPOCHS, teacher_cache=str(cache) if cache else None,
                                    data={"sources": [{"kind": "shapes", "options": {"size": 8, "task": "qa",
                                                                                     "image_size": 48}}],
                                          "max_length": 160}))


def outcome(export: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    metrics = [json.loads(line) for line in (export.parent / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(export / "model.safetensors")), metrics


def assert_same_training(a, b) -> None:
    (weights_a, metrics_a), (weights_b, metrics_b) = a, b
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert [m["loss"] for m in metrics_b] == pytest.approx([m["loss"] for m in metrics_a], abs=1e-5)


def test_training_with_the_cache_equals_training_without(write_recipe, tmp_path):
    cache = tmp_path / "cache"
    plain = outcome(train(recipe(write_recipe, "plain.yaml", None)))
    first = outcome(train(recipe(write_recipe, "first.yaml", cache)))  # fills the cache in epoch 1
    again = outcome(train(recipe(write_recipe, "again.yaml", cache)))  # every feature from disk
    assert_same_training(plain, first)
    assert_same_training(plain, again)
    assert len(list(cache.rglob("*.safetensors"))) == 8  # one file per image
    last = first[1][-1]
    assert (last["teacher_cache_misses"], last["teacher_cache_hits"], last["teacher_cache_discarded"]) == \
        (8, 8 * (EPOCHS - 1), 0)
    assert again[1][-1]["teacher_cache_hits"] == 8 * EPOCHS and again[1][-1]["teacher_cache_misses"] == 0
    assert "teacher_cache_hits" not in plain[1][-1]


def test_nan_and_torn_entries_are_discarded_recomputed_and_counted(write_recipe, tmp_path, caplog):
    cache = tmp_path / "cache"
    plain = outcome(train(recipe(write_recipe, "plain.yaml", None)))
    train(recipe(write_recipe, "fill.yaml", cache))
    files = sorted(cache.rglob("*.safetensors"))
    poisoned = load_file(str(files[0]))["features"]
    poisoned[0, 0] = float("nan")
    save_file({"features": poisoned}, str(files[0]))
    files[1].write_bytes(files[1].read_bytes()[:40])  # a torn file (as if the disk lost its end)
    with caplog.at_level(logging.WARNING, logger="eve_vlm.train.teacher"):
        result = outcome(train(recipe(write_recipe, "healed.yaml", cache)))
    assert_same_training(plain, result)  # the NaN never reached the aligner's loss
    last = result[1][-1]
    assert (last["teacher_cache_discarded"], last["teacher_cache_misses"]) == (2, 2)
    assert sum("discarded (non-finite values)" in r.message for r in caplog.records) == 1
    assert sum("discarded (unreadable" in r.message for r in caplog.records) == 1
    for path in files[:2]:  # recomputed and written again, finite
        assert torch.isfinite(load_file(str(path))["features"]).all()


@pytest.fixture()
def tiny_teacher(teacher_path) -> VisionTeacher:
    return VisionTeacher.from_spec(TeacherSpec(teacher_path, layer=-1, image_size=56))


def test_the_key_is_the_input_and_the_teacher_identity(tmp_path, teacher_path):
    pixels = torch.randn(3, 28, 42)
    cache = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-1))
    same = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-1))
    other_layer = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-2))
    key = cache.key(pixels, (2, 3))
    assert key == same.key(pixels.clone(), (2, 3))
    changed = pixels.clone()
    changed[0, 0, 0] += 1e-6
    assert len({key, other_layer.key(pixels, (2, 3)), cache.key(changed, (2, 3)), cache.key(pixels, (1, 3))}) == 4


def test_a_full_disk_while_caching_is_logged_and_training_goes_on(tmp_path, tiny_teacher, teacher_path, monkeypatch,
                                                                  caplog):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(teacher_module, "save_file", full)
    cache = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-1))
    pixels = torch.randn(2, 3, 28, 28)
    with caplog.at_level(logging.WARNING, logger="eve_vlm.train.teacher"):
        features = cache(tiny_teacher, pixels, [(2, 2), (2, 2)])
    torch.testing.assert_close(features, tiny_teacher(pixels, [(2, 2), (2, 2)]))
    assert "No space left on device" in caplog.text and not list(tmp_path.rglob("*.safetensors*"))


def test_a_cache_without_a_teacher_is_a_recipe_error(write_recipe, tmp_path):
    with pytest.raises(RecipeError, match="teacher_cache is set but there is no teacher"):
        load_recipe(write_recipe("noteacher.yaml", teacher=None, align_weight=0.0, optim__lr={"pel": 1e-2},
                                 teacher_cache=str(tmp_path / "cache")))
