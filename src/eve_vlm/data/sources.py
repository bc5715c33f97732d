"""Training data sources -> `Sample`s (a conversation + its images), before any processing.

- `llava`: LLaVA json/jsonl (`id`, `image` (one or a list), `conversations` with `from: human|gpt`
  and `<image>`), image paths relative to an image folder;
- `webdataset`: tar shards of `key.jpg|png|...` + `key.txt` caption or `key.json`, streamed;
- `shapes`: small coloured-shape images with captions/questions generated on the fly (tiny recipes);
- more kinds register themselves with `register_source` (the demo's MNIST and Twemoji).
Every problem raises `DataError` naming the file, the record and the field. A problem found while a
source is opened (a malformed JSON line, a damaged shard) becomes a record that raises it when read,
so the run's skip policy counts it like any other bad sample; `index_errors` lists them up front.
"""

from __future__ import annotations

import glob
import json
import logging
import lzma
import random
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .templates import IMAGE_TOKEN, Message

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class DataError(ValueError):
    """A record that cannot be used: names where it is (file, record id) and what is wrong."""

    def __init__(self, where: str, record: str | None = None, problem: str | None = None) -> None:
        self.where, self.record, self.problem = where, record, problem
        # DataError(message) also works, so the error keeps its type when pickled or re-raised by a
        # DataLoader worker (both rebuild an exception from its message)
        super().__init__(where if problem is None else
                         f"{where}" + (f" record {record}" if record is not None else "") + f": {problem}")


ImageRef = str | Path | bytes | Image.Image


@dataclass(frozen=True)
class Sample:
    """One conversation and the images its `{"type": "image"}` parts refer to, in order."""

    id: str
    messages: list[Message]
    images: list[ImageRef] = field(default_factory=list)
    source: str = ""


class Source:
    """A finite, ordered collection of samples; `len` is known, items are read on demand."""

    name: str = ""
    index_errors: Sequence[DataError] = ()
    """Problems found when the source was opened; each is also raised by a record when read."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def text_length(self, index: int) -> int:
        """A cheap length estimate (characters of text) for length-grouped batching."""
        return sum(len(_text(m)) for m in self[index].messages)


def _text(message: Message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


# --- LLaVA json / jsonl ---------------------------------------------------------------------------
def conversation_to_messages(conversations: Any, where: str, record: str, num_images: int) -> list[Message]:
    """LLaVA `conversations` -> transformers messages with image parts where `<image>` stood."""
    if not isinstance(conversations, list) or not conversations:
        raise DataError(where, record, "field 'conversations' must be a non-empty list")
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
    messages: list[Message] = []
    seen_images = 0
    for turn_index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(where, record, f"conversations[{turn_index}] needs 'from' and 'value'")
        role = roles.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise DataError(where, record, f"conversations[{turn_index}].from={turn['from']!r} is not "
                                           "human/gpt")
        value = turn["value"]
        if not isinstance(value, str):
            raise DataError(where, record, f"conversations[{turn_index}].value is not a string")
        if not _is_unicode(value):
            raise DataError(where, record, f"conversations[{turn_index}].value is not valid Unicode text "
                                           "(a lone surrogate, e.g. a broken \\ud800 escape)")
        if role != "user" and IMAGE_TOKEN in value:
            raise DataError(where, record, f"conversations[{turn_index}]: {IMAGE_TOKEN} outside a human turn")
        parts: list[dict[str, Any]] = []
        pieces = value.split(IMAGE_TOKEN)
        for i, piece in enumerate(pieces):
            piece = piece.strip("\n") if len(pieces) > 1 else piece
            if piece:
                parts.append({"type": "text", "text": piece})
            if i < len(pieces) - 1:
                parts.append({"type": "image"})
                seen_images += 1
        messages.append({"role": role, "content": parts if len(pieces) > 1 else value})
    if seen_images != num_images:
        raise DataError(where, record, f"{seen_images} {IMAGE_TOKEN} markers but {num_images} images in "
                                       "field 'image'")
    return messages


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _BadLine:
    """A line of a jsonl file that is no record: raises its DataError when read."""

    error: DataError


class LlavaSource(Source):
    """LLaVA-format json (a list) or jsonl (one record per line).

    A jsonl line that is not UTF-8 or not JSON is a bad record (counted by the skip policy, listed
    in `index_errors`); a json file that cannot be parsed fails as a whole.
    """

    def __init__(self, path: str | Path, image_root: str | Path | None = None, name: str = "") -> None:
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.name = name or self.path.stem
        if not self.path.exists():
            raise DataError(str(self.path), None, "file does not exist")
        if not self.image_root.is_dir():
            raise DataError(str(self.path), None, f"image folder {self.image_root} does not exist")
        self.index_errors = []
        self.records = self._read()

    def _read(self) -> list[Any]:
        data = self.path.read_bytes()
        if self.path.suffix == ".jsonl":
            records: list[Any] = []
            for line_number, line in enumerate(data.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line.decode("utf-8")))
                except UnicodeDecodeError as e:
                    records.append(self._bad_line(line_number, f"not UTF-8 text (byte {e.start}: "
                                                               f"{line[e.start:e.start + 1]!r})"))
                except json.JSONDecodeError as e:
                    records.append(self._bad_line(line_number, f"malformed JSON ({e.msg} at column {e.colno})"))
                except RecursionError:
                    records.append(self._bad_line(line_number, "JSON nested too deeply"))
            return records
        try:
            records = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(str(self.path), None, f"not UTF-8 text (byte {e.start})") from e
        except json.JSONDecodeError as e:
            raise DataError(str(self.path), None, f"malformed JSON at line {e.lineno} ({e.msg})") from e
        except RecursionError as e:
            raise DataError(str(self.path), None, "JSON nested too deeply") from e
        if not isinstance(records, list):
            raise DataError(str(self.path), None, "a LLaVA json file holds a list of records")
        return records

    def _bad_line(self, line_number: int, problem: str) -> _BadLine:
        error = DataError(str(self.path), f"line {line_number}", problem)
        self.index_errors.append(error)
        return _BadLine(error)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        if isinstance(record, _BadLine):
            raise record.error
        if not isinstance(record, dict):
            raise DataError(str(self.path), f"#{index}", "record is not an object")
        record_id = str(record.get("id", f"#{index}"))
        images = record.get("image") or []
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise DataError(str(self.path), record_id, "field 'image' must be a path or a list of paths")
        root = self.image_root.resolve()
        paths = []
        for image in images:
            try:
                resolved = (root / image).resolve()
            except (OSError, ValueError) as e:  # e.g. a NUL byte in the name, a symlink loop
                raise DataError(str(self.path), record_id, f"field 'image': bad path {image!r} ({e})") from e
            if not resolved.is_relative_to(root):
                raise DataError(str(self.path), record_id, f"image path {image!r} escapes the image folder")
            paths.append(resolved)
        messages = conversation_to_messages(record.get("conversations"), str(self.path), record_id, len(paths))
        return Sample(record_id, messages, paths, self.name)

    def text_length(self, index: int) -> int:
        record = self.records[index]
        conversations = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(conversations, list):
            return 0
        return sum(len(t.get("value", "")) for t in conversations if isinstance(t, dict)
                   and isinstance(t.get("value"), str))


# --- WebDataset shards ----------------------------------------------------------------------------
TAR_BLOCK = 512
# what reading a damaged (possibly compressed) tar raises
_SHARD_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class _Member:
    name: str
    offset: int  # of the data, in the (decompressed) tar stream
    size: int


@dataclass(frozen=True)
class _ShardEntry:
    shard: str
    key: str
    image: _Member | None
    text: _Member | None
    problem: str | None = None  # a bad entry raises DataError(shard, key, problem) when read


class WebDatasetSource(Source):
    """Caption pairs from WebDataset tar shards (`key.<image ext>` + `key.txt` or `key.json`).

    Shards are indexed once (member offsets only, no image is decoded), then read on demand, so
    batches can be sharded across processes without every process decoding every image. A key
    without an image or a caption, and the damaged end of a shard (cut short, corrupt header),
    are bad entries: read, they raise a DataError naming the shard and the key.
    """

    def __init__(self, shards: str | list[str], name: str = "", caption_key: str = "caption") -> None:
        patterns = [shards] if isinstance(shards, str) else shards
        self.shards = sorted(p for pattern in patterns for p in (glob.glob(pattern) or [pattern]))
        self.name = name or "webdataset"
        self.caption_key = caption_key
        self.entries: list[_ShardEntry] = []
        self.index_errors: list[DataError] = []
        for shard in self.shards:
            self._index(shard)
        if not any(entry.problem is None for entry in self.entries):
            raise DataError(",".join(self.shards), None, "no image-caption pairs found in the shards"
                            + "".join(f"; {e}" for e in self.index_errors[:3]))

    def _index(self, shard: str) -> None:
        if not Path(shard).exists():
            raise DataError(shard, None, "shard does not exist")
        groups: dict[str, dict[str, _Member]] = {}
        damage = None
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = Path(member.name).name
                    key, _, ext = base.partition(".")
                    groups.setdefault(str(Path(member.name).parent / key), {})["." + ext.lower()] = \
                        _Member(member.name, member.offset_data, member.size)
                damage = _unfinished(tar)
        except _SHARD_ERRORS as e:
            damage = f"the shard ends early ({e})" if "unexpected end of data" in str(e) else f"unreadable ({e})"
        for key, members in groups.items():
            image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
            text = members.get(".txt") or members.get(".json")
            problem = None if image and text else "needs an image and a .txt or .json caption"
            self._add(_ShardEntry(shard, key, image, text, problem))
        if damage is not None:
            # what came after the damage cannot be indexed: one bad entry stands for it
            logger.warning("webdataset shard %s is damaged after %d keys: %s", shard, len(groups), damage)
            self._add(_ShardEntry(shard, f"<after {len(groups)} keys>", None, None,
                                  f"damaged shard, records after this point are lost: {damage}"))

    def _add(self, entry: _ShardEntry) -> None:
        self.entries.append(entry)
        if entry.problem is not None:
            self.index_errors.append(DataError(entry.shard, entry.key, entry.problem))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        if entry.problem is not None:
            raise DataError(entry.shard, entry.key, entry.problem)
        shard, key = entry.shard, entry.key
        try:
            with tarfile.open(shard) as tar:
                image, text = (_read_member(tar, m) for m in (entry.image, entry.text))  # type: ignore[arg-type]
        except _SHARD_ERRORS as e:
            raise DataError(shard, key, f"cannot read from the shard ({e})") from e
        if image is None or text is None:
            raise DataError(shard, key, "the shard ends early, inside this record")
        try:
            caption = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(shard, key, "caption is not UTF-8 text") from e
        if entry.text.name.endswith(".json"):  # type: ignore[union-attr]
            try:
                caption = json.loads(caption)[self.caption_key]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError) as e:
                raise DataError(shard, key, f"json has no string field {self.caption_key!r}") from e
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(shard, key, "empty caption")
        if not _is_unicode(caption):
            raise DataError(shard, key, "caption is not valid Unicode text (a lone surrogate)")
        if IMAGE_TOKEN in caption:
            raise DataError(shard, key, f"caption holds the reserved marker {IMAGE_TOKEN}")
        return caption_sample(key, image, caption, self.name)

    def text_length(self, index: int) -> int:
        return 64  # captions are short and similar; not worth opening the shard


def _unfinished(tar: tarfile.TarFile) -> str | None:
    """Why a tar whose member iteration stopped is damaged, or None if it ended properly.

    `tarfile` stops silently at a cut or corrupt header past the first member; a complete tar has
    zero blocks (the end-of-archive marker) where the iteration stopped.
    """
    tar.fileobj.seek(tar.offset)  # type: ignore[union-attr]
    tail = tar.fileobj.read(TAR_BLOCK)  # type: ignore[union-attr]
    if len(tail) < TAR_BLOCK:
        return f"the shard ends early at byte {tar.offset} (no end-of-archive marker)"
    if tail.strip(b"\0"):
        return f"unreadable member header at byte {tar.offset}"
    return None


def _read_member(tar: tarfile.TarFile, member: _Member) -> bytes | None:
    """A member's bytes, or None when the shard ends before them."""
    tar.fileobj.seek(member.offset)  # type: ignore[union-attr]
    data = tar.fileobj.read(member.size)  # type: ignore[union-attr]
    return data if len(data) == member.size else None


def caption_sample(sample_id: str, image: ImageRef, caption: str, source: str = "") -> Sample:
    """An image-caption pair as a conversation (rendered by the `plain` template in pre-training)."""
    return Sample(sample_id, [{"role": "user", "content": [{"type": "image"}]},
                              {"role": "assistant", "content": caption}], [image], source)


def qa_sample(sample_id: str, image: ImageRef, question: str, answer: str, source: str = "") -> Sample:
    return Sample(sample_id, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                              {"role": "assistant", "content": answer}], [image], source)


# --- coloured shapes, generated on the fly -------------------------------------------------------
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")


class ShapesSource(Source):
    """Deterministic synthetic images of one coloured shape, as captions or questions and answers."""

    def __init__(self, size: int = 3000, task: str = "caption", seed: int = 0, image_size: int = 64,
                 name: str = "") -> None:
        if task not in ("caption", "qa"):
            raise ValueError(f"shapes task={task!r}: choose 'caption' or 'qa'")
        self.size, self.task, self.seed, self.image_size = size, task, seed, image_size
        self.name = name or f"shapes-{task}"

    def __len__(self) -> int:
        return self.size

    def describe(self, index: int) -> tuple[str, str, Image.Image]:
        rng = random.Random(self.seed * 1_000_003 + index)
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        s = self.image_size
        width, height = rng.choice([(s, s), (s, s // 2), (s // 2, s)])
        image = Image.new("RGB", (width, height), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        r = min(width, height) * rng.uniform(0.25, 0.4)
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
        return colour, shape, image

    def __getitem__(self, index: int) -> Sample:
        colour, shape, image = self.describe(index)
        sample_id = f"{self.name}-{index}"
        if self.task == "caption":
            return caption_sample(sample_id, image, f"a {colour} {shape}", self.name)
        return qa_sample(sample_id, image, "What colour is the shape?", colour, self.name)

    def text_length(self, index: int) -> int:
        return 24


# --- registry ---------------------------------------------------------------------------------------
SourceBuilder = Callable[..., Source]
SOURCE_KINDS: dict[str, SourceBuilder] = {
    "llava": LlavaSource,
    "webdataset": WebDatasetSource,
    "shapes": ShapesSource,
}


def register_source(kind: str, builder: SourceBuilder) -> None:
    """Make `kind` usable in recipe files (`data.sources[].kind`)."""
    SOURCE_KINDS[kind] = builder


def build_source(kind: str, options: dict[str, Any]) -> Source:
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown data source kind {kind!r}; known: {sorted(SOURCE_KINDS)}")
    try:
        return SOURCE_KINDS[kind](**options)
    except TypeError as e:
        raise ValueError(f"data source {kind!r}: bad options {sorted(options)} ({e})") from e


def iter_samples(source: Source) -> Iterator[Sample]:
    for index in range(len(source)):
        yield source[index]
