"""`eve-vlm demo`: three EVE stages from real parts on a CPU, then a held-out evaluation and a report.

The stages are the ordinary recipe files of `configs/demo/`, run by the ordinary training loop;
the demo only chains them (each stage starts from the previous export) and evaluates the result.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..train.loop import resolve_precision, train
from ..train.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)
REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "demo"


@dataclass(frozen=True)
class DemoOptions:
    output: Path = Path("runs/demo")
    recipes: Path = REPO_CONFIGS
    quick: bool = False
    """About 2 minutes: fewer steps per stage and fewer held-out questions."""
    aligner: bool = True
    """False runs the same stages without the aligner loss (the paper's PAL ablation)."""
    mnist_eval: int = 1000
    twemoji_eval: int = 200
    resume: bool = False
    eval_dtype: str = "auto"
    """The held-out evaluation's weights: "auto" is the precision the last stage trained in (bf16 on a CPU
    that multiplies it natively: 1.7x faster than float32 here), or "float32" / "bfloat16" / "float16"."""


TRAINED_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}
"""A stage's mixed precision -> the dtype its model is evaluated in when `eval_dtype` is "auto"."""


def resolve_eval_dtype(option: str, last_stage_precision: str) -> str:
    if option != "auto":
        return option
    return TRAINED_DTYPES.get(last_stage_precision, "float32")


def stage_overrides(options: DemoOptions, index: int, previous_export: Path | None) -> list[str]:
    """What the demo changes in a stage's recipe: where it writes, where it starts, the ablations."""
    overrides = [f"output_dir={options.output / f'stage{index + 1}'}"]
    if previous_export is not None:
        overrides.append(f"init_from={previous_export}")
    if not options.aligner:
        overrides += ["teacher=null", "align_weight=0", "optim.lr.aligner=0"]
    return overrides


def quick_recipe(recipe: Recipe) -> list[str]:
    """--quick: a tenth of the steps (at least 10) with the same recipe otherwise."""
    steps = max(10, (recipe.max_steps or 100) // 10)
    return [f"max_steps={steps}", f"checkpoint_every={steps + 1}", f"log_every={max(1, steps // 10)}"]


def run_demo(options: DemoOptions) -> dict[str, float]:
    files = sorted(options.recipes.glob("stage*.yaml"))
    if not files:
        raise SystemExit(f"eve-vlm demo: no stage*.yaml recipes in {options.recipes}")
    start = time.perf_counter()
    export: Path | None = None
    timings, precision = {}, {}
    for index, path in enumerate(files):
        overrides = stage_overrides(options, index, export)
        recipe = load_recipe(path, overrides)
        if options.quick:
            recipe = load_recipe(path, overrides + quick_recipe(recipe))
        print(f"\n== stage {index + 1}/{len(files)}: {recipe.name} ({recipe.max_steps} steps) ==", flush=True)
        precision[recipe.name] = resolve_precision(recipe.precision)
        stage_start = time.perf_counter()
        export = train(recipe, resume=options.resume)
        timings[recipe.name] = time.perf_counter() - stage_start
    assert export is not None
    final = options.output / "final"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(export, final, ignore=shutil.ignore_patterns("aligner"))  # inference model only
    train_seconds = time.perf_counter() - start
    print("\n== evaluating on held-out data ==", flush=True)
    from .report import evaluate_and_report

    run_info = {"train_seconds": round(train_seconds, 1),
                "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
                "aligner": options.aligner, "quick": options.quick,
                "precision": precision,
                "eval_dtype": resolve_eval_dtype(options.eval_dtype, precision[recipe.name])}
    stage_dirs = [options.output / f"stage{i + 1}" for i in range(len(files))]
    metrics = evaluate_and_report(final, stage_dirs, options.output, options.mnist_eval, options.twemoji_eval,
                                  run_info)
    metrics["total_seconds"] = round(time.perf_counter() - start, 1)
    (options.output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
