"""Run a benchmark end to end: load items, ask the model in batches, resume, score, write reports.

The model side is a plain callable, ``answer_fn(items) -> answers`` (one string per
:class:`EvalItem`, in order); the runner knows nothing of models, devices or decoding.

Files written to ``output_dir`` (one benchmark run per folder)::

    predictions.jsonl   one {"id", "answer"} per question, appended batch by batch (resumable)
    submission.json     the official upload format, for benchmarks that have one
    scores.json         {"benchmark", "num_items", "limit", "headline", "scores": <adapter's score()>}
    results.md          the headline beside the EVE paper's rows (spec section 7), then all scores
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from eve_vlm.eval.base import EvalItem, ItemId
from eve_vlm.eval.benchmarks import (
    gqa,
    mmbench,
    mme,
    mmvet,
    pope,
    scienceqa_img,
    seed_bench,
    textvqa,
    vizwiz,
    vqav2,
)

logger = logging.getLogger(__name__)

AnswerFn = Callable[[list[EvalItem]], list[str]]
"""Answers a batch of items: one string per item, in the same order."""

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (vqav2, gqa, vizwiz, scienceqa_img, textvqa, pope, mme, mmbench, seed_bench, mmvet)
}
"""Registry of benchmark adapters, in the column order of the EVE paper's table."""

# fmt: off
PAPER_RESULTS: dict[str, dict[str, float]] = {
    # EVE paper, Table 3 (spec section 7): greedy decoding, max 128 new tokens, vicuna v1 template.
    "EVE-7B": {
        "vqav2": 75.4, "gqa": 60.8, "vizwiz": 41.8, "scienceqa_img": 63.0, "textvqa": 51.9,
        "pope": 83.6, "mme": 1217.3, "mmbench": 49.5, "seed_bench": 54.3, "mmvet": 25.6,
    },
    "EVE-7B (HD)": {
        "vqav2": 78.6, "gqa": 62.6, "vizwiz": 51.1, "scienceqa_img": 64.9, "textvqa": 56.8,
        "pope": 85.0, "mme": 1305.7, "mmbench": 52.3, "seed_bench": 56.8, "mmvet": 25.7,
    },
}
# fmt: on

PAPER_NOTES: dict[str, str] = {
    "vqav2": "VQA accuracy; the paper's number is test-dev (EvalAI server), ours is on the split loaded.",
    "gqa": "exact match on testdev-balanced.",
    "vizwiz": "VQA accuracy; the paper's number is test-dev (EvalAI server), ours is on the split loaded.",
    "scienceqa_img": "letter accuracy on the test questions with an image.",
    "textvqa": "VQA accuracy on val; the paper prompts with OCR tokens (LLaVA's question file).",
    "pope": "mean F1 over the random/popular/adversarial splits present (LLaVA parsing); papers differ.",
    "mme": "perception score (10 subtasks, max 2000); cognition is in scores.json.",
    "mmbench": "CircularEval accuracy; the paper's number is from the OpenCompass server.",
    "seed_bench": "letter accuracy on the image questions.",
    "mmvet": "graded by the external GPT-4 judge from submission.json; no local score.",
}

PREDICTIONS_FILE = "predictions.jsonl"
SUBMISSION_FILE = "submission.json"
SCORES_FILE = "scores.json"
RESULTS_FILE = "results.md"


def get_benchmark(name: str) -> ModuleType:
    """The adapter module registered under ``name``; ``ValueError`` listing the names otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def read_predictions(path: str | Path) -> dict[ItemId, str]:
    """Read a predictions JSONL written by :func:`run_benchmark` (``{}`` if the file is absent).

    A last line without its newline (a run killed mid-write) is ignored with a warning; any other
    malformed line is an error naming the file and line. A repeated id keeps its last answer.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    predictions: dict[ItemId, str] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            item_id, answer = record["id"], record["answer"]
            if not isinstance(item_id, (str, int)) or not isinstance(answer, str):
                raise TypeError("id must be a string or integer and answer a string")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if line_no == len(lines) and not line.endswith("\n"):
                logger.warning("%s: ignoring the unfinished last line %d (%s)", path, line_no, err)
                continue
            raise ValueError(f"{path}: line {line_no} is not a {{'id', 'answer'}} record: {err}") from err
        predictions[item_id] = answer
    return predictions


def _drop_unfinished_line(path: Path) -> None:
    """Cut a last line left without its newline, so appended records start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _batches(items: Sequence[EvalItem], batch_size: int) -> Iterable[list[EvalItem]]:
    for start in range(0, len(items), batch_size):
        yield list(items[start : start + batch_size])


def answer_items(
    items: Sequence[EvalItem], answer_fn: AnswerFn, batch_size: int, predictions_path: Path
) -> dict[ItemId, str]:
    """Predictions for every item: those already in ``predictions_path``, then ``answer_fn`` for the
    rest, appended to that file batch by batch (so a killed run resumes where it stopped)."""
    predictions = read_predictions(predictions_path)
    todo = [item for item in items if item.id not in predictions]
    logger.info("%d of %d items already answered, %d to go", len(items) - len(todo), len(items), len(todo))
    _drop_unfinished_line(predictions_path)
    with predictions_path.open("a", encoding="utf-8") as f:
        for batch_no, batch in enumerate(_batches(todo, batch_size)):
            answers = answer_fn(batch)
            if len(answers) != len(batch):
                raise ValueError(
                    f"answer_fn returned {len(answers)} answers for a batch of {len(batch)} items"
                )
            for item, answer in zip(batch, answers):
                if not isinstance(answer, str):
                    raise TypeError(
                        f"answer_fn must return strings, got {type(answer).__name__} for item {item.id!r}"
                    )
                f.write(json.dumps({"id": item.id, "answer": answer}, ensure_ascii=False) + "\n")
                predictions[item.id] = answer
            f.flush()
            logger.debug("batch %d: %d items answered", batch_no, len(batch))
    return predictions


def run_benchmark(
    name: str,
    data_dir: str | Path,
    output_dir: str | Path,
    answer_fn: AnswerFn,
    limit: int | None = None,
    batch_size: int = 8,
    load_options: Mapping[str, Any] | None = None,
    model_name: str = "this model",
) -> dict[str, Any]:
    """Evaluate ``answer_fn`` on benchmark ``name`` and write the files listed in the module docstring.

    Args:
        name: a key of :data:`BENCHMARKS`.
        data_dir: the benchmark's public release, laid out as its adapter's docstring says.
        output_dir: where predictions and reports go (created); holds one benchmark's run. Re-running
            with the same folder resumes: answered ids are read back and not asked again.
        answer_fn: answers a batch of items (one string per item, same order).
        limit: evaluate only the first ``limit`` records (see each adapter for what a record is).
        batch_size: items per ``answer_fn`` call.
        load_options: extra keyword arguments of the adapter's ``load`` (e.g. ``{"split": "test-dev2015"}``).
        model_name: the row label of our numbers in ``results.md``.

    Returns:
        The adapter's scores (also in ``scores.json``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module = get_benchmark(name)
    items = module.load(Path(data_dir), limit=limit, **dict(load_options or {}))
    if not items:
        raise ValueError(f"{name}: no items loaded from {data_dir} (limit={limit})")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: duplicate item ids in {data_dir}")
    logger.info("%s: %d items from %s", name, len(items), data_dir)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions = answer_items(items, answer_fn, batch_size, output_dir / PREDICTIONS_FILE)
    ours = {item.id: predictions[item.id] for item in items}

    scores = module.score(items, ours)
    headline = scores.get(module.HEADLINE) if module.HEADLINE else None
    report = {
        "benchmark": name,
        "num_items": len(items),
        "limit": limit,
        "headline": headline,
        "scores": scores,
    }
    (output_dir / SCORES_FILE).write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if hasattr(module, "submission"):
        upload = module.submission(items, ours)
        (output_dir / SUBMISSION_FILE).write_text(
            json.dumps(upload, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    markdown = results_table({name: scores}, model_name=model_name) + "\n" + _details(name, scores)
    (output_dir / RESULTS_FILE).write_text(markdown, encoding="utf-8")
    logger.info("%s: %s = %s (written to %s)", name, module.HEADLINE, headline, output_dir)
    return scores


def _format(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_table(
    scores_by_benchmark: Mapping[str, Mapping[str, Any]], model_name: str = "this model"
) -> str:
    """A markdown table: our headline per benchmark beside the EVE paper's rows.

    ``scores_by_benchmark`` maps benchmark names to their ``score()`` results; columns follow the
    paper's order and only the benchmarks given appear. A metric without a local value shows "-".
    """
    names = [name for name in BENCHMARKS if name in scores_by_benchmark]
    unknown = set(scores_by_benchmark) - set(names)
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}")
    header = "| model | " + " | ".join(BENCHMARKS[n].PAPER_COLUMN for n in names) + " |"
    rule = "|---|" + "---|" * len(names)
    ours = [
        _format(scores_by_benchmark[n].get(BENCHMARKS[n].HEADLINE) if BENCHMARKS[n].HEADLINE else None)
        for n in names
    ]
    rows = [header, rule, f"| {model_name} | " + " | ".join(ours) + " |"]
    for paper_model, numbers in PAPER_RESULTS.items():
        rows.append(f"| {paper_model} (paper) | " + " | ".join(_format(numbers.get(n)) for n in names) + " |")
    notes = [f"- {BENCHMARKS[n].PAPER_COLUMN}: {PAPER_NOTES[n]}" for n in names]
    return "\n".join(rows) + "\n\n" + "\n".join(notes) + "\n"


def _flatten(scores: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in scores.items():
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _details(name: str, scores: Mapping[str, Any]) -> str:
    lines = [f"## All {name} scores", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {_format(value, digits=2)} |" for key, value in _flatten(scores)]
    return "\n".join(lines) + "\n"
