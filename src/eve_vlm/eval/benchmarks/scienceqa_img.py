"""ScienceQA-IMG (the test questions of ScienceQA that have an image; multiple choice, 2-5 options).

Expected layout of ``data_dir`` (the public release from scienceqa.github.io)::

    problems.json          {"<pid>": {"question", "choices", "answer": int, "hint", "image": "image.png"|null,
                                      "split", "subject", ...}}
    pid_splits.json        {"test": ["<pid>", ...], ...}   (optional: else each problem's "split")
    images/test/<pid>/image.png       (or test/<pid>/image.png)

Only problems of ``split`` (``test`` by default) with an image are kept (2017 for test). Item ids are
the problem ids (strings). The prompt follows lmms-eval's ``scienceqa_img`` (LLaVA-1.5's format):
``"Context: <hint>\\n"`` when there is a hint, the question, one ``"A. choice"`` line per choice, then
the multiple-choice suffix. ``score`` is the percent of answers whose extracted letter is right.
There is no submission file: test answers are public.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import (
    MULTIPLE_CHOICE_SUFFIX,
    OPTION_LETTERS,
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    read_json,
    require_field,
    take,
)
from eve_vlm.eval.metrics import choice_correct

NAME = "scienceqa_img"
PAPER_COLUMN = "SQA-I"
HEADLINE = "accuracy"


def _image_path(data_dir: Path, split: str, pid: str, image_name: str, problems_path: Path) -> Path:
    for root in (data_dir / "images" / split, data_dir / split):
        if (root / pid / image_name).is_file():
            return root / pid / image_name
    raise BenchmarkDataError(
        problems_path,
        f"missing image: neither images/{split}/{pid}/{image_name} nor {split}/{pid}/{image_name}",
        pid,
    )


def load(data_dir: str | Path, limit: int | None = None, split: str = "test") -> list[EvalItem]:
    """Read the ScienceQA problems of ``split`` that have an image."""
    data_dir = Path(data_dir)
    problems_path = data_dir / "problems.json"
    problems = read_json(problems_path)
    if not isinstance(problems, dict):
        raise BenchmarkDataError(problems_path, "expected a JSON object mapping problem id -> problem")
    splits_path = data_dir / "pid_splits.json"
    if splits_path.is_file():
        pids = [str(pid) for pid in require_field(read_json(splits_path), split, splits_path, None)]
    else:
        pids = [
            pid
            for pid, problem in problems.items()
            if isinstance(problem, dict) and problem.get("split") == split
        ]

    def with_image(pid: str) -> bool:
        if pid not in problems:
            raise BenchmarkDataError(problems_path, f"problem listed in {splits_path.name} is missing", pid)
        return bool(problems[pid].get("image"))

    items = []
    for pid in take((pid for pid in pids if with_image(pid)), limit):
        problem = problems[pid]
        choices = require_field(problem, "choices", problems_path, pid)
        answer = require_field(problem, "answer", problems_path, pid)
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTION_LETTERS):
            raise BenchmarkDataError(
                problems_path, f"choices must be a list of 2-{len(OPTION_LETTERS)} strings", pid
            )
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise BenchmarkDataError(problems_path, f"answer must index the choices, got {answer!r}", pid)
        hint = (problem.get("hint") or "").strip()
        context = f"Context: {hint}\n" if hint else ""
        options = "\n".join(f"{OPTION_LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
        question = require_field(problem, "question", problems_path, pid)
        items.append(
            EvalItem(
                id=pid,
                images=[_image_path(data_dir, split, pid, problem["image"], problems_path)],
                prompt=f"{context}{question}\n{options}\n{MULTIPLE_CHOICE_SUFFIX}",
                meta={
                    "answer": OPTION_LETTERS[answer],
                    "choices": [str(c) for c in choices],
                    "subject": problem.get("subject"),
                },
            )
        )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """Letter accuracy (percent); an answer whose letter cannot be extracted counts as wrong."""
    answers = answers_for(items, predictions)
    hits = [
        choice_correct(pred, item.meta["answer"], options=item.meta["choices"])
        for item, pred in zip(items, answers)
    ]
    if not hits:
        raise ValueError("scienceqa_img.score needs at least one item")
    return {"accuracy": 100.0 * sum(hits) / len(hits), "num_scored": len(hits)}
