"""``medseg plan DATASET``: fingerprint a training dataset and write its plan as editable JSON."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` subcommand."""
    parser = subparsers.add_parser(
        "plan",
        help="plan preprocessing, patch size and networks for a training dataset",
        description=(
            "Read every case of a dataset (MSD/nnU-Net folder with dataset.json, or a CSV manifest), "
            "check it, and write a plan: target spacing, normalisation, 3D and 2D patch/batch sizes "
            "and U-Net topologies. The JSON may be edited and given to a recipe as [plan] file."
        ),
    )
    parser.add_argument("dataset", type=Path, help="dataset folder (with dataset.json) or CSV manifest")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("plan.json"), help="plan file to write (default: plan.json)"
    )
    parser.add_argument(
        "--memory-gb", type=float, default=8.0, help="accelerator memory budget for training (default: 8)"
    )
    parser.add_argument(
        "--max-cases", type=int, default=None, help="fingerprint only this many cases, spread evenly (default: all)"
    )
    parser.add_argument("--workers", type=int, default=2, help="threads reading cases (default: 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan the dataset, write the JSON and print a summary."""
    from medseg.errors import ConfigError
    from medseg.training.dataset import load_dataset
    from medseg.training.planner import plan_dataset

    if args.memory_gb <= 0:
        raise ConfigError(f"--memory-gb must be positive, got {args.memory_gb}")
    spec = load_dataset(args.dataset)
    plan = plan_dataset(spec, memory_budget_gb=args.memory_gb, max_cases=args.max_cases, workers=args.workers)
    plan.save(args.output)
    print(summary(plan))
    print(f"wrote {args.output}")
    return 0


def summary(plan) -> str:
    """A few readable lines describing a plan."""
    fp = plan.fingerprint
    lines = [
        f"dataset {plan.name}: {fp.get('n_cases', '?')} cases, channels {', '.join(plan.channels)}, "
        f"classes {', '.join(f'{k}={v}' for k, v in plan.labels.items())}",
        f"target spacing {_mm(plan.target_spacing)} mm; median shape at target "
        f"{fp.get('median_shape_at_target') or fp.get('shape', {}).get('median')}",
        "normalisation " + ", ".join(n.scheme for n in plan.normalization),
    ]
    for dims in (3, 2):
        c = plan.config(dims)
        extra = f" (slices across axis {plan.slice_axis})" if dims == 2 else ""
        lines.append(
            f"{dims}D{extra}: patch {'x'.join(map(str, c.patch_size))}, batch {c.batch_size}, "
            f"{len(c.features)} stages {'/'.join(map(str, c.features))}"
        )
    if plan.instances is not None:
        o = plan.instances
        lines.append(
            f"objects: diameter p5/p50/p95 {'/'.join(f'{d:g}' for d in o.diameter)} voxels, smallest kept "
            f"{o.min_size}, anchors {'/'.join(map(str, o.anchor_sizes))} x {'/'.join(f'{r:g}' for r in o.aspect_ratios)}, "
            f"tile overlap {o.tile_overlap}" + (" (pixel grid: no resampling)" if plan.pixel_grid else "")
        )
    return "\n".join(lines)


def _mm(values) -> str:
    return " x ".join(f"{v:g}" for v in values)
