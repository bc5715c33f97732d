"""MM-Vet (218 open-ended questions over 6 capabilities, graded by a GPT-4 judge).

Expected layout of ``data_dir`` (the public release from github.com/yuweihao/MM-Vet)::

    mm-vet.json        {"v1_0": {"imagename": "v1_0.png", "question", "answer", "capability": [...]}, ...}
    images/<imagename>

Item ids are the keys (``"v1_0"``). The prompt is the question alone, with no suffix (LLaVA/EVE
``llava-mm-vet.jsonl``): answers are open-ended. MM-Vet is graded by its external GPT judge
(``mm-vet_evaluator``), so ``score`` only counts answers; ``submission`` is the ``{id: answer}``
JSON that judge reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import (
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    read_json,
    require_field,
    require_file,
    take,
)

NAME = "mmvet"
PAPER_COLUMN = "MM-Vet"
HEADLINE = None


def load(data_dir: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Read ``mm-vet.json`` and its images."""
    data_dir = Path(data_dir)
    path = data_dir / "mm-vet.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise BenchmarkDataError(path, "expected a JSON object mapping id -> question")
    items = []
    for qid, record in take(data.items(), limit):
        image_name = require_field(record, "imagename", path, qid)
        items.append(
            EvalItem(
                id=qid,
                images=[require_file(data_dir / "images" / image_name, "image", qid)],
                prompt=str(require_field(record, "question", path, qid)),
                meta={"answer": record.get("answer"), "capability": record.get("capability")},
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """No local score: MM-Vet needs its GPT-4 judge. Counts the answers that are ready for it."""
    answers = answers_for(items, predictions)
    return {
        "score": None,
        "num_answered": len(answers),
        "note": "graded by the external MM-Vet GPT-4 judge: submit submission.json",
    }


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, str]:
    """The ``{id: answer}`` JSON read by the MM-Vet judge."""
    return {str(item.id): pred for item, pred in zip(items, answers_for(items, predictions))}
