"""`eve-vlm train RECIPE.yaml [key=value ...]` and `eve-vlm train --recipe DIR` (stages in order)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train one stage (a recipe file) or all stages of a folder",
                                   description="Run a training stage from a recipe YAML. Overrides are "
                                               "key=value pairs, e.g. optim.lr.pel=1e-4 max_steps=100.")
    parser.add_argument("recipe_file", nargs="?", help="a stage's recipe YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of recipe fields")
    parser.add_argument("--recipe", dest="recipe_dir", help="a folder of stage recipes, run in file-name order")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.set_defaults(func=run_train)


def stage_files(directory: str | Path) -> list[Path]:
    files = sorted(Path(directory).glob("*.yaml")) + sorted(Path(directory).glob("*.yml"))
    if not files:
        raise SystemExit(f"eve-vlm train: no *.yaml recipes in {directory}")
    return sorted(files)


def run_train(args: argparse.Namespace) -> int:
    from .loop import train
    from .recipe import RecipeError, load_recipe

    if bool(args.recipe_file) == bool(args.recipe_dir):
        raise SystemExit("eve-vlm train: give a recipe file or --recipe DIR (one of them)")
    overrides = list(args.overrides)
    files = stage_files(args.recipe_dir) if args.recipe_dir else [Path(args.recipe_file)]
    if args.recipe_dir and args.recipe_file:
        overrides.insert(0, args.recipe_file)
    try:
        recipes = [load_recipe(f, overrides) for f in files[:1]]  # later stages need earlier exports
    except RecipeError as e:
        raise SystemExit(f"eve-vlm train: {files[0]}: {e}") from e
    for i, path in enumerate(files):
        try:
            recipe = recipes[0] if i == 0 else load_recipe(path, overrides)
        except RecipeError as e:
            raise SystemExit(f"eve-vlm train: {path}: {e}") from e
        logger.info("stage %d/%d: %s (%s)", i + 1, len(files), recipe.name, path)
        export = train(recipe, resume=args.resume)
        print(f"{recipe.name}: exported {export}")
    return 0
