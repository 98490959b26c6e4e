"""Train on MSD hippocampus within a wall-clock budget: 3D U-Net, 3D DeepLabV3+, 2D U-Net.

    python -m benchmarks.train_hippocampus [--minutes 30] [--device auto] [--out runs/bench]

Each model trains from its recipe in ``pipelines/`` on the 173 cases with the fixed 80/20 split
(seed 0: 138 training, 35 validation cases) for ``--minutes`` of wall-clock time, then the
validation Dice per class (sliding window, argmax, no post-processing) and the training
iterations per second are reported. Then fp32 and bf16 training iterations per second are
measured side by side (alternating rounds, same network, patch and real batches) for the 3D
U-Net. Prints the figures and writes the ``train_hippocampus`` section of docs/benchmarks.md.

``--reuse RECIPE=RUN_DIR`` takes a row from a run already trained with that recipe (same budget,
same machine) instead of training it again; the report names the rows that were reused.
``--models RECIPE ...`` trains only those recipes; the other models' rows are carried over from
the section already in docs/benchmarks.md, marked with the date they were measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from pathlib import Path

from benchmarks.repo import repo_path
from benchmarks.report import add_no_doc_option, machine_line, read_section, update_section

MODELS = (
    ("3D U-Net", "hippocampus.toml"),
    ("3D DeepLabV3+", "hippocampus_deeplab.toml"),
    ("2D U-Net", "hippocampus_2d.toml"),
)


def train_model(recipe_path: Path, minutes: float, run_dir: Path, device: str) -> dict:
    """Train one recipe under the budget (fresh run folder); returns model.json's metrics and spec bits."""
    import shutil

    from medseg.training.recipe import load_recipe
    from medseg.training.trainer import TrainOptions, train

    shutil.rmtree(run_dir, ignore_errors=True)
    recipe = load_recipe(recipe_path)
    folder = train(recipe, TrainOptions(run_dir, minutes=minutes, device=device, progress_bar=False))
    return model_result(folder)


def model_result(folder: Path) -> dict:
    """Metrics, patch, batch and post-processing of a model folder's model.json."""
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    return {
        "metrics": spec["metrics"],
        "patch": spec["network"]["patch_size"],
        "batch": spec["network"]["batch_size"],
        "postprocessing": spec["postprocessing"],
    }


def reused_result(recipe_path: Path, run_dir: Path, minutes: float) -> dict:
    """The row of a run already trained from ``recipe_path``: its optimiser, loss, model and
    augmentation must equal the recipe's and its budget must not exceed ``minutes``."""
    from medseg.training.recipe import Recipe, load_recipe

    result = model_result(run_dir / "model")
    spec = json.loads((run_dir / "model" / "model.json").read_text(encoding="utf-8"))
    used, wanted = Recipe.from_dict(spec["recipe"]), load_recipe(recipe_path)
    for part in ("model", "loss", "optimizer", "augmentation", "plan"):
        if getattr(used, part) != getattr(wanted, part):
            raise SystemExit(f"--reuse {run_dir}: its {part} differs from {recipe_path.name}; train it again")
    if result["metrics"]["training_seconds"] > minutes * 60 + 30:
        raise SystemExit(
            f"--reuse {run_dir}: trained {result['metrics']['training_seconds']:.0f} s, "
            f"over the {minutes:g}-minute budget"
        )
    return {**result, "reused": str(run_dir)}


def precision_speed(recipe_path: Path, run_dir: Path, device: str, iterations: int = 8, rounds: int = 2) -> dict:
    """Training iterations/s in fp32 and bf16 for the recipe's network and patch, alternating rounds.

    Batches are drawn once from the real loader and reused, so only the training step is timed.
    """
    import copy
    import itertools
    from dataclasses import replace

    from medseg.model.runtime import Runtime, cpu_supports_bf16, resolve_device
    from medseg.training.loop import TrainStep
    from medseg.training.optim import build_optimizer
    from medseg.training.recipe import load_recipe
    from medseg.training.session import build_session

    recipe = load_recipe(recipe_path)
    recipe = replace(recipe, runtime=replace(recipe.runtime, device=device))
    session = build_session(recipe, run_dir)
    target = resolve_device(device)
    if target.type == "cpu" and not cpu_supports_bf16():
        return {"fp32": None, "bf16": None, "note": "this CPU has no native bf16"}
    stream = session.batches(0)
    batches = [next(stream) for _ in range(4)]
    del stream
    steps = {}
    for precision in ("fp32", "bf16"):
        network = copy.deepcopy(session.network)
        steps[precision] = TrainStep(
            network,
            session.step.loss,
            build_optimizer(network.parameters(), recipe.optimizer),
            target,
            Runtime(target, precision, session.runtime.threads).autocast,
            None,
            recipe.optimizer.grad_clip,
            session.step.memory_format,
        )
    speeds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision, step in steps.items():
            source = itertools.cycle(batches)
            step(next(source))  # warm-up (allocations, oneDNN kernels)
            _sync(target)
            start = time.perf_counter()
            for _ in range(iterations):
                step(next(source))
            _sync(target)
            speeds[precision].append(iterations / (time.perf_counter() - start))
    return {p: statistics.median(v) for p, v in speeds.items()}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def earlier_rows(section: str) -> dict[str, tuple[str, str]]:
    """The model rows of an earlier ``train_hippocampus`` section, by model name: (row without its
    footnote mark, date it was measured). A row carried over once keeps its own date."""
    measured = re.search(r"Measured (\d{4}-\d{2}-\d{2})", section)
    carried = re.search(r"\(b\) not retrained in this run: measured (\d{4}-\d{2}-\d{2})", section)
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        mark = re.search(r"\s*\(([a-z])\)$", cells[0])
        name = cells[0][: mark.start()] if mark else cells[0]
        if len(cells) > 1 and name in dict(MODELS):
            source = carried if mark and mark.group(1) == "b" else measured
            rows[name] = ("| " + " | ".join([name, *cells[1:]]) + " |", source.group(1) if source else "earlier")
    return rows


def report(
    results: dict[str, dict], speed: dict, minutes: float, carried: dict[str, tuple[str, str]] | None = None
) -> str:
    """The markdown section; ``carried`` rows (model name -> (earlier table row, its date)) fill in
    models not trained in this run."""
    carried = carried or {}

    device = ", ".join(sorted({r["metrics"]["device"] for r in results.values()})) or "cpu"
    lines = [
        "## Training on MSD hippocampus (`python -m benchmarks.train_hippocampus`)",
        "",
        machine_line(),
        "",
        f"Fixed 80/20 split (seed 0) of the 173 cases: 138 training, 35 validation. Each model trained "
        f"from its recipe in `pipelines/` for a wall-clock budget of {minutes:g} min on `{device}`; Dice "
        "per class on the 35 validation cases (sliding window, argmax, no post-processing).",
        "",
        "| model | recipe | patch | batch | precision | iterations | iterations/s | Dice Anterior | "
        "Dice Posterior | mean Dice | keeps largest component |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe in MODELS:
        if name not in results:
            if name in carried:
                lines.append(carried[name][0].replace(f"| {name} |", f"| {name} (b) |", 1))
            continue
        result = results[name]
        m = result["metrics"]
        mark = " (a)" if result.get("reused") else ""
        lines.append(
            f"| {name}{mark} | `{recipe}` | {'x'.join(map(str, result['patch']))} | {result['batch']} | {m['precision']} | "
            f"{m['iterations']} | {m['iterations_per_second']:.2f} | {m['dice']['Anterior']:.4f} | "
            f"{m['dice']['Posterior']:.4f} | {m['mean_dice']:.4f} | "
            f"{result['postprocessing'].get('keep_largest_component', [])} |"
        )
    if any(r.get("reused") for r in results.values()):
        lines += [
            "",
            "(a) trained earlier in the same session on this machine with the same recipe and budget "
            "(`--reuse`), not again in this run.",
        ]
    dates = sorted({carried[name][1] for name, _ in MODELS if name in carried and name not in results})
    if dates:
        lines += [
            "",
            f"(b) not retrained in this run: measured {' and '.join(dates)} on this machine with the "
            "same recipe and budget (row carried over by `--models`).",
        ]
    lines += [
        "",
        "Iterations/s above include data loading and DataLoader start-up. Training step speed, "
        "3D U-Net (same network, patch and real batches; median of alternating rounds, data loading "
        "excluded):",
        "",
    ]
    if speed.get("fp32"):
        lines += [
            "| precision | iterations/s | relative to fp32 |",
            "|---|---|---|",
            f"| fp32 | {speed['fp32']:.2f} | 1.00 |",
            f"| bf16 autocast | {speed['bf16']:.2f} | {speed['bf16'] / speed['fp32']:.2f} |",
        ]
    else:
        lines.append(f"not measured: {speed.get('note')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per model (default 30)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=repo_path("runs", "benchmarks", "train_hippocampus"))
    parser.add_argument("--speed-iterations", type=int, default=8, help="timed iterations per precision and round")
    parser.add_argument("--speed-rounds", type=int, default=2, help="alternating fp32/bf16 rounds (median reported)")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="RECIPE=RUN_DIR",
        help="take this recipe's row from a run folder trained with it (e.g. hippocampus.toml=runs/x)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="RECIPE",
        default=[r for _, r in MODELS],
        help="train only these recipes; the others' rows stay as measured before",
    )
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reuse = dict(item.split("=", 1) for item in args.reuse)
    for option, given in (("--reuse", set(reuse)), ("--models", set(args.models))):
        unknown = given - {recipe for _, recipe in MODELS}
        if unknown:
            parser.error(f"{option}: unknown recipe {sorted(unknown)}; choose from {[r for _, r in MODELS]}")
    results = {}
    for name, recipe in MODELS:
        if recipe not in args.models:
            continue
        start = time.perf_counter()
        if recipe in reuse:
            results[name] = reused_result(repo_path("pipelines") / recipe, Path(reuse[recipe]), args.minutes)
        else:
            results[name] = train_model(
                repo_path("pipelines") / recipe, args.minutes, args.out / Path(recipe).stem, args.device
            )
        m = results[name]["metrics"]
        print(
            f"{name}: Dice {m['dice']} mean {m['mean_dice']:.4f}, {m['iterations']} iterations at "
            f"{m['iterations_per_second']:.2f} it/s ({m['precision']}), {time.perf_counter() - start:.0f} s in all"
        )
    speed = precision_speed(
        repo_path("pipelines") / MODELS[0][1],
        args.out / "precision",
        args.device,
        args.speed_iterations,
        args.speed_rounds,
    )
    print(f"3D U-Net training step: fp32 {speed.get('fp32')} it/s, bf16 {speed.get('bf16')} it/s")
    markdown = report(results, speed, args.minutes, earlier_rows(read_section("train_hippocampus")))
    print(markdown)
    if not args.no_doc:
        update_section("train_hippocampus", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
