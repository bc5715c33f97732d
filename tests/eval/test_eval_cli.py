"""`eve-vlm eval` end to end with a tiny random model saved to disk, on every benchmark's fixture.

The fixtures are the builders of test_eval_benchmarks.py (each benchmark's public layout); the
model is random, so the checks are about the pipeline: files written and parseable, scores equal
to the adapter's score() of the written predictions, resume asks nothing, --limit is respected,
sharded answering covers every item once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_eval_benchmarks import BUILDERS, FakeModel, build_gqa, build_pope, build_vqav2

from eve_vlm.cli import main
from eve_vlm.eval import BENCHMARKS, read_predictions, run_benchmark
from eve_vlm.eval.shards import answer_shard, merge_shards, rank_file
from eve_vlm.model.eve import EveForCausalLM
from eve_vlm.testing import tiny_model_and_processor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of every `EveForCausalLM.generate` call made by the CLI."""
    calls: list[int] = []
    original = EveForCausalLM.generate

    def counting(self: EveForCausalLM, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EveForCausalLM, "generate", counting)
    return calls


def run_cli(model_dir: Path, names: list[str], data: Path, output: Path, *extra: str) -> int:
    paths = ["--model", str(model_dir), "--data", str(data), "--output", str(output)]
    return main(["eval", *paths, "--benchmark", *names, "--max-new-tokens", "3", "--batch-size", "2", *extra])


def load_option_flags(name: str, options: dict[str, Any]) -> list[str]:
    return [
        flag
        for key, value in options.items()
        for flag in ("--load-option", f"{name}.{key}={json.dumps(value)}")
    ]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_cli_end_to_end_and_resume(
    name: str, model_dir: Path, tmp_path: Path, generate_calls: list[int]
) -> None:
    case = BUILDERS[name](tmp_path / "data" / name)
    out = tmp_path / "out"
    flags = load_option_flags(name, case.load_options)
    assert run_cli(model_dir, [name], tmp_path / "data", out, *flags) == 0

    module = BENCHMARKS[name]
    items = module.load(case.data_dir, **case.load_options)
    # every item answered once, in batches of at most --batch-size
    records = [
        json.loads(line)
        for line in (out / name / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sorted((r["id"] for r in records), key=str) == sorted((item.id for item in items), key=str)
    assert all(isinstance(r["answer"], str) and r["answer"] == r["answer"].strip() for r in records)
    assert sum(generate_calls) == len(items) and max(generate_calls) <= 2
    assert not list((out / name).glob("predictions-rank*.jsonl"))  # merged away

    # scores.json is the adapter's score() of the written predictions
    report = json.loads((out / name / "scores.json").read_text(encoding="utf-8"))
    expected = module.score(items, read_predictions(out / name / "predictions.jsonl"))
    assert report["scores"] == json.loads(json.dumps(expected))
    assert report["num_items"] == len(items)
    assert (out / name / "submission.json").exists() == hasattr(module, "submission")
    if hasattr(module, "submission"):
        json.loads((out / name / "submission.json").read_text(encoding="utf-8"))
    assert f"| model | {module.PAPER_COLUMN} |" in (out / "results.md").read_text(encoding="utf-8")
    assert (out / name / "results.md").is_file()

    # resume: the same command generates nothing and scores the same
    generate_calls.clear()
    assert run_cli(model_dir, [name], tmp_path / "data", out, *flags) == 0
    assert generate_calls == []
    assert json.loads((out / name / "scores.json").read_text(encoding="utf-8")) == report


def test_limit_and_a_single_data_folder(model_dir: Path, tmp_path: Path, generate_calls: list[int]) -> None:
    build_vqav2(tmp_path / "vqa")  # --data is the benchmark's own folder: only one benchmark
    assert run_cli(model_dir, ["vqav2"], tmp_path / "vqa", tmp_path / "out", "--limit", "2") == 0
    assert len(read_predictions(tmp_path / "out" / "vqav2" / "predictions.jsonl")) == 2
    assert json.loads((tmp_path / "out" / "vqav2" / "scores.json").read_text())["num_items"] == 2
    assert sum(generate_calls) == 2


def test_several_benchmarks_share_one_results_table(model_dir: Path, tmp_path: Path) -> None:
    build_pope(tmp_path / "data" / "pope")
    build_gqa(tmp_path / "data" / "gqa")
    assert run_cli(model_dir, ["pope", "--benchmark", "gqa"], tmp_path / "data", tmp_path / "out") == 0
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| model | GQA | POPE |" in table  # the paper's column order
    assert (tmp_path / "out" / "pope" / "scores.json").is_file() and (
        tmp_path / "out" / "gqa" / "scores.json"
    ).is_file()


def test_bad_arguments_are_reported(model_dir: Path, tmp_path: Path) -> None:
    build_pope(tmp_path / "data" / "pope")
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_cli(model_dir, ["nope"], tmp_path / "data", tmp_path / "out")
    with pytest.raises(SystemExit, match="no folder"):
        run_cli(model_dir, ["pope", "gqa"], tmp_path / "data", tmp_path / "out")
    with pytest.raises(SystemExit, match="not a --benchmark"):
        run_cli(model_dir, ["pope"], tmp_path / "data", tmp_path / "out", "--load-option", "gqa.x=1")
    with pytest.raises(
        SystemExit, match=r"eve-vlm eval: .*v2_OpenEnded_mscoco_val2014_questions\.json: missing"
    ):
        run_cli(model_dir, ["vqav2"], tmp_path / "data" / "pope", tmp_path / "out")
    with pytest.raises(SystemExit, match="--limit must be >= 1"):
        run_cli(model_dir, ["pope"], tmp_path / "data", tmp_path / "out", "--limit", "0")


def test_shards_split_the_items_and_merge_for_scoring(tmp_path: Path) -> None:
    case = build_vqav2(tmp_path / "data")  # question ids 1, 2, 3
    out = tmp_path / "out"
    models = [FakeModel(case.answers), FakeModel(case.answers)]
    for rank in (1, 0):  # order does not matter; each process writes its own file
        answer_shard("vqav2", case.data_dir, out, models[rank], rank=rank, world_size=2, batch_size=1)
    assert models[0].asked == [1, 3] and models[1].asked == [2]
    assert read_predictions(rank_file(out, 1)) == {2: case.answers[2]}

    assert merge_shards(out) == 3
    assert not rank_file(out, 0).exists() and not rank_file(out, 1).exists()
    scorer = FakeModel({})
    scores = run_benchmark("vqav2", case.data_dir, out, scorer)
    assert scorer.calls == [] and scores["accuracy"] == pytest.approx(case.headline)


def test_shards_resume_across_process_counts(tmp_path: Path) -> None:
    case = build_vqav2(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    # an earlier run with 3 processes died: rank 2 answered item 3, rank 0's last line is cut off
    rank_file(out, 2).write_text('{"id": 3, "answer": "Dog"}\n', encoding="utf-8")
    rank_file(out, 0).write_text('{"id": 1, "answer": "2"}\n{"id": 2, "ans', encoding="utf-8")
    model = FakeModel(case.answers)
    answer_shard("vqav2", case.data_dir, out, model, rank=0, world_size=1)
    assert model.asked == [2]
    merge_shards(out)
    assert read_predictions(out / "predictions.jsonl") == case.answers


@pytest.mark.slow
def test_two_processes_answer_like_one(model_dir: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): each answers half, rank 0 merges; same answers as 1 process."""
    build_pope(tmp_path / "data" / "pope")
    build_vqav2(tmp_path / "data" / "vqav2")
    args = [
        "eval",
        "--model",
        str(model_dir),
        "--data",
        str(tmp_path / "data"),
        "--benchmark",
        "pope",
        "vqav2",
    ]
    args += ["--max-new-tokens", "3", "--batch-size", "2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    result = subprocess.run(
        [*torchrun, "eve_vlm.cli", *args, "--output", str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pope rank 1/2: 3 items to answer" in result.stderr
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    for name in ("pope", "vqav2"):
        two = read_predictions(tmp_path / "two" / name / "predictions.jsonl")
        assert two == read_predictions(tmp_path / "one" / name / "predictions.jsonl")
        assert not list((tmp_path / "two" / name).glob("predictions-rank*.jsonl"))
