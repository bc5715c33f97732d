"""VQAv2 (open-ended VQA on COCO; 10 human answers per question; VQA accuracy).

Expected layout of ``data_dir`` (the public release from visualqa.org)::

    v2_OpenEnded_mscoco_val2014_questions.json  {"questions": [{"question_id", "image_id", "question"}]}
    v2_mscoco_val2014_annotations.json          {"annotations": [{"question_id", "answers": [{"answer"}]}]}
    val2014/COCO_val2014_000000XXXXXX.jpg       image_id zero-padded to 12 digits

For ``split="test-dev2015"`` (the split of the EVE paper, scored only by the EvalAI server) the
questions file is ``v2_OpenEnded_mscoco_test-dev2015_questions.json``, there is no annotations file
and the images are ``test2015/COCO_test2015_000000XXXXXX.jpg``. Item ids are the integer
``question_id``. ``score`` gives VQA accuracy on questions with annotations; ``submission`` is the
EvalAI upload: ``[{"question_id", "answer"}]`` with answers normalised by the EvalAI processor (as
LLaVA/EVE's ``convert_vqav2_for_submission.py``).
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
from eve_vlm.eval.metrics import normalize_vqa_answer, vqa_accuracy

NAME = "vqav2"
PAPER_COLUMN = "VQAv2"
HEADLINE = "accuracy"


def load(data_dir: str | Path, limit: int | None = None, split: str = "val2014") -> list[EvalItem]:
    """Read the VQAv2 ``split`` (``val2014``, ``test-dev2015`` or ``test2015``) questions."""
    data_dir = Path(data_dir)
    questions_path = data_dir / f"v2_OpenEnded_mscoco_{split}_questions.json"
    questions = require_field(read_json(questions_path), "questions", questions_path, None)
    image_folder = "test2015" if split.startswith("test") else split

    answers_by_id: dict[int, list[str]] = {}
    annotations_path = data_dir / f"v2_mscoco_{split}_annotations.json"
    if not split.startswith("test"):
        annotations = require_field(read_json(annotations_path), "annotations", annotations_path, None)
        for record in annotations:
            qid = require_field(record, "question_id", annotations_path, None)
            answers = require_field(record, "answers", annotations_path, qid)
            try:
                answers_by_id[qid] = [str(a["answer"]) for a in answers]
            except (TypeError, KeyError) as err:
                raise BenchmarkDataError(annotations_path, "answers must be [{'answer': ...}]", qid) from err

    items = []
    for record in take(questions, limit):
        qid = require_field(record, "question_id", questions_path, None)
        image_id = require_field(record, "image_id", questions_path, qid)
        if not isinstance(image_id, int):
            raise BenchmarkDataError(questions_path, f"image_id must be an integer, got {image_id!r}", qid)
        question = str(require_field(record, "question", questions_path, qid))
        if answers_by_id and qid not in answers_by_id:
            raise BenchmarkDataError(annotations_path, "no annotation for this question", qid)
        image = data_dir / image_folder / f"COCO_{image_folder}_{image_id:012d}.jpg"
        items.append(
            EvalItem(
                id=qid,
                images=[require_file(image, "image", qid)],
                prompt=f"{question}\n{SHORT_ANSWER_SUFFIX}",
                meta={"answers": answers_by_id.get(qid), "image_id": image_id},
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """VQA accuracy (percent) over the items that have annotations."""
    answers = answers_for(items, predictions)
    scored = [(pred, item.meta["answers"]) for item, pred in zip(items, answers) if item.meta["answers"]]
    if not scored:
        return {"accuracy": None, "num_scored": 0, "note": "no annotations (test split): use submission.json"}
    accuracy = 100.0 * sum(vqa_accuracy(pred, gts) for pred, gts in scored) / len(scored)
    return {"accuracy": accuracy, "num_scored": len(scored)}


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[dict[str, Any]]:
    """The EvalAI upload: one ``{"question_id", "answer"}`` per item, answers normalised."""
    return [
        {"question_id": item.id, "answer": normalize_vqa_answer(pred)}
        for item, pred in zip(items, answers_for(items, predictions))
    ]
