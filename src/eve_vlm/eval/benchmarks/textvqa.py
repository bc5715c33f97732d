"""TextVQA v0.5.1 val (questions that need reading text in the image; 10 answers; VQA accuracy).

Expected layout of ``data_dir`` (the public release from textvqa.org)::

    TextVQA_0.5.1_val.json          {"data": [{"question_id", "question", "image_id", "answers": [...10]}]}
    train_images/<image_id>.jpg     (the val images ship in the train_images folder)
    llava_textvqa_val_v051_ocr.jsonl   optional: LLaVA's question file {"question_id", "text"}

LLaVA-1.5 and EVE prompt TextVQA with the Rosetta OCR tokens ("Reference OCR token: ..."), taken
from LLaVA's ``llava_textvqa_val_v051_ocr.jsonl``. When that file is present its ``text`` is used as
the prompt (the short-answer suffix appended if missing); otherwise the prompt is the question and
the suffix, without OCR tokens (expect a lower score than the paper's). Item ids are the integer
``question_id``. There is no submission file: val is scored locally.
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
    read_jsonl,
    require_field,
    require_file,
    take,
)
from eve_vlm.eval.metrics import vqa_accuracy

NAME = "textvqa"
PAPER_COLUMN = "TextVQA"
HEADLINE = "accuracy"

OCR_PROMPTS_FILE = "llava_textvqa_val_v051_ocr.jsonl"


def load(data_dir: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Read TextVQA val, with LLaVA's OCR-token prompts when their file is present."""
    data_dir = Path(data_dir)
    path = data_dir / "TextVQA_0.5.1_val.json"
    records = require_field(read_json(path), "data", path, None)
    ocr_prompts: dict[Any, str] = {}
    if (data_dir / OCR_PROMPTS_FILE).is_file():
        ocr_path = data_dir / OCR_PROMPTS_FILE
        for record in read_jsonl(ocr_path):
            qid = require_field(record, "question_id", ocr_path, None)
            ocr_prompts[qid] = (
                str(require_field(record, "text", ocr_path, qid)).replace("<image>", "").strip()
            )

    items = []
    for record in take(records, limit):
        qid = require_field(record, "question_id", path, None)
        image_id = require_field(record, "image_id", path, qid)
        answers = record.get("answers")
        if answers is not None and (not isinstance(answers, list) or not answers):
            raise BenchmarkDataError(path, "answers must be a non-empty list of strings", qid)
        prompt = ocr_prompts.get(qid) or str(require_field(record, "question", path, qid))
        if not prompt.endswith(SHORT_ANSWER_SUFFIX):
            prompt = f"{prompt}\n{SHORT_ANSWER_SUFFIX}"
        items.append(
            EvalItem(
                id=qid,
                images=[require_file(data_dir / "train_images" / f"{image_id}.jpg", "image", qid)],
                prompt=prompt,
                meta={"answers": [str(a) for a in answers] if answers else None, "image_id": image_id},
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """VQA accuracy (percent) over the items that have answers."""
    answers = answers_for(items, predictions)
    scored = [(pred, item.meta["answers"]) for item, pred in zip(items, answers) if item.meta["answers"]]
    if not scored:
        return {"accuracy": None, "num_scored": 0, "note": "no answers in the annotation file"}
    accuracy = 100.0 * sum(vqa_accuracy(pred, gts) for pred, gts in scored) / len(scored)
    return {"accuracy": accuracy, "num_scored": len(scored), "ocr_tokens_in_prompt": _has_ocr(items)}


def _has_ocr(items: Sequence[EvalItem]) -> bool:
    return any("Reference OCR token" in item.prompt for item in items)
