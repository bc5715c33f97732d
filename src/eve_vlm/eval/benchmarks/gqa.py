"""GQA testdev-balanced (compositional questions on Visual Genome images; exact match).

Expected layout of ``data_dir`` (the public release from cs.stanford.edu/people/dorarad/gqa)::

    testdev_balanced_questions.json     {"<questionId>": {"imageId", "question", "answer", "fullAnswer", ...}}
    images/<imageId>.jpg

Item ids are the question ids (strings, as in the file). ``score`` gives exact-match accuracy after
lowercasing and removing punctuation (lmms-eval); ``submission`` is the prediction file of the
official GQA ``eval.py`` as LLaVA/EVE write it: ``[{"questionId", "prediction"}]`` with the
prediction lowercased and its trailing periods removed.
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
    read_json,
    require_field,
    require_file,
    take,
)
from eve_vlm.eval.metrics import exact_match

NAME = "gqa"
PAPER_COLUMN = "GQA"
HEADLINE = "accuracy"


def load(
    data_dir: str | Path, limit: int | None = None, questions_file: str = "testdev_balanced_questions.json"
) -> list[EvalItem]:
    """Read the GQA questions of ``questions_file`` (testdev-balanced by default)."""
    data_dir = Path(data_dir)
    path = data_dir / questions_file
    questions = read_json(path)
    if not isinstance(questions, dict):
        raise BenchmarkDataError(path, "expected a JSON object mapping question id -> question")
    items = []
    for qid, record in take(questions.items(), limit):
        image_id = require_field(record, "imageId", path, qid)
        image = data_dir / "images" / f"{image_id}.jpg"
        items.append(
            EvalItem(
                id=qid,
                images=[require_file(image, "image", qid)],
                prompt=f"{require_field(record, 'question', path, qid)}\n{SHORT_ANSWER_SUFFIX}",
                meta={"answer": record.get("answer"), "image_id": image_id},
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """Exact-match accuracy (percent) over the items that have an answer."""
    answers = answers_for(items, predictions)
    hits = [
        exact_match(pred, item.meta["answer"])
        for item, pred in zip(items, answers)
        if item.meta["answer"] is not None
    ]
    if not hits:
        return {"accuracy": None, "num_scored": 0, "note": "no answers in the questions file"}
    return {"accuracy": 100.0 * sum(hits) / len(hits), "num_scored": len(hits)}


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[dict[str, Any]]:
    """Predictions for the official GQA ``eval.py``: ``[{"questionId", "prediction"}]``."""
    return [
        {"questionId": item.id, "prediction": pred.rstrip(".").lower()}
        for item, pred in zip(items, answers_for(items, predictions))
    ]
