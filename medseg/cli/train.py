"""``medseg train RECIPE``: train a recipe into a run folder and write its model folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a recipe (TOML)",
        description="Train a segmentation model from a TOML recipe (see pipelines/). Writes checkpoints, "
        "logs and the self-contained model folder RUN_DIR/model. A killed run continues "
        "exactly with --resume.",
    )
    parser.add_argument("recipe", type=Path, metavar="RECIPE", help="recipe TOML file, e.g. pipelines/hippocampus.toml")
    parser.add_argument(
        "-o", "--output", type=Path, metavar="RUN_DIR", help="run folder (default: runs/<recipe name>[-fold<K>])"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--fold", type=int, metavar="K", help='cross-validation fold (recipe split = "kfold")')
    parser.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="total wall-clock budget in minutes, earlier sessions of a resumed run included "
        "(overrides the recipe; kept by later --resume runs until given again)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="total epoch budget (overrides the recipe; kept by later --resume runs until given again)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="device (overrides the recipe)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def default_run_dir(recipe, fold: int | None) -> Path:
    """``runs/<recipe name>``, with ``-fold<K>`` for k-fold splits."""
    name = recipe.name.replace("/", "_")
    if recipe.dataset.split == "kfold":
        name += f"-fold{fold if fold is not None else recipe.dataset.fold}"
    return Path("runs") / name


def run(args: argparse.Namespace) -> int:
    """Train and print where the model folder is."""
    from medseg.errors import ConfigError
    from medseg.training.recipe import load_recipe
    from medseg.training.trainer import TrainOptions, train

    recipe = load_recipe(args.recipe)
    if args.fold is not None and recipe.dataset.split != "kfold":
        raise ConfigError(f'--fold needs a k-fold recipe; {args.recipe} uses split = "{recipe.dataset.split}"')
    run_dir = args.output or default_run_dir(recipe, args.fold)
    options = TrainOptions(
        run_dir,
        resume=args.resume,
        fold=args.fold,
        minutes=args.minutes,
        device=args.device,
        progress_bar=not args.no_progress,
        epochs=args.epochs,
    )
    folder = train(recipe, options)
    print(f"model folder: {folder}")
    return 0
