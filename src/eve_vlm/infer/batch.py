"""`eve-vlm generate`: answer a JSONL file of prompts in batches; resumable, never stopped by one bad line.

Each input line is `{"id": ..., "image": PATH | [PATH, ...], "prompt": TEXT}` or `{"id": ...,
"image": ..., "messages": [...]}` (transformers' chat messages with `{"type": "image"}` parts).
Image paths are relative to `image_root` (default: the input file's folder). Each answer is one
output line `{"id", "answer", "finish_reason", "prompt_tokens", "completion_tokens"}`; ids already
in the output are skipped, so rerunning the same command continues an interrupted job.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from .engine import Generator, PreparedRequest
from .params import GenerationRequest, SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What one run did."""

    answered: int = 0
    skipped: int = 0
    """Lines whose id was already in the output."""
    failed: int = 0
    """Bad lines (reported with their line number) and requests whose generation failed."""


@dataclass(frozen=True)
class _Item:
    line_number: int
    id: Any
    prepared: PreparedRequest


def run_batch(generator: Generator, input_path: Path, output_path: Path, params: SamplingParams,
              batch_size: int = 8, image_root: Path | None = None, progress: bool = True) -> BatchSummary:
    """Answer every line of `input_path` not yet in `output_path`, appending and flushing each batch."""
    if batch_size < 1:
        raise ValueError(f"--batch-size={batch_size} must be >= 1")
    image_root = image_root or input_path.parent
    done = read_done_ids(output_path)
    summary = BatchSummary()
    with input_path.open(encoding="utf-8") as f:
        total = sum(1 for _ in f)
    batch: list[_Item] = []
    with (input_path.open(encoding="utf-8") as lines, output_path.open("a", encoding="utf-8") as out,
          tqdm(total=total, unit="line", disable=not progress) as bar):
        for number, line in enumerate(lines, start=1):
            bar.update()
            item = _parse(generator, number, line, params, image_root, done, summary)
            if item is None:
                continue
            batch.append(item)
            if len(batch) == batch_size:
                _answer(generator, batch, out, summary)
                batch = []
        if batch:
            _answer(generator, batch, out, summary)
    return summary


def read_done_ids(output_path: Path) -> set[str]:
    """Ids answered by an earlier run; a cut-off last line (a killed run) is removed first."""
    if not output_path.exists():
        return set()
    data = output_path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        logger.warning("%s: removing an incomplete last line left by an interrupted run", output_path)
        with output_path.open("r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for line in data.decode("utf-8").splitlines():
        try:
            done.add(_id_key(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: ignoring an output line that is not an answer: %.80s", output_path, line)
    return done


def _id_key(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError(f"'id' must be a string or an integer, got {value!r}")
    return str(value)


def _parse(generator: Generator, number: int, line: str, params: SamplingParams, image_root: Path,
           done: set[str], summary: BatchSummary) -> _Item | None:
    """The line as a prepared request, or None (skipped, blank, or bad: reported and counted)."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("a line must be a JSON object")
        key = _id_key(record.get("id"))
        if key in done:
            summary.skipped += 1
            return None
        prepared = generator.prepare(_request(record, params, image_root))
    except (ValueError, TypeError, OSError) as e:
        summary.failed += 1
        logger.error("line %d: %s", number, e)
        return None
    done.add(key)  # a repeated id later in the file counts as already answered
    return _Item(number, record["id"], prepared)


def _request(record: dict[str, Any], params: SamplingParams, image_root: Path) -> GenerationRequest:
    images = record.get("image") or []
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError("'image' must be a path or a list of paths")
    paths = [image_root / p for p in images]
    if "messages" in record:
        if not isinstance(record["messages"], list):
            raise ValueError("'messages' must be a list of chat messages")
        return GenerationRequest(record["messages"], paths, params)
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a line needs a non-empty 'prompt' or a 'messages' list")
    content = [{"type": "image"} for _ in paths] + [{"type": "text", "text": prompt}]
    return GenerationRequest([{"role": "user", "content": content}], paths, params)


def _answer(generator: Generator, batch: list[_Item], out: IO[str], summary: BatchSummary) -> None:
    """Run one batch and append its answers; if the batch fails, each request is retried alone."""
    for item, result in _results(generator, batch):
        if result is None:
            summary.failed += 1
            continue
        record = {"id": item.id, "answer": result.text, "finish_reason": result.finish_reason,
                  "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        summary.answered += 1
    out.flush()
    os.fsync(out.fileno())


def _results(generator: Generator, batch: list[_Item]) -> Iterator[tuple[_Item, Any]]:
    try:
        yield from zip(batch, generator.run([item.prepared for item in batch]))
        return
    except (RuntimeError, ValueError) as e:
        if len(batch) == 1:
            logger.error("line %d: generation failed: %s", batch[0].line_number, e)
            yield batch[0], None
            return
        logger.warning("a batch of %d failed (%s); retrying its requests one by one", len(batch), e)
    for item in batch:
        yield from _results(generator, [item])
