"""`eve-vlm eval`: answer benchmarks with a saved model, score them and compare with the EVE paper.

One process::

    eve-vlm eval --model ckpt/ --benchmark pope mme --data data/ --output results/ [--limit 100]

Data parallel, one process per GPU (answers gathered through the output folder)::

    accelerate launch -m eve_vlm.cli eval --model ckpt/ --benchmark pope --data data/ --output results/

Benchmark NAME is read from DATA/NAME (or from DATA itself when it is the only benchmark and
DATA/NAME does not exist) and written to OUTPUT/NAME/; OUTPUT/results.md holds all of this run's
benchmarks beside the paper's rows. Re-running the same command resumes: answered items are skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.md"
SORT_WINDOW = 4
"""Batches handed to the model at once: sorted by prompt length there (less padding); also how
often answers are written to disk (the resume granularity)."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on benchmarks (greedy, resumable, data parallel)",
        description="Answer benchmark questions with a saved EVE model (greedy decoding, the model's own "
        "template), score them, and write predictions, scores and a table beside the EVE paper's "
        "numbers. Run under `accelerate launch -m eve_vlm.cli eval ...` to shard across GPUs.",
    )
    parser.add_argument("--model", required=True, type=Path, help="folder of a saved EVE model and processor")
    parser.add_argument(
        "--benchmark",
        required=True,
        nargs="+",
        action="extend",
        metavar="NAME",
        help="benchmark(s) to run: vqav2 gqa vizwiz scienceqa_img textvqa pope mme mmbench "
        "seed_bench mmvet (repeatable)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="data root: benchmark NAME is read from DATA/NAME (or from DATA itself when it is "
        "the only benchmark)",
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="results root: benchmark NAME goes to OUTPUT/NAME"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N records of each benchmark")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts decoded together per process")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="most new tokens per answer (paper: 128)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (this process's GPU if any, else CPU), cpu, cuda or cuda:N (one process only)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 on a GPU, float32 on the CPU",
    )
    parser.add_argument(
        "--load-option",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="an option of a benchmark's loader, VALUE as JSON or a plain string, e.g. "
        "vqav2.split=test-dev2015 or 'mme.subtasks=[\"existence\"]' (repeatable)",
    )
    parser.set_defaults(func=run_eval)


def parse_load_options(specs: list[str], benchmarks: list[str]) -> dict[str, dict[str, Any]]:
    """``["vqav2.split=test-dev2015"]`` -> ``{"vqav2": {"split": "test-dev2015"}}`` (values parsed as JSON
    when they are JSON, else kept as strings)."""
    options: dict[str, dict[str, Any]] = {name: {} for name in benchmarks}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        name, dot, option = key.partition(".")
        if not (sep and dot and option):
            raise SystemExit(f"eve-vlm eval: --load-option {spec!r} is not NAME.KEY=VALUE")
        if name not in options:
            raise SystemExit(
                f"eve-vlm eval: --load-option {spec!r} names {name!r}, which is not a --benchmark"
            )
        try:
            options[name][option] = json.loads(raw)
        except json.JSONDecodeError:
            options[name][option] = raw
    return options


def benchmark_data_dir(data: Path, name: str, num_benchmarks: int) -> Path:
    """DATA/NAME, or DATA itself for a single benchmark whose DATA/NAME does not exist."""
    if (data / name).is_dir():
        return data / name
    if num_benchmarks == 1:
        return data
    raise SystemExit(
        f"eve-vlm eval: no folder {data / name} for benchmark {name!r} (with several benchmarks, "
        "--data holds one folder per benchmark)"
    )


def run_eval(args: argparse.Namespace) -> int:
    from eve_vlm.eval.base import BenchmarkDataError

    try:
        return _evaluate(args)
    except (BenchmarkDataError, FileNotFoundError) as err:
        raise SystemExit(f"eve-vlm eval: {err}") from err


def _evaluate(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from eve_vlm.eval.generate import EveGenerator, device_name
    from eve_vlm.eval.runner import BENCHMARKS, results_table, run_benchmark
    from eve_vlm.eval.shards import answer_shard, merge_shards
    from eve_vlm.infer import load_model

    names = list(dict.fromkeys(args.benchmark))
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"eve-vlm eval: unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            raise SystemExit(f"eve-vlm eval: {flag} must be >= 1, got {value}")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"eve-vlm eval: --limit must be >= 1, got {args.limit}")
    load_options = parse_load_options(args.load_option, names)
    data_dirs = {name: benchmark_data_dir(args.data, name, len(names)) for name in names}

    # one process, or this one's place under `accelerate launch` / torchrun; cpu=True without CUDA
    # makes CPU processes join one gloo group instead of each running alone
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and args.device != "auto":
        raise SystemExit(
            "eve-vlm eval: under accelerate launch keep --device auto (each process takes its GPU)"
        )
    device = device_name(state.device) if state.num_processes > 1 else args.device
    try:
        model, processor = load_model(args.model, device=device, dtype=args.dtype)
    except ValueError as err:  # a device or dtype this machine cannot give, a mismatched checkpoint
        raise SystemExit(f"eve-vlm eval: {err}") from err
    answer_fn = EveGenerator(model, processor, args.batch_size).answer_fn(args.max_new_tokens)
    chunk = args.batch_size * SORT_WINDOW

    model_name = args.model.resolve().name
    scores: dict[str, dict[str, Any]] = {}
    for name in names:
        output_dir = args.output / name
        options = load_options[name]
        answer_shard(
            name,
            data_dirs[name],
            output_dir,
            answer_fn,
            rank=state.process_index,
            world_size=state.num_processes,
            limit=args.limit,
            batch_size=chunk,
            load_options=options,
        )
        state.wait_for_everyone()
        if state.is_main_process:
            merge_shards(output_dir)
            # every item is answered now: run_benchmark reads them back, scores and writes the reports
            scores[name] = run_benchmark(
                name,
                data_dirs[name],
                output_dir,
                answer_fn,
                limit=args.limit,
                batch_size=chunk,
                load_options=options,
                model_name=model_name,
            )
        state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    table = results_table(scores, model_name=model_name)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / RESULTS_FILE).write_text(table, encoding="utf-8")
    print(table)
    print(f"written to {args.output}/ (one folder per benchmark, {RESULTS_FILE})")
    return 0
