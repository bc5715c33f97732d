"""Image loading and the EVE resize rule (spec section 5)."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from eve_vlm.data.image import EveImageProcessor, ImageError, load_image, target_size


def reference_size(height, width, image_size):
    """The reference's rule: size at teacher scale (336), then scaled by image_size/336."""
    long_edge, short_edge = max(height, width), min(height, width)
    short_t = math.ceil(336 * short_edge / long_edge / 14) * 14
    scale = image_size // 336
    return (336 * scale, short_t * scale) if height >= width else (short_t * scale, 336 * scale)


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (333, 1000), (1000, 333), (37, 1999), (100, 100),
                                  (1, 10000), (719, 720), (500, 281)])
@pytest.mark.parametrize("image_size", [672, 1344])
def test_target_size_matches_the_reference_rule(size, image_size):
    multiple = 56 if image_size == 1344 else 28
    got = target_size(*size, image_size, multiple)
    assert got == reference_size(*size, image_size)
    assert max(got) == image_size and min(got) % multiple == 0


def test_short_edge_rounds_up_on_odd_aspect_ratios():
    assert target_size(480, 640, 672, 28) == (504, 672)  # 504 = 18*28 >= 672*0.75
    assert target_size(281, 500, 672, 28) == (392, 672)  # 672*281/500 = 377.7 -> 392
    assert target_size(281, 500, 1344, 56) == (784, 1344)  # 755.3 -> 784 (multiple of 56)
    assert target_size(1, 10000, 672, 28) == (28, 672)


def test_processor_output_shape_and_normalisation():
    proc = EveImageProcessor(image_size=672)
    pixels = proc(Image.new("RGB", (640, 480), (255, 255, 255)))
    assert pixels.shape == (3, 504, 672)
    expected = (1 - np.array(proc.image_mean)) / np.array(proc.image_std)
    np.testing.assert_allclose(pixels[:, 0, 0].numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "LA", "I;16", "F"])
def test_modes_convert_to_rgb(mode):
    image = Image.new("RGB", (30, 20), (200, 100, 50)).convert(mode)
    assert load_image(image).mode == "RGB"


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (20, 40)


def test_arrays_and_paths(tmp_path):
    assert load_image(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert load_image(np.ones((10, 12, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((5, 5, 3), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    path = tmp_path / "a.png"
    Image.new("RGB", (9, 7)).save(path)
    assert load_image(path).size == (9, 7)


def test_bad_images_give_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg: not a readable image"):
        load_image(tmp_path / "text.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(Image.new("L", (100, 100)), max_pixels=5000)
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((4, 4), np.nan, np.float32))
