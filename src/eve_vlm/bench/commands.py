"""`eve-vlm bench [NAME] [options]`: run one of the benchmarks of a source checkout's bench/ folder.

The benchmarks are not part of the installed package (they compare against other models and write
tables); they live beside the sources. This command finds the checkout (the current directory or
one above it, else the one this package was installed from in editable mode), puts it on
`sys.path` and runs `bench.__main__.main`, exactly like `python -m bench NAME` there.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

NOT_A_CHECKOUT = ("eve-vlm bench: the benchmarks live in the bench/ folder of a source checkout of eve-vlm, and "
                  "none was found (looked in {places}). Run this from a checkout (git clone, then `pip install -e .`), "
                  "or run `python -m bench NAME` from its root.")


def find_checkout(start: Path | None = None) -> Path | None:
    """The nearest folder holding bench/__main__.py and src/eve_vlm: the working directory or a parent,
    else the checkout this package was imported from (an editable install)."""
    start = (start or Path.cwd()).resolve()
    package_root = Path(__file__).resolve().parents[3]  # <checkout>/src/eve_vlm/bench/commands.py
    for candidate in (start, *start.parents, package_root):
        if (candidate / "bench" / "__main__.py").is_file() and (candidate / "src" / "eve_vlm").is_dir():
            return candidate
    return None


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="run a benchmark (vision, ttft, train, memory, vision_train, gpu) from a source checkout",
        description="Run one benchmark of the checkout's bench/ folder; without NAME, list them. Options after "
                    "NAME go to the benchmark (e.g. `eve-vlm bench vision --smoke --output v.json`).")
    bench.add_argument("name", nargs="?", help="the benchmark; omit to list them")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark (NAME --help lists them)")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    checkout = find_checkout()
    if checkout is None:
        places = f"{Path.cwd()} and its parents, and {Path(__file__).resolve().parents[3]}"
        print(NOT_A_CHECKOUT.format(places=places), file=sys.stderr)
        return 2
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    runner = importlib.import_module("bench.__main__")
    return runner.main([args.name, *args.options] if args.name else [])
