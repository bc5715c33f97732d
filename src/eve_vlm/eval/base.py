"""What every benchmark adapter shares: the item type, the prompt suffixes and careful file readers.

A benchmark adapter (one module under ``eve_vlm.eval.benchmarks``) turns a benchmark's public release,
unpacked in a local folder, into a list of :class:`EvalItem`. The model side answers each item's
``prompt`` about its ``images``; the adapter then scores the answers with ``eve_vlm.eval.metrics``.

Every adapter module exposes::

    NAME: str                   # registry name, e.g. "vqav2"
    PAPER_COLUMN: str           # column of the EVE paper's table (spec section 7), e.g. "VQAv2"
    HEADLINE: str | None        # key of ``score()``'s result compared with the paper, None if not local
    load(data_dir, limit=None, **options) -> list[EvalItem]
    score(items, predictions) -> dict
    submission(items, predictions) -> object   # only where an official submission format exists

Bad input raises :class:`BenchmarkDataError`, whose message names the file and, when known, the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

ItemId = str | int
"""An item's id: the benchmark's own question id where it is unique, else a documented composite."""

SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
"""LLaVA-1.5 / EVE prompt suffix for short-answer VQA (VQAv2, GQA, VizWiz, TextVQA, POPE, MME)."""

MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
"""LLaVA-1.5 / EVE prompt suffix for multiple choice (ScienceQA, MMBench, SEED-Bench)."""

OPTION_LETTERS = "ABCDEFGHIJ"

_T = TypeVar("_T")


@dataclass(frozen=True)
class EvalItem:
    """One question of a benchmark, ready for the model.

    Attributes:
        id: the question's id as in the data (see each adapter for composite ids); unique per benchmark.
        images: the images the prompt refers to, in order: file paths or PIL images (MMBench decodes
            its base64 images lazily with ``PIL.Image.open``).
        prompt: the full user text: question (plus options/context) and the EVE/LLaVA suffix.
        meta: ground truth and bookkeeping used by the adapter's ``score`` and ``submission``.
    """

    id: ItemId
    images: list[Any]
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


class BenchmarkDataError(ValueError):
    """A benchmark file is missing or malformed; the message names the file and record."""

    def __init__(self, path: str | Path, message: str, record_id: object = None) -> None:
        where = f"{path}" if record_id is None else f"{path} (record {record_id!r})"
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.record_id = record_id


def require_file(path: Path, what: str = "file", record_id: object = None) -> Path:
    """Return ``path`` if it is an existing file, else raise :class:`BenchmarkDataError`."""
    if not path.is_file():
        raise BenchmarkDataError(path, f"missing {what}", record_id)
    return path


def find_file(data_dir: Path, candidates: Sequence[str], what: str) -> Path:
    """Return the first of ``candidates`` (paths relative to ``data_dir``) that exists."""
    for name in candidates:
        path = data_dir / name
        if path.is_file():
            return path
    raise BenchmarkDataError(data_dir, f"missing {what}; looked for {', '.join(candidates)}")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`BenchmarkDataError`."""
    require_file(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise BenchmarkDataError(path, f"malformed JSON at line {err.lineno}: {err.msg}") from err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file (blank lines skipped); each line must be a JSON object."""
    require_file(path)
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchmarkDataError(path, f"malformed JSON on line {line_no}: {err.msg}") from err
            if not isinstance(record, dict):
                raise BenchmarkDataError(path, f"line {line_no} is not a JSON object")
            records.append(record)
    return records


def require_field(record: Mapping[str, Any], key: str, path: Path, record_id: object) -> Any:
    """``record[key]``, or a :class:`BenchmarkDataError` naming the file, record and field."""
    if not isinstance(record, Mapping):
        raise BenchmarkDataError(path, f"expected a JSON object, got {type(record).__name__}", record_id)
    if key not in record:
        raise BenchmarkDataError(path, f"missing field {key!r}", record_id)
    return record[key]


def take(records: Iterable[_T], limit: int | None) -> list[_T]:
    """The first ``limit`` records (all when ``limit`` is None)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    out = []
    for record in records:
        if limit is not None and len(out) >= limit:
            break
        out.append(record)
    return out


def answers_for(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[str]:
    """The prediction of every item, in order; raises ``ValueError`` naming missing ids."""
    missing = [item.id for item in items if item.id not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(items)} items have no prediction, e.g. ids {missing[:5]}")
    return [predictions[item.id] for item in items]
