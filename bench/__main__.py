"""`python -m bench NAME [options]`: run one benchmark; without NAME, list them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS = {
    "vision": "vision-side FLOPs and CPU time: EVE's PEL vs CLIP-L/336 (LLaVA-1.5) vs Fuyu (paper Table 6)",
    "ttft": "time to first token and decode tokens/s: EVE vs LLaVA-1.5 vs Fuyu around one LLM",
    "train": "training step tokens/s, images/s and MFU (vs a measured fp32 matmul peak), padding fraction",
    "memory": "peak memory of a training step and of generation at each size (fresh process per case)",
    "vision_train": "PEL + aligner forward+backward: ours (batched) vs the reference's per-image loop style",
    "train_step": "a full training step (PEL + LLM + aligner): ours vs the reference code's path, same weights",
    "gpu": "the one prepared GPU script (also `PYTHONPATH=src python bench/gpu.py`); --smoke runs on CPU",
}


def usage() -> str:
    lines = ["usage: python -m bench NAME [options]   (NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<13} {text}" for name, text in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
