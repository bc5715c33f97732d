"""MME (14 yes/no subtasks, two questions per image; perception max 2000, cognition max 800).

Expected layout (the public release ``MME_Benchmark_release_version``); ``data_dir`` may be the
folder that holds it, the release folder itself, or its inner ``MME_Benchmark`` folder::

    MME_Benchmark_release_version/
        artwork/ celebrity/ landmark/ posters/ scene/
            images/<name>.jpg
            questions_answers_YN/<name>.txt
        existence/ count/ position/ color/ OCR/
        commonsense_reasoning/ numerical_calculation/ text_translation/ code_reasoning/
            <name>.jpg|.png  next to  <name>.txt

Each ``<name>.txt`` holds one question per line, tab-separated from its answer ("Yes"/"No"):
``Is there a dog in this image? Please answer yes or no.<TAB>Yes``. (The tab-separated
``image<TAB>question<TAB>answer`` files under ``eval_tool/Your_Results`` are answer templates for the
official scorer, not the questions.) Item ids are ``"<subtask>/<image file>#<line>"``, e.g.
``"count/000000006040.jpg#0"``. The prompt is the question as written plus LLaVA-1.5's short-answer
suffix (LLaVA's ``llava_mme.jsonl``). ``limit`` counts images (each with all its questions) across
the subtasks in order. Answers are parsed with lmms-eval's rule (:func:`metrics.mme_parse`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eve_vlm.eval.base import (
    SHORT_ANSWER_SUFFIX,
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    take,
)
from eve_vlm.eval.metrics import MME_COGNITION, MME_PERCEPTION, mme_scores

logger = logging.getLogger(__name__)

NAME = "mme"
PAPER_COLUMN = "MME-P"
HEADLINE = "perception"

SUBTASKS = (*MME_PERCEPTION, *MME_COGNITION)
_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def _release_root(data_dir: Path) -> Path:
    for root in (
        data_dir / "MME_Benchmark_release_version" / "MME_Benchmark",
        data_dir / "MME_Benchmark_release_version",
        data_dir / "MME_Benchmark",
        data_dir,
    ):
        if any((root / subtask).is_dir() for subtask in SUBTASKS):
            return root
    raise BenchmarkDataError(
        data_dir, f"no MME subtask folder found (expected e.g. MME_Benchmark_release_version/{SUBTASKS[0]}/)"
    )


def _question_files(folder: Path) -> list[tuple[Path, Path]]:
    """(question file, image) pairs of one subtask folder, sorted by name."""
    split_layout = (folder / "questions_answers_YN").is_dir() and (folder / "images").is_dir()
    question_dir, image_dir = (
        (folder / "questions_answers_YN", folder / "images") if split_layout else (folder, folder)
    )
    pairs = []
    for question_file in sorted(question_dir.glob("*.txt")):
        image = next(
            (
                image_dir / f"{question_file.stem}{s}"
                for s in _IMAGE_SUFFIXES
                if (image_dir / f"{question_file.stem}{s}").is_file()
            ),
            None,
        )
        if image is None:
            raise BenchmarkDataError(question_file, f"no image {question_file.stem}.jpg/.png in {image_dir}")
        pairs.append((question_file, image))
    if not pairs:
        raise BenchmarkDataError(question_dir, "no question files (*.txt)")
    return pairs


def _read_questions(question_file: Path) -> list[tuple[str, str]]:
    questions = []
    for line_no, line in enumerate(question_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split("\t")
        if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
            raise BenchmarkDataError(
                question_file, f"line {line_no} is not '<question>\\t<Yes|No>': {line!r}"
            )
        questions.append((parts[0].strip(), parts[1].strip()))
    return questions


def load(
    data_dir: str | Path, limit: int | None = None, subtasks: Sequence[str] = SUBTASKS
) -> list[EvalItem]:
    """Read the MME ``subtasks`` (all 14 by default); a missing subtask folder is an error."""
    root = _release_root(Path(data_dir))
    pairs = []
    for subtask in subtasks:
        if subtask not in SUBTASKS:
            raise ValueError(f"unknown MME subtask {subtask!r}; expected one of {SUBTASKS}")
        if not (root / subtask).is_dir():
            raise BenchmarkDataError(root / subtask, "missing MME subtask folder")
        pairs.extend(
            (subtask, question_file, image) for question_file, image in _question_files(root / subtask)
        )

    items = []
    for subtask, question_file, image in take(pairs, limit):
        for line, (question, answer) in enumerate(_read_questions(question_file)):
            items.append(
                EvalItem(
                    id=f"{subtask}/{image.name}#{line}",
                    images=[image],
                    prompt=f"{question}\n{SHORT_ANSWER_SUFFIX}",
                    meta={"subtask": subtask, "image_id": f"{subtask}/{image.name}", "answer": answer},
                )
            )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """Per-subtask acc / acc+ / score and the perception and cognition totals."""
    answers = answers_for(items, predictions)
    scores = mme_scores(
        {
            "subtask": item.meta["subtask"],
            "image_id": item.meta["image_id"],
            "gt": item.meta["answer"],
            "pred": pred,
        }
        for item, pred in zip(items, answers)
    )
    if scores["perception_subtasks"] < len(MME_PERCEPTION):
        logger.warning(
            "MME perception covers %d of %d subtasks: not comparable with the paper's total",
            scores["perception_subtasks"],
            len(MME_PERCEPTION),
        )
    return scores
