"""The teacher's view of an image: `scale` (several teacher patches per EVE token) and its precision."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from eve_vlm.train import loop
from eve_vlm.train.recipe import RecipeError, TeacherSpec, load_recipe
from eve_vlm.train.teacher import TeacherCache, TeacherInput, VisionTeacher


def test_the_teacher_input_is_scale_times_the_grid():
    image = Image.new("RGB", (56, 28), "white")
    plain = TeacherInput(14, (0.5,) * 3, (0.5,) * 3, 336, False)
    scaled = TeacherInput(14, (0.5,) * 3, (0.5,) * 3, 336, False, scale=4)
    assert plain(image, (1, 2)).shape == (3, 14, 28)
    assert scaled(image, (1, 2)).shape == (3, 56, 112)
    with pytest.raises(ValueError, match=r"teacher grid 4x4 \(x4\) exceeds its 112 px canvas"):
        TeacherInput(14, (0.5,) * 3, (0.5,) * 3, 112, True, scale=4)(image, (4, 4))


def test_scaled_features_are_the_teachers_patches_averaged_per_token(teacher_path):
    teacher = VisionTeacher.from_spec(TeacherSpec(teacher_path, layer=-1, image_size=56, scale=2))
    torch.manual_seed(0)
    images = [torch.randn(3, 28, 56), torch.randn(3, 56, 28)]  # EVE grids 1x2 and 2x1, at scale 2
    features = teacher(images, [(1, 2), (2, 1)])
    assert features.shape == (4, teacher.width)
    expected = []
    for image in images:
        patches = teacher._features(image.unsqueeze(0))[0]  # (2*rows, 2*cols, Ct)
        for r in range(patches.shape[0] // 2):
            for c in range(patches.shape[1] // 2):
                expected.append(patches[2 * r:2 * r + 2, 2 * c:2 * c + 2].mean(dim=(0, 1)))
    torch.testing.assert_close(features, torch.stack(expected))


def test_scale_is_part_of_the_cache_identity_and_must_be_positive(teacher_path, tmp_path, write_recipe):
    pixels = torch.randn(3, 28, 28)
    one = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-1))
    two = TeacherCache.for_teacher(tmp_path, TeacherSpec(teacher_path, layer=-1, scale=2))
    assert one.key(pixels, (1, 1)) != two.key(pixels, (1, 1))
    with pytest.raises(RecipeError, match="teacher.scale=0 must be an integer >= 1"):
        load_recipe(write_recipe("bad.yaml", teacher__scale=0))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_teacher_runs_in_the_stages_precision_and_gives_fp32_features(write_recipe, precision, dtype):
    run = loop.setup(load_recipe(write_recipe(f"{precision}.yaml", precision=precision)))
    assert {p.dtype for p in run.teacher.parameters()} == {dtype}
    features = run.teacher(torch.randn(2, 3, 28, 28), [(2, 2), (2, 2)])
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
