"""Fuzzing the readers and the processor: whatever the input, only DataError, ImageError or ConversationError.

(All three are ValueErrors that say what is wrong; anything else, a TypeError from the tokenizer
or a DecompressionBombError from Pillow, would crash a training run or answer 500 from the server.)
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from corpus import IMAGES, encoded, picture, qa, tar_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from eve_vlm.data.image import EveImageProcessor, ImageError, load_image
from eve_vlm.data.pipeline import encode_sample
from eve_vlm.data.processor import EveProcessor
from eve_vlm.data.sources import DataError, LlavaSource, WebDatasetSource
from eve_vlm.data.templates import ConversationError
from eve_vlm.testing import tiny_config, tiny_tokenizer
from eve_vlm.train.teacher import TeacherInput

pytestmark = pytest.mark.timeout(300)
CLEAR = (DataError, ImageError, ConversationError)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROCESSOR = EveProcessor.from_config(tiny_tokenizer(), tiny_config(image_size=56, template="vicuna_v1"))
TEACHER_INPUT = TeacherInput(14, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 56, False)
SEEDS = [encoded(picture(24, 16), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")] + [
    IMAGES["deep.png"], IMAGES["palette.png"], IMAGES["cmyk.jpg"], IMAGES["rotated.jpg"], IMAGES["megabomb.png"]]

# text built from arbitrary characters and the pieces that break things: the image marker, template
# words, special tokens, lone surrogates (JSON's "\ud800" escape gives one), NUL, a BOM
PIECES = st.sampled_from(["<image>", "<image>\n", "\ud800", "\udfff", "\x00", "USER:", " ASSISTANT:", "</s>", "<s>",
                          "<|im_start|>", "\n", " ", "é", "\U0001f600", "\ufeff"])
TEXT = st.lists(PIECES | st.text(max_size=8), max_size=8).map("".join)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)


def image_or_clear_error(data) -> None:
    try:
        image = load_image(data)
    except ImageError:
        return
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_as_an_image(data):
    image_or_clear_error(data)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                                    max_size=8), st.floats(0.05, 1.0))
def test_damaged_images(seed, flips, keep):
    data = bytearray(SEEDS[seed])
    for where, value in flips:
        data[int(where * len(data))] = value
    data = bytes(data[: max(1, int(keep * len(data)))])
    image_or_clear_error(data)
    try:
        pixels = EveImageProcessor(56, 28)(data)
    except ImageError:
        return
    assert pixels.shape[0] == 3 and max(pixels.shape[1:]) == 56


def record_strategy():
    """Mostly LLaVA-shaped records with odd values; sometimes any JSON at all."""
    image = st.sampled_from(["good.png", "cut.png", "missing.png", "../x.png", "/etc/passwd", "a\x00b.png", "", "."]) \
        | TEXT
    role = st.sampled_from(["human", "gpt"]) | st.sampled_from(["system", "robot"]) | JSON

    @st.composite
    def llava(draw) -> dict:
        values = draw(st.lists(TEXT | JSON, min_size=1, max_size=4))
        conversations = [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]
        if draw(st.booleans()):
            conversations[0]["value"] = f"<image>\n{conversations[0]['value']}"
        if draw(st.booleans()):
            conversations[draw(st.integers(0, len(conversations) - 1))]["from"] = draw(role)
        record = {"id": draw(TEXT | st.integers()), "conversations": conversations}
        if draw(st.booleans()):
            record["image"] = draw(image | st.lists(image, max_size=2) | JSON)
        return record

    return llava() | JSON


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-images")
    (root / "good.png").write_bytes(IMAGES["good.png"])
    (root / "cut.png").write_bytes(IMAGES["good.png"][:100])
    return root


def read_all(source) -> int:
    """Read and encode every item; only clear errors may come out. Returns how many encoded."""
    good = 0
    for i in range(len(source)):
        source.text_length(i)
        try:
            encode_sample(source[i], PROCESSOR, 96, TEACHER_INPUT)
            good += 1
        except CLEAR:
            pass
    return good


@FUZZ
@given(st.lists(record_strategy(), max_size=6), st.lists(st.binary(max_size=40), max_size=2))
def test_arbitrary_llava_records(image_root, records, raw_lines):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.jsonl"
        lines = [json.dumps(r).encode() for r in records] + [line.replace(b"\n", b" ") for line in raw_lines]
        path.write_bytes(b"\n".join(lines + [json.dumps(qa("anchor", "good.png")).encode()]))
        source = LlavaSource(path, image_root)
        assert read_all(source) >= 1  # the good record among them still trains


@FUZZ
@given(st.lists(TEXT, min_size=1, max_size=6), st.sampled_from(["plain", "vicuna_v1", "chat"]), st.integers(-1, 1))
def test_arbitrary_strings_as_a_conversation(texts, template, extra_images):
    processor = EveProcessor(PROCESSOR.tokenizer, PROCESSOR.image_processor, template)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(texts)]
    images = max(0, sum(text.count("<image>") for text in texts[::2]) + extra_images)  # mostly as many as markers
    try:
        out = processor.encode_conversation(messages, [Image.new("RGB", (20, 30))] * images)
    except ConversationError:
        return
    assert len(out["input_ids"]) == len(out["labels"])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "dir/c", "", ".hidden"]),
                          st.sampled_from(["png", "jpg", "txt", "json", "bin", "PNG", "tar.gz"]),
                          st.sampled_from([b"", b"a caption", b'{"caption": "x"}', b"\xff\xfe", IMAGES["good.png"],
                                           IMAGES["cut.jpg"]]) | st.binary(max_size=64)), max_size=8),
       st.floats(0.0, 1.0), st.booleans())
def test_arbitrary_webdataset_shards(members, keep, garbage):
    data = tar_bytes([(f"{key}.{ext}", payload) for key, ext, payload in members])
    data = data[: int(keep * len(data))]
    if garbage:
        data = bytes(b ^ 0x5A for b in data)
    with tempfile.TemporaryDirectory() as directory:
        shard = Path(directory) / "shard.tar"
        shard.write_bytes(data)
        try:
            source = WebDatasetSource(str(shard))
        except DataError:  # no readable pair at all
            return
        read_all(source)


def test_a_compressed_shard_reads_like_a_plain_one(tmp_path):
    plain = tar_bytes([("a.png", IMAGES["good.png"]), ("a.txt", b"a caption")])
    with tarfile.open(tmp_path / "shard.tar.gz", "w:gz") as tar, tarfile.open(fileobj=io.BytesIO(plain)) as source:
        for member in source:
            tar.addfile(member, source.extractfile(member))
    source = WebDatasetSource(str(tmp_path / "shard.tar.gz"))
    assert source[0].messages[1]["content"] == "a caption"
    (tmp_path / "cut.tar.gz").write_bytes((tmp_path / "shard.tar.gz").read_bytes()[:-30])
    with pytest.raises(DataError):
        WebDatasetSource(str(tmp_path / "cut.tar.gz"))[0]
