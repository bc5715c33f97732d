"""A corpus of bad (and unusual but valid) training data, generated on disk, with the outcome each must have.

Every kind is one LLaVA record (jsonl) or one WebDataset key/shard. `KINDS` names the kind, where it
lives, and its outcome: "ok" (must train), "truncated" (trains, cut to max_length, counted) or the
error class and a pattern its message must match (skipped and counted, or fatal under a strict policy).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eve_vlm.data.image import ImageError
from eve_vlm.data.sources import DataError
from eve_vlm.data.templates import ConversationError

LONG = " ".join(["the cat sat on the mat with a red ball"] * 60)  # ~2,400 characters: over max_length


@dataclass(frozen=True)
class Kind:
    name: str
    source: str  # "llava" or "webdataset"
    outcome: str  # "ok", "truncated" or "error"
    error: type[Exception] | None = None
    pattern: str = ""  # what the error message must say (the file/record/field and the problem)


KINDS = [
    # images (each in an otherwise good LLaVA record)
    Kind("truncated JPEG", "llava", "error", ImageError, r"cut\.jpg: (cannot decode|not a readable)"),
    Kind("truncated PNG", "llava", "error", ImageError, r"cut\.png: (cannot decode|not a readable)"),
    Kind("zero-byte file", "llava", "error", ImageError, r"empty\.jpg: not a readable image"),
    Kind("text file named .jpg", "llava", "error", ImageError, r"text\.jpg: not a readable image"),
    Kind("unsupported format (SVG)", "llava", "error", ImageError, r"drawing\.svg: not a readable image"),
    Kind("decompression bomb over the pixel limit", "llava", "error", ImageError,
         r"bomb\.png: 10000x8000 = 80000000 pixels exceeds the limit"),
    Kind("decompression bomb over Pillow's limit", "llava", "error", ImageError,
         r"megabomb\.png: refused before decoding"),
    Kind("missing image file", "llava", "error", ImageError, r"nowhere\.png: no such image file"),
    Kind("image path escaping the image root", "llava", "error", DataError,
         r"record escape: image path '\.\./outside\.png' escapes the image folder"),
    Kind("absolute image path outside the root", "llava", "error", DataError,
         r"record absolute: image path '/etc/passwd' escapes the image folder"),
    Kind("CMYK JPEG", "llava", "ok"),
    Kind("16-bit PNG", "llava", "ok"),
    Kind("palette PNG with transparency", "llava", "ok"),
    Kind("1x1 image", "llava", "ok"),
    Kind("1x10000 image", "llava", "ok"),
    Kind("10000x1 image", "llava", "ok"),
    Kind("EXIF-rotated JPEG", "llava", "ok"),
    # records
    Kind("malformed JSON line", "llava", "error", DataError, r"record line \d+: malformed JSON"),
    Kind("non-UTF-8 line", "llava", "error", DataError, r"record line \d+: not UTF-8 text"),
    Kind("lone surrogate in text", "llava", "error", DataError,
         r"record surrogate: conversations\[0\]\.value is not valid Unicode"),
    Kind("record is not an object", "llava", "error", DataError, r"record #\d+: record is not an object"),
    Kind("record without conversations", "llava", "error", DataError,
         r"record noconv: field 'conversations' must be a non-empty list"),
    Kind("unknown role", "llava", "error", DataError, r"record robot: conversations\[0\]\.from='robot'"),
    Kind("wrong roles order", "llava", "error", ConversationError, r"message 0 has role 'assistant', expected 'user'"),
    Kind("<image> count not matching the images", "llava", "error", DataError,
         r"record twomarkers: 2 <image> markers but 1 images"),
    Kind("image given but no <image>", "llava", "error", DataError, r"record nomarker: 0 <image> markers but 1 images"),
    Kind("<image> in an answer", "llava", "error", DataError, r"record answerimage: conversations\[1\]: <image> outside"),
    Kind("empty answer", "llava", "error", ConversationError, r"empty assistant answer"),
    Kind("over-long sample, truncated", "llava", "truncated"),
    Kind("over-long sample, skipped (truncation would cut every answer)", "llava", "error", DataError,
         r"record longquestion: over-long sample: \d+ tokens > max_length"),
    # WebDataset shards
    Kind("corrupt tar shard", "webdataset", "error", DataError, r"corrupt\.tar record <after 0 keys>: damaged shard"),
    Kind("shard that ends early", "webdataset", "error", DataError, r"cut\.tar record (pair2|<after 3 keys>): .*ends early"),
    Kind("shard key without a caption", "webdataset", "error", DataError,
         r"good\.tar record nocaption: needs an image and a \.txt"),
    Kind("non-UTF-8 caption", "webdataset", "error", DataError, r"good\.tar record latin1: caption is not UTF-8"),
    Kind("empty caption", "webdataset", "error", DataError, r"good\.tar record blank: empty caption"),
    Kind("json caption without the field", "webdataset", "error", DataError,
         r"good\.tar record nofield: json has no string field 'caption'"),
]
BY_NAME = {kind.name: kind for kind in KINDS}
# one kind more is tested in test_teacher_cache.py: NaN in cached teacher features (discarded, recomputed)
TEACHER_KINDS = ["NaN in cached teacher features"]


# --- images ----------------------------------------------------------------------------------------
def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels: a decompression bomb is refused from its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    return encoded(picture(40, 20), "JPEG", exif=exif)


def palette_with_transparency() -> bytes:
    image = picture(30, 30).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encoded(image, "PNG", transparency=0)


IMAGES = {  # file name -> bytes
    "good.png": encoded(picture(), "PNG"),
    "cut.jpg": encoded(picture(64, 48), "JPEG")[:300],
    "cut.png": encoded(picture(64, 48), "PNG")[:200],
    "empty.jpg": b"",
    "text.jpg": b"this is a text file, not a JPEG\n",
    "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>',
    "bomb.png": png_header_only(10_000, 8_000),
    "megabomb.png": png_header_only(30_000, 30_000),
    "cmyk.jpg": encoded(picture().convert("CMYK"), "JPEG"),
    "deep.png": encoded(Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30), "PNG"),
    "palette.png": palette_with_transparency(),
    "dot.png": encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
    "tall.png": encoded(Image.new("L", (1, 10_000), 90), "PNG"),
    "wide.png": encoded(Image.new("L", (10_000, 1), 160), "PNG"),
    "rotated.jpg": exif_rotated(),
}


# --- LLaVA records -------------------------------------------------------------------------------------
def qa(record_id: str, image: str | list[str] | None, question: str = "<image>\nWhat colour is the shape?",
       answer: str = "red", **extra) -> dict:
    record = {"id": record_id, "conversations": [{"from": "human", "value": question},
                                                 {"from": "gpt", "value": answer}], **extra}
    if image is not None:
        record["image"] = image
    return record


def llava_lines() -> list[tuple[str | None, bytes]]:
    """(kind name or None for a good filler record, the jsonl line)."""
    def line(record) -> bytes:
        return json.dumps(record).encode()
    rows: list[tuple[str | None, bytes]] = [
        ("truncated JPEG", line(qa("cutjpg", "cut.jpg"))),
        ("truncated PNG", line(qa("cutpng", "cut.png"))),
        ("zero-byte file", line(qa("empty", "empty.jpg"))),
        ("text file named .jpg", line(qa("text", "text.jpg"))),
        ("unsupported format (SVG)", line(qa("svg", "drawing.svg"))),
        ("decompression bomb over the pixel limit", line(qa("bomb", "bomb.png"))),
        ("decompression bomb over Pillow's limit", line(qa("megabomb", "megabomb.png"))),
        ("missing image file", line(qa("missing", "nowhere.png"))),
        ("image path escaping the image root", line(qa("escape", "../outside.png"))),
        ("absolute image path outside the root", line(qa("absolute", "/etc/passwd"))),
        ("CMYK JPEG", line(qa("cmyk", "cmyk.jpg"))),
        ("16-bit PNG", line(qa("deep", "deep.png"))),
        ("palette PNG with transparency", line(qa("palette", "palette.png"))),
        ("1x1 image", line(qa("dot", "dot.png"))),
        ("1x10000 image", line(qa("tall", "tall.png"))),
        ("10000x1 image", line(qa("wide", "wide.png"))),
        ("EXIF-rotated JPEG", line(qa("rotated", "rotated.jpg"))),
        ("malformed JSON line", b'{"id": "broken", "conversations": [{"from": "human", '),
        ("non-UTF-8 line", '{"id": "latin1", "image": "good.png", "conversations": "caf\xe9"}'.encode("latin-1")),
        ("lone surrogate in text", b'{"id": "surrogate", "image": "good.png", "conversations": [{"from": "human", '
                                   b'"value": "<image>\\nbad \\ud800 text"}, {"from": "gpt", "value": "red"}]}'),
        ("record is not an object", b'["a", "list", "not", "a", "record"]'),
        ("record without conversations", line({"id": "noconv", "image": "good.png"})),
        ("unknown role", line({"id": "robot", "image": "good.png", "conversations": [
            {"from": "robot", "value": "<image>\nhi"}, {"from": "gpt", "value": "red"}]})),
        ("wrong roles order", line({"id": "order", "image": "good.png", "conversations": [
            {"from": "gpt", "value": "red"}, {"from": "human", "value": "<image>\nWhat colour?"}]})),
        ("<image> count not matching the images", line(qa("twomarkers", "good.png", "<image>\n<image>\nSame?"))),
        ("image given but no <image>", line(qa("nomarker", "good.png", "What colour is the shape?"))),
        ("<image> in an answer", line(qa("answerimage", "good.png", answer="red <image>"))),
        ("empty answer", line(qa("emptyanswer", "good.png", answer="   "))),
        ("over-long sample, truncated", line(qa("longanswer", "good.png", answer=LONG))),
        ("over-long sample, skipped (truncation would cut every answer)",
         line(qa("longquestion", "good.png", "<image>\n" + LONG))),
    ]
    return rows


# --- WebDataset shards -------------------------------------------------------------------------------
def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def shards() -> dict[str, tuple[list[str | None], bytes]]:
    """shard name -> (kind of each entry in index order, or None for a good pair; the bytes)."""
    image = IMAGES["good.png"]
    good = tar_bytes([("red.png", image), ("red.txt", b"a red square"),
                      ("blue.png", image), ("blue.json", json.dumps({"caption": "a blue circle"}).encode()),
                      ("nocaption.png", image),
                      ("latin1.png", image), ("latin1.txt", "caf\xe9".encode("latin-1")),
                      ("blank.png", image), ("blank.txt", b"  \n"),
                      ("nofield.png", image), ("nofield.json", b'{"text": "no caption field"}')])
    full = tar_bytes([(f"pair{i}.{ext}", data) for i in range(3)
                      for ext, data in (("png", image), ("txt", b"a green triangle"))])
    with tarfile.open(fileobj=io.BytesIO(full)) as tar:
        last_caption = tar.getmembers()[-1]
    cut = full[:last_caption.offset_data + 5]  # inside the last record's caption
    return {
        "good.tar": ([None, None, "shard key without a caption", "non-UTF-8 caption", "empty caption",
                      "json caption without the field"], good),
        "corrupt.tar": (["corrupt tar shard"], bytes(range(256)) * 12),
        "cut.tar": ([None, None, "shard that ends early", "shard that ends early"], cut),
    }


# --- the corpus on disk --------------------------------------------------------------------------------
@dataclass
class Corpus:
    root: Path
    jsonl: Path
    image_root: Path
    shard_glob: str
    llava_kinds: list[str | None]  # per jsonl record, in order
    shard_kinds: list[str | None]  # per WebDataset entry, in index order (shards sorted by name)


def build(root: Path, good_fillers: int = 7) -> Corpus:
    image_root = root / "images"
    image_root.mkdir(parents=True)
    for name, data in IMAGES.items():
        (image_root / name).write_bytes(data)
    (root / "outside.png").write_bytes(IMAGES["good.png"])  # exists, but outside the image root
    rows = llava_lines() + [(None, json.dumps(qa(f"good{i}", "good.png")).encode()) for i in range(good_fillers)]
    jsonl = root / "data.jsonl"
    jsonl.write_bytes(b"\n".join(line for _, line in rows) + b"\n")
    shard_dir = root / "shards"
    shard_dir.mkdir()
    for name, (_, data) in shards().items():
        (shard_dir / name).write_bytes(data)
    shard_kinds = [kind for name in sorted(shards()) for kind in shards()[name][0]]
    return Corpus(root, jsonl, image_root, str(shard_dir / "*.tar"), [kind for kind, _ in rows], shard_kinds)
