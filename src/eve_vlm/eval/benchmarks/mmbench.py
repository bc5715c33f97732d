"""MMBench (multiple choice, CircularEval; the dev split is scored locally).

Expected layout of ``data_dir``: one MMBench TSV as released by OpenCompass / used by LLaVA, e.g.
``mmbench_dev_20230712.tsv`` (LLaVA) or ``MMBench_DEV_EN.tsv`` (VLMEvalKit); pass ``filename``
to pick another. Columns (tab-separated, header row)::

    index  question  hint  A  B  C  D  answer  category  l2-category  image  ...

``image`` is a base64-encoded image; VLMEvalKit TSVs may instead put the ``index`` of another row
whose image is reused. Options stop at the first empty (or "nan") column; ``hint`` may be empty.
``answer`` is absent in the test split (scored only by the OpenCompass server).

CircularEval (as EVE's/LLaVA's ``model_vqa_mmbench.py --all-rounds``): a question with ``n`` options
becomes ``n`` items, shift ``k`` showing the options rotated left by ``k`` (the right letter moves
with them). Item ids follow VLMEvalKit: ``index + 1_000_000 * k`` (``k = 0`` is the original order).
The prompt is ``hint\\nquestion`` (hint when present), one ``"A. option"`` line per option and the
multiple-choice suffix. ``limit`` counts original questions (each with all its shifts). Images are
opened lazily (``PIL.Image.open`` on the decoded bytes), one image object shared by the shifts.
``submission`` returns the rows of the original order with a ``prediction`` letter column, to be
written as the Excel file the server expects.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from eve_vlm.eval.base import (
    MULTIPLE_CHOICE_SUFFIX,
    OPTION_LETTERS,
    BenchmarkDataError,
    EvalItem,
    ItemId,
    answers_for,
    find_file,
    require_file,
    take,
)
from eve_vlm.eval.metrics import extract_choice_letter, mmbench_circular_accuracy

NAME = "mmbench"
PAPER_COLUMN = "MMB"
HEADLINE = "circular_accuracy"

DEFAULT_FILES = ("mmbench_dev_20230712.tsv", "MMBench_DEV_EN.tsv", "mmbench_dev_en_20231003.tsv")
SHIFT_STRIDE = 1_000_000


def _is_none(value: str | None) -> bool:
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def _read_rows(path: Path) -> list[dict[str, str]]:
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # base64 images exceed csv's default 128 KiB field limit
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            required = {"index", "question", "A", "B", "image"}
            missing = required - set(reader.fieldnames or ())
            if missing:
                raise BenchmarkDataError(path, f"missing TSV columns {sorted(missing)}")
            return list(reader)
    except csv.Error as err:
        raise BenchmarkDataError(path, f"malformed TSV: {err}") from err
    finally:
        csv.field_size_limit(old_limit)


def _decode_image(value: str, path: Path, index: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(base64.b64decode(value, validate=False)))
    except (binascii.Error, OSError, ValueError) as err:
        raise BenchmarkDataError(path, f"image column is not a base64 image: {err}", index) from err


def load(data_dir: str | Path, limit: int | None = None, filename: str | None = None) -> list[EvalItem]:
    """Read an MMBench TSV and expand every question into its circular shifts."""
    data_dir = Path(data_dir)
    path = (
        require_file(data_dir / filename) if filename else find_file(data_dir, DEFAULT_FILES, "MMBench TSV")
    )
    rows = _read_rows(path)
    raw_images = {row["index"]: row["image"] for row in rows}
    items = []
    for row in take(rows, limit):
        try:
            index = int(row["index"])
        except (TypeError, ValueError) as err:
            raise BenchmarkDataError(path, "index must be an integer", row.get("index")) from err
        options = []
        for letter in OPTION_LETTERS:
            if letter not in row or _is_none(row[letter]):
                break
            options.append(row[letter].strip())
        if len(options) < 2:
            raise BenchmarkDataError(path, "fewer than two options", index)
        answer = None if _is_none(row.get("answer")) else row["answer"].strip().upper()
        if answer is not None and answer not in OPTION_LETTERS[: len(options)]:
            raise BenchmarkDataError(
                path, f"answer {answer!r} is not one of the {len(options)} options", index
            )

        raw = row["image"]
        if len(raw) <= 64 and raw.strip().isdigit():  # VLMEvalKit: the image of another row
            if raw.strip() not in raw_images:
                raise BenchmarkDataError(
                    path, f"image refers to row {raw.strip()}, which does not exist", index
                )
            raw = raw_images[raw.strip()]
        image = _decode_image(raw, path, index)

        question = row["question"].strip()
        if not _is_none(row.get("hint")):
            question = f"{row['hint'].strip()}\n{question}"
        for shift in range(len(options)):
            shown = options[shift:] + options[:shift]
            lines = "\n".join(f"{OPTION_LETTERS[i]}. {option}" for i, option in enumerate(shown))
            gt = None
            if answer is not None:
                gt = OPTION_LETTERS[(OPTION_LETTERS.index(answer) - shift) % len(options)]
            items.append(
                EvalItem(
                    id=index + SHIFT_STRIDE * shift,
                    images=[image],
                    prompt=f"{question}\n{lines}\n{MULTIPLE_CHOICE_SUFFIX}",
                    meta={
                        "index": index,
                        "shift": shift,
                        "answer": gt,
                        "options": shown,
                        "category": row.get("category"),
                        "row": {k: v for k, v in row.items() if k != "image"} if shift == 0 else None,
                    },
                )
            )
    return items


def score(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> dict[str, Any]:
    """CircularEval accuracy (percent of questions right under every shift) and first-pass accuracy."""
    answers = answers_for(items, predictions)
    records = [
        {
            "index": item.meta["index"],
            "pred": pred,
            "gt": item.meta["answer"],
            "options": item.meta["options"],
            "shift": item.meta["shift"],
        }
        for item, pred in zip(items, answers)
        if item.meta["answer"] is not None
    ]
    if not records:
        return {
            "circular_accuracy": None,
            "num_questions": 0,
            "note": "no answers (test split): use submission.json",
        }
    return mmbench_circular_accuracy(records)


def submission(items: Sequence[EvalItem], predictions: Mapping[ItemId, str]) -> list[dict[str, Any]]:
    """The TSV rows (without images) of the original order, each with its ``prediction`` letter."""
    rows = []
    for item, pred in zip(items, answers_for(items, predictions)):
        if item.meta["shift"] == 0:
            letter = extract_choice_letter(pred, options=item.meta["options"])
            rows.append({**item.meta["row"], "prediction": letter or pred})
    return rows
