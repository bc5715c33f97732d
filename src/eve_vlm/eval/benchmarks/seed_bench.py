"""SEED-Bench (v1), image part: 14k four-way multiple-choice questions in 9 dimensions.

Expected layout of ``data_dir`` (the public release from huggingface.co/datasets/AILab-CVC/SEED-Bench)::

    SEED-Bench.json        {"questions": [{"question_id", "question", "choice_a".."choice_d", "answer": "A",
                                           "data_id", "data_type": "image"|"video", "question_type_id"}],
                            "question_type": {"Scene Understanding": 1, ...}}
    SEED-Bench-image/<data_id>            (".jpg" is appended when ``data_id`` has no extension)

Only ``data_type == "image"`` questions are kept (dimensions 1-9; the EVE table's SEED number is the
image accuracy). Item ids are the ``question_id`` strings. The prompt is the question, the four
``"A. choice"`` lines and the multiple-choice suffix (LLaVA's ``llava-seed-bench.jsonl``).
``submission`` is the leaderboard's ``[{"question_id", "prediction"}]`` with extracted letters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import (
    MULTIPLE_CHOICE_SUFFIX,
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    read_json,
    require_field,
    take,
)
from eve_vlm.eval.metrics import choice_correct, extract_choice_letter

NAME = "seed_bench"
PAPER_COLUMN = "SEED"
HEADLINE = "accuracy"

_CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")


def _image_path(image_dir: Path, data_id: str, path: Path, qid: str) -> Path:
    for candidate in (image_dir / data_id, image_dir / f"{data_id}.jpg", image_dir / f"{data_id}.png"):
        if candidate.is_file():
            return candidate
    raise BenchmarkDataError(path, f"missing image {image_dir / data_id}", qid)


def load(data_dir: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Read the image questions of ``SEED-Bench.json``."""
    data_dir = Path(data_dir)
    path = data_dir / "SEED-Bench.json"
    data = read_json(path)
    questions = require_field(data, "questions", path, None)
    type_names = {v: k for k, v in (data.get("question_type") or {}).items()}
    image_questions = (q for q in questions if isinstance(q, dict) and q.get("data_type") == "image")
    items = []
    for record in take(image_questions, limit):
        qid = str(require_field(record, "question_id", path, None))
        choices = [str(require_field(record, key, path, qid)) for key in _CHOICE_KEYS]
        answer = str(require_field(record, "answer", path, qid)).strip().upper()
        if answer not in "ABCD" or len(answer) != 1:
            raise BenchmarkDataError(path, f"answer must be A-D, got {record['answer']!r}", qid)
        options = "\n".join(f"{letter}. {choice}" for letter, choice in zip("ABCD", choices))
        type_id = record.get("question_type_id")
        items.append(
            EvalItem(
                id=qid,
                images=[
                    _image_path(
                        data_dir / "SEED-Bench-image",
                        str(require_field(record, "data_id", path, qid)),
                        path,
                        qid,
                    )
                ],
                prompt=f"{require_field(record, 'question', path, qid)}\n{options}\n{MULTIPLE_CHOICE_SUFFIX}",
                meta={
                    "answer": answer,
                    "choices": choices,
                    "question_type": type_names.get(type_id, type_id),
                },
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """Letter accuracy (percent) overall and per question type."""
    answers = answers_for(items, predictions)
    by_type: dict[str, list[bool]] = defaultdict(list)
    hits = []
    for item, pred in zip(items, answers):
        ok = choice_correct(pred, item.meta["answer"], options=item.meta["choices"])
        hits.append(ok)
        by_type[str(item.meta["question_type"])].append(ok)
    if not hits:
        raise ValueError("seed_bench.score needs at least one item")
    return {
        "accuracy": 100.0 * sum(hits) / len(hits),
        "num_scored": len(hits),
        "question_types": {name: 100.0 * sum(oks) / len(oks) for name, oks in sorted(by_type.items())},
    }


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[dict[str, Any]]:
    """Leaderboard predictions ``[{"question_id", "prediction"}]`` (extracted letter, "" if none)."""
    return [
        {
            "question_id": item.id,
            "prediction": extract_choice_letter(pred, options=item.meta["choices"]) or "",
        }
        for item, pred in zip(items, answers_for(items, predictions))
    ]
