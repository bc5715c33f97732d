"""Demo runs side by side: held-out scores and each stage's losses at equal steps.

    python -m eve_vlm.demo.compare runs/demo runs/demo-no-aligner [--windows 4 2 2]

For each run (an `eve-vlm demo --output` folder): MNIST and Twemoji scores from `metrics.json`, then per
stage the mean CE (and alignment loss, where the run had the aligner) over equal windows of its steps,
read from `stageN/metrics.jsonl`. This is how docs/benchmarks.md compares runs with and without the
aligner.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .report import read_metrics

STAGES = ("stage1", "stage2", "stage3")


def window_means(rows: list[dict], key: str, windows: int) -> list[float]:
    """Mean of `key` over `windows` equal spans of the steps (a log line belongs to the span of its step)."""
    points = [(r["step"], r[key]) for r in rows if key in r]
    if not points:
        return []
    last = points[-1][0]
    if windows > last:
        raise ValueError(f"{windows} windows over {last} logged steps")
    means = []
    for i in range(windows):
        lo, hi = last * i / windows, last * (i + 1) / windows
        span = [value for step, value in points if lo < step <= hi]
        means.append(sum(span) / len(span) if span else float("nan"))
    return means


def describe(run: Path, windows: Sequence[int]) -> list[str]:
    """Lines describing one run: its scores, then each stage's window means."""
    metrics_file = run / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{metrics_file}: not a finished demo run (no metrics.json)")
    m = json.loads(metrics_file.read_text())
    lines = [f"{run}: aligner {'on' if m.get('aligner') else 'off'}; MNIST exact {m.get('mnist_accuracy', 0):.1f}% "
             f"of {m.get('mnist_n')}; Twemoji exact {m.get('twemoji_exact_match', 0):.1f}%, token F1 "
             f"{m.get('twemoji_token_f1', 0):.1f}% of {m.get('twemoji_n')}; training {m.get('train_seconds')} s"]
    for stage, count in zip(STAGES, windows):
        if not (run / stage / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{run / stage / 'metrics.jsonl'}: missing (was the run stopped?)")
        rows = read_metrics(run / stage)
        for key in ("ce", "align"):
            means = window_means(rows, key, count)
            if means:
                lines.append(f"  {stage} {key:<5} over {count} windows of {rows[-1]['step']} steps: "
                             + " / ".join(f"{v:.3f}" for v in means))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eve_vlm.demo.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="`eve-vlm demo --output` folders")
    parser.add_argument("--windows", type=int, nargs=3, default=(4, 2, 2), metavar=("S1", "S2", "S3"),
                        help="windows of steps per stage (default 4 2 2)")
    args = parser.parse_args(argv)
    for run in args.runs:
        print("\n".join(describe(run, args.windows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
