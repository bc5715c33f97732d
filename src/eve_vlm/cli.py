"""`eve-vlm <command>`: thin, typed entry points over the library.

Each area contributes its commands through `add_commands(subparsers)` in its `commands.py`;
this file only collects them, configures logging and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Areas whose commands.py defines add_commands(subparsers); missing optional extras are reported
# when the command runs, not at start-up.
COMMAND_MODULES = ("infer", "serve", "train", "demo", "eval", "convert", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eve-vlm", description="Encoder-free vision-language models (EVE).")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for area in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"eve_vlm.{area}.commands")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(f"eve_vlm.{area}"):
                continue  # this area has no commands yet
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
