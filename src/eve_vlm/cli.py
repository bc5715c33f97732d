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
            if e.name and e.name.startswith("eve_vlm"):
                raise
            _add_unavailable(subparsers, area, e.name or "?")  # an optional dependency is missing
            continue
        module.add_commands(subparsers)
    return parser


def _add_unavailable(subparsers: argparse._SubParsersAction, area: str, missing: str) -> None:
    """A command whose optional dependency is not installed: it says so when it is used."""
    def fail(_: argparse.Namespace) -> int:
        raise SystemExit(f"eve-vlm {area}: needs the package {missing!r}; install it, e.g. "
                         f"pip install 'eve-vlm[{area}]'")

    parser = subparsers.add_parser(area, help=f"(unavailable: {missing} is not installed)")
    parser.set_defaults(func=fail, accepts_any_arguments=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
