"""`eve-vlm demo [--quick] [--no-aligner]`: the main job, offline on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a real EVE from SmolLM2 + DINOv2 on MNIST and Twemoji, offline, then evaluate",
        description="Three EVE stages (pre-align with the LLM frozen, pre-train, instruction-tune) on a CPU, "
                    "then exact-match evaluation on held-out MNIST digits and Twemoji.")
    parser.add_argument("--output", type=Path, default=Path("runs/demo"), help="where everything is written")
    parser.add_argument("--recipes", type=Path, default=None, help="folder of stage*.yaml (default: configs/demo)")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute version (a tenth of the steps, fewer questions)")
    parser.add_argument("--no-aligner", action="store_true", help="train without the PAL loss (ablation)")
    parser.add_argument("--mnist-eval", type=int, default=None, help="MNIST test digits to answer (default 1000; 100 with --quick)")
    parser.add_argument("--twemoji-eval", type=int, default=None, help="held-out emoji to answer (default 200; 50 with --quick)")
    parser.add_argument("--eval-dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="weights of the held-out evaluation (default: the precision the last stage trained in)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted stages from checkpoints")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .run import REPO_CONFIGS, DemoOptions, run_demo

    quick_eval = (100, 50) if args.quick else (DemoOptions.mnist_eval, DemoOptions.twemoji_eval)
    options = DemoOptions(output=args.output, recipes=args.recipes or REPO_CONFIGS, quick=args.quick,
                          aligner=not args.no_aligner, mnist_eval=args.mnist_eval or quick_eval[0],
                          twemoji_eval=args.twemoji_eval or quick_eval[1], resume=args.resume,
                          eval_dtype=args.eval_dtype)
    run_demo(options)
    return 0
