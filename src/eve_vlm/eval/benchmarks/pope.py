"""POPE (object-hallucination yes/no questions on COCO val2014; random / popular / adversarial).

Expected layout of ``data_dir`` (the public release from github.com/RUCAIBox/POPE, as LLaVA uses it)::

    coco_pope_random.json          JSON lines: {"question_id", "image", "text", "label": "yes"|"no"}
    coco_pope_popular.json
    coco_pope_adversarial.json     (the three files may also sit in a ``coco/`` subfolder)
    val2014/COCO_val2014_000000XXXXXX.jpg     (or pass ``image_dir``)

The question ids restart at 1 in every split, so item ids are ``"<split>_<question_id>"`` (e.g.
``"adversarial_17"``). Answers are parsed with LLaVA's rule (:func:`metrics.pope_parse`) and scored
per split with "yes" as the positive class; ``f1`` / ``accuracy`` at the top level are the means over
the splits present. Which number a paper reports varies (F1, accuracy, or their mean over splits):
our headline for the EVE table is the mean F1 over the three splits. No submission file: labels are
public.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import (
    SHORT_ANSWER_SUFFIX,
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    find_file,
    read_jsonl,
    require_field,
    require_file,
    take,
)
from eve_vlm.eval.metrics import pope_metrics, pope_parse

NAME = "pope"
PAPER_COLUMN = "POPE"
HEADLINE = "f1"

SPLITS = ("random", "popular", "adversarial")


def load(
    data_dir: str | Path,
    limit: int | None = None,
    splits: Sequence[str] = SPLITS,
    image_dir: str | Path | None = None,
) -> list[EvalItem]:
    """Read the POPE ``splits``; ``limit`` applies to each split."""
    data_dir = Path(data_dir)
    images = Path(image_dir) if image_dir is not None else data_dir / "val2014"
    items = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown POPE split {split!r}; expected one of {SPLITS}")
        name = f"coco_pope_{split}.json"
        path = find_file(data_dir, [name, f"coco/{name}"], f"POPE {split} questions")
        for position, record in enumerate(take(read_jsonl(path), limit)):
            qid = require_field(record, "question_id", path, f"line {position + 1}")
            label = str(require_field(record, "label", path, qid)).strip().lower()
            if label not in ("yes", "no"):
                raise BenchmarkDataError(path, f"label must be yes/no, got {record['label']!r}", qid)
            image_name = require_field(record, "image", path, qid)
            items.append(
                EvalItem(
                    id=f"{split}_{qid}",
                    images=[require_file(images / image_name, "image", qid)],
                    prompt=f"{require_field(record, 'text', path, qid)}\n{SHORT_ANSWER_SUFFIX}",
                    meta={"label": label, "split": split, "question_id": qid},
                )
            )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """Per-split POPE metrics (percent) and their means over the splits present."""
    answers = answers_for(items, predictions)
    per_split = {}
    for split in SPLITS:
        pairs = [
            (pope_parse(pred), item.meta["label"])
            for item, pred in zip(items, answers)
            if item.meta["split"] == split
        ]
        if pairs:
            per_split[split] = pope_metrics([p for p, _ in pairs], [g for _, g in pairs])
    if not per_split:
        raise ValueError("pope.score needs at least one item")
    means = {
        key: sum(m[key] for m in per_split.values()) / len(per_split)
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio")
    }
    return {**means, "num_splits": len(per_split), "splits": per_split}
