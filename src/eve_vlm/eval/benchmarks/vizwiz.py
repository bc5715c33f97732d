"""VizWiz-VQA (questions from blind users; 10 answers per question; VQA accuracy).

Expected layout of ``data_dir`` (the public release from vizwiz.org)::

    Annotations/<split>.json      [{"image", "question", "answers": [{"answer", "answer_confidence"}], ...}]
    <split>/VizWiz_<split>_00000000.jpg

``split`` is ``val`` by default (``test`` has no answers; the EVE paper reports test-dev, scored by
the EvalAI server). ``<split>.json`` directly in ``data_dir`` is accepted too. Item ids are the image
file names (one question per image). The prompt carries LLaVA-1.5's extra instruction to answer
"Unanswerable" when the image does not tell. ``submission`` is the EvalAI upload ``[{"image",
"answer"}]`` with answers normalised by the EvalAI processor (as LLaVA/EVE's
``convert_vizwiz_for_submission.py``).
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
    read_json,
    require_field,
    require_file,
    take,
)
from eve_vlm.eval.metrics import normalize_vqa_answer, vqa_accuracy

NAME = "vizwiz"
PAPER_COLUMN = "VizWiz"
HEADLINE = "accuracy"

UNANSWERABLE_HINT = "When the provided information is insufficient, respond with 'Unanswerable'."


def load(data_dir: str | Path, limit: int | None = None, split: str = "val") -> list[EvalItem]:
    """Read the VizWiz ``split`` annotations (``train``, ``val`` or ``test``)."""
    data_dir = Path(data_dir)
    path = find_file(data_dir, [f"Annotations/{split}.json", f"{split}.json"], f"VizWiz {split} annotations")
    records = read_json(path)
    if not isinstance(records, list):
        raise BenchmarkDataError(path, "expected a JSON list of questions")
    items = []
    for position, record in enumerate(take(records, limit)):
        image_name = require_field(record, "image", path, f"#{position}")
        question = require_field(record, "question", path, image_name)
        answers = record.get("answers")
        try:
            gt = [str(a["answer"]) for a in answers] if answers else None
        except (TypeError, KeyError) as err:
            raise BenchmarkDataError(path, "answers must be [{'answer': ...}]", image_name) from err
        items.append(
            EvalItem(
                id=image_name,
                images=[require_file(data_dir / split / image_name, "image", image_name)],
                prompt=f"{question}\n{UNANSWERABLE_HINT}\n{SHORT_ANSWER_SUFFIX}",
                meta={"answers": gt, "answerable": record.get("answerable")},
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """VQA accuracy (percent) over the items that have answers."""
    answers = answers_for(items, predictions)
    scored = [(pred, item.meta["answers"]) for item, pred in zip(items, answers) if item.meta["answers"]]
    if not scored:
        return {"accuracy": None, "num_scored": 0, "note": "no answers (test split): use submission.json"}
    accuracy = 100.0 * sum(vqa_accuracy(pred, gts) for pred, gts in scored) / len(scored)
    return {"accuracy": accuracy, "num_scored": len(scored)}


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[dict[str, Any]]:
    """The EvalAI upload: one ``{"image", "answer"}`` per item, answers normalised."""
    return [
        {"image": item.id, "answer": normalize_vqa_answer(pred)}
        for item, pred in zip(items, answers_for(items, predictions))
    ]
