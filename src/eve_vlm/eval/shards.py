"""Data-parallel evaluation: each process answers its share of a benchmark; the main process merges.

With ``world_size`` processes, the process of rank ``r`` answers the items ``i`` with
``i % world_size == r`` and appends them to ``predictions-rank{r}.jsonl`` in the benchmark's output
folder (shared by all processes: one machine, or a shared file system). When every process is done,
the main process folds those files into ``predictions.jsonl`` and scores it with
:func:`~eve_vlm.eval.runner.run_benchmark`, which finds every item answered.

Resuming is per item: answers already in ``predictions.jsonl`` or in any rank file (of this or an
earlier run, whatever its process count) are not asked again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import ItemId
from eve_vlm.eval.runner import PREDICTIONS_FILE, AnswerFn, answer_items, get_benchmark, read_predictions

logger = logging.getLogger(__name__)


def rank_file(output_dir: str | Path, rank: int) -> Path:
    """Where the process of rank ``rank`` appends its answers."""
    return Path(output_dir) / f"predictions-rank{rank}.jsonl"


def known_predictions(output_dir: str | Path) -> dict[ItemId, str]:
    """Every answer on disk: ``predictions.jsonl``, then the rank files (in rank order)."""
    output_dir = Path(output_dir)
    rank_files = sorted(
        output_dir.glob("predictions-rank*.jsonl"), key=lambda p: int(p.stem.removeprefix("predictions-rank"))
    )
    predictions: dict[ItemId, str] = {}
    for path in [output_dir / PREDICTIONS_FILE, *rank_files]:
        predictions.update(read_predictions(path))
    return predictions


def answer_shard(
    name: str,
    data_dir: str | Path,
    output_dir: str | Path,
    answer_fn: AnswerFn,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
    batch_size: int = 8,
    load_options: Mapping[str, Any] | None = None,
) -> int:
    """Answer this process's unanswered share of benchmark ``name``; returns how many it asked."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = get_benchmark(name).load(Path(data_dir), limit=limit, **dict(load_options or {}))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    known = known_predictions(output_dir)
    todo = [item for i, item in enumerate(items) if i % world_size == rank and item.id not in known]
    logger.info("%s rank %d/%d: %d items to answer", name, rank, world_size, len(todo))
    answer_items(todo, answer_fn, batch_size, rank_file(output_dir, rank))
    return len(todo)


def merge_shards(output_dir: str | Path) -> int:
    """Fold the rank files into ``predictions.jsonl`` (rewritten whole, then the rank files removed);
    returns the number of answers. Run by one process, after every process's :func:`answer_shard`."""
    output_dir = Path(output_dir)
    predictions = known_predictions(output_dir)
    target = output_dir / PREDICTIONS_FILE
    partial = target.with_suffix(".jsonl.tmp")
    with partial.open("w", encoding="utf-8") as f:
        for item_id, answer in predictions.items():
            f.write(json.dumps({"id": item_id, "answer": answer}, ensure_ascii=False) + "\n")
    os.replace(partial, target)  # atomic: a crash leaves the old file or the new one
    for path in output_dir.glob("predictions-rank*.jsonl"):
        path.unlink()
    return len(predictions)
