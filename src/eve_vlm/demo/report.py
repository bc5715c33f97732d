"""The demo's results: a table in the terminal, `report.md`, loss curves and a grid of answers (PNG)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..infer import Generator, load_model
from .evaluate import Answer, answer_heldout, score

logger = logging.getLogger(__name__)


def evaluate_and_report(final: Path, stage_dirs: list[Path], output: Path, mnist: int, twemoji: int,
                        run_info: dict[str, Any]) -> dict[str, Any]:
    model, processor = load_model(final, dtype=run_info.get("eval_dtype", "auto"))
    answers = answer_heldout(Generator(model, processor), mnist, twemoji)
    metrics: dict[str, Any] = {**score(answers), **run_info}
    table = results_table(metrics)
    print("\n" + table)
    print("\nA few held-out images:")
    for answer in _examples(answers):
        print(f"  [{answer.task}] expected {answer.expected!r:<32} answered {answer.answer!r}")
    curves = plot_losses(stage_dirs, output / "loss_curves.png")
    grid = plot_answers(_examples(answers, 16), output / "heldout_answers.png")
    write_report(output / "report.md", table, metrics, curves, grid, _examples(answers, 12))
    print(f"\nmodel: {final}\nreport: {output / 'report.md'}")
    return metrics


def results_table(metrics: dict[str, Any]) -> str:
    rows = [("MNIST test digits, exact answer", metrics.get("mnist_accuracy"), metrics.get("mnist_n")),
            ("Twemoji held-out, exact name", metrics.get("twemoji_exact_match"), metrics.get("twemoji_n")),
            ("Twemoji held-out, token F1", metrics.get("twemoji_token_f1"), metrics.get("twemoji_n"))]
    lines = ["| held-out task | score (%) | questions |", "|---|---|---|"]
    lines += [f"| {name} | {value:.1f} | {n} |" for name, value, n in rows if value is not None]
    return "\n".join(lines)


def _examples(answers: list[Answer], count: int = 8) -> list[Answer]:
    """An even mix of digits and emoji, the first ones of each task (deterministic)."""
    digits = [a for a in answers if a.task == "mnist"][: count // 2]
    emoji = [a for a in answers if a.task == "twemoji"][: count - len(digits)]
    return digits + emoji


def read_metrics(stage_dir: Path) -> list[dict[str, Any]]:
    """The log lines of one stage (`metrics.jsonl`: step, loss, ce, align, throughput, ...)."""
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def plot_losses(stage_dirs: list[Path], path: Path) -> Path | None:
    """CE and alignment loss of every stage on one step axis, stages marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    for i, directory in enumerate(stage_dirs):
        if not (directory / "metrics.jsonl").exists():
            continue
        rows = read_metrics(directory)
        for key, style in (("ce", "-"), ("align", "--")):
            points = [(offset + r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), style, color=f"C{i}", label=f"stage {i + 1} {key}")
        offset += rows[-1]["step"] if rows else 0
        ax.axvline(offset, color="grey", lw=0.5)
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_answers(answers: list[Answer], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cols = 4
    rows = max(1, -(-len(answers) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows))
    for ax in getattr(axes, "flat", [axes]):
        ax.axis("off")
    for ax, answer in zip(getattr(axes, "flat", [axes]), answers):
        ax.imshow(answer.image)
        right = answer.answer.strip().lower() == answer.expected.lower()
        ax.set_title(f"{answer.answer[:22]!r}\n(true: {answer.expected[:22]})", fontsize=8,
                     color="green" if right else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(path: Path, table: str, metrics: dict[str, Any], curves: Path | None, grid: Path | None,
                 examples: list[Answer]) -> None:
    lines = ["# eve-vlm demo", "",
             "An EVE (no vision encoder) built around SmolLM2-135M-Instruct, trained in three stages on "
             "MNIST digits and Twemoji on this machine's CPU, evaluated on held-out images it never saw.", "",
             table, "",
             f"Aligner (PAL) loss: {'on' if metrics.get('aligner') else 'off'}; quick: {metrics.get('quick')}; "
             f"precision: {metrics.get('precision')}, evaluated in {metrics.get('eval_dtype')}; "
             f"training time: {metrics.get('train_seconds')} s {metrics.get('stage_seconds')}.", ""]
    if curves:
        lines += ["## Loss curves", "", f"![loss curves]({curves.name})", ""]
    if grid:
        lines += ["## Held-out answers", "", f"![held-out answers]({grid.name})", ""]
    lines += ["| task | expected | answer |", "|---|---|---|"]
    lines += [f"| {a.task} | {a.expected} | {a.answer} |" for a in examples]
    path.write_text("\n".join(lines) + "\n")
