"""Batch throughput on MSD hippocampus: cases per hour, model loading, and where the time goes.

    python -m benchmarks.batch --model runs/hippocampus-3d-unet/model [--cases 40] [--out DIR]

Side by side in one run, on the same ``--cases`` hippocampus images (every configuration writes
labels, statistics and the QC picture, on the CPU unless ``--device`` says otherwise):

* ``medseg batch`` with 1 and 2 local workers (the model loaded once per worker);
* ``medseg batch --executor ray`` with 2 actors, when Ray is installed;
* a plain loop calling ``medseg predict`` once per case (a new process, so a model load, per case).

Cases per hour count the whole command (start-up and model loading included). The breakdown
(read, preprocess, network, inverse, postprocess, write) is the mean of the per-case timings that
inference reports, read back from the ledger. Prints the table and writes the ``batch`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.repo import shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section

STAGES = ("read", "preprocess", "network", "inverse", "postprocess", "write")


def prepare_inputs(data: Path, n: int, folder: Path) -> list[Path]:
    """Links to the first ``n`` hippocampus images (sorted) in ``folder``."""
    images = sorted((data / "imagesTr").glob("*.nii.gz"))[:n]
    if len(images) < n:
        raise SystemExit(f"{data}/imagesTr has {len(images)} images, fewer than --cases {n}")
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.name).symlink_to(image.resolve())
    return images


def run_batch(inputs: Path, model: Path, out: Path, workers: int, executor: str, device: str) -> dict:
    """Run ``medseg batch`` as its own process; returns wall seconds and ledger figures."""
    shutil.rmtree(out, ignore_errors=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [
        sys.executable,
        "-m",
        "medseg",
        "-q",
        "batch",
        str(inputs),
        "-m",
        str(model),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--executor",
        executor,
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"medseg batch failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return {"seconds": seconds, **ledger_figures(out)}


def ledger_figures(out: Path) -> dict:
    """Done cases, model loads and mean per-stage seconds from a batch's ledger."""
    from medseg.batch.ledger import Ledger

    with Ledger(out / "ledger.sqlite", readonly=True) as ledger:
        rows = [r for r in ledger.rows() if r.status == "done"]
        loads = ledger.model_loads()
    stages = {s: statistics.mean(r.timings.get(s, 0.0) for r in rows) for s in STAGES} if rows else {}
    return {
        "done": len(rows),
        "loads": len(loads),
        "load_seconds": statistics.mean(l["seconds"] for l in loads),
        "case_seconds": statistics.mean(r.seconds or 0.0 for r in rows),
        "stages": stages,
    }


def run_predict_loop(images: list[Path], model: Path, out: Path, device: str) -> dict:
    """``medseg predict`` once per case, each a new process; returns wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    for image in images:
        command = [
            sys.executable,
            "-m",
            "medseg",
            "-q",
            "predict",
            "-m",
            str(model),
            "-i",
            str(image),
            "-o",
            str(out),
            "--device",
            device,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"medseg predict failed on {image.name}: {result.stderr.strip()[-2000:]}")
    return {"seconds": time.perf_counter() - start, "done": len(images), "loads": len(images)}


def ray_available() -> bool:
    """True when Ray can be imported."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def markdown(results: dict[str, dict], n: int, model: Path, machine: str) -> str:
    """The docs/benchmarks.md section."""
    lines = [
        "## Batch throughput (`python -m benchmarks.batch`)",
        "",
        f"{n} MSD hippocampus cases, model `{model.name}`; whole commands timed (start-up and model loading "
        "included), run one after another on the same machine. " + machine,
        "",
        "| configuration | cases/hour | wall s | model loads | mean load s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        load = f"{r['load_seconds']:.1f}" if "load_seconds" in r else "n/a"
        lines.append(f"| {name} | {3600 * r['done'] / r['seconds']:.0f} | {r['seconds']:.1f} | {r['loads']} | {load} |")
    rate = {name: r["done"] / r["seconds"] for name, r in results.items()}
    one = next((v for k, v in rate.items() if k.startswith("medseg batch, 1 worker")), None)
    loop = next((v for k, v in rate.items() if k.startswith("loop of")), None)
    if one and loop:
        lines += [
            "",
            f"Batch with 1 worker vs the per-case loop: **{one / loop:.1f}x** the cases per hour "
            "(target 1.5x); the loop pays Python start-up and model loading once per case.",
        ]
    breakdown = next((r for r in results.values() if r.get("stages")), None)
    if breakdown:
        total = sum(breakdown["stages"].values()) or 1.0
        lines += [
            "",
            "Where a case's time goes (mean per case, 1 worker, from the inference timings):",
            "",
            "| stage | seconds | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| {s} | {v:.3f} | {100 * v / total:.0f}% |" for s, v in breakdown["stages"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every configuration, print the table, write docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="trained hippocampus model folder")
    parser.add_argument("--cases", type=int, default=40, help="number of hippocampus cases (default 40)")
    parser.add_argument(
        "--data",
        type=Path,
        default=shared_data("msd_hippocampus"),
        help="MSD hippocampus folder (default ../shared/data/msd_hippocampus)",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary folder, removed after)")
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="medseg-batch-bench-"))
    try:
        images = prepare_inputs(args.data, args.cases, work / "input")
        results: dict[str, dict] = {}
        results["medseg batch, 1 worker"] = run_batch(work / "input", args.model, work / "b1", 1, "local", args.device)
        results["medseg batch, 2 workers"] = run_batch(work / "input", args.model, work / "b2", 2, "local", args.device)
        if ray_available():
            results["medseg batch --executor ray, 2 actors"] = run_batch(
                work / "input", args.model, work / "ray", 2, "ray", args.device
            )
        results["loop of `medseg predict` per case"] = run_predict_loop(images, args.model, work / "loop", args.device)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(results, args.cases, args.model, machine_line())
    print(text)
    if not args.no_doc:
        update_section("batch", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
