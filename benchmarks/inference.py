"""Inference benchmark: ``python -m benchmarks.inference [--model FOLDER]``.

Measures, side by side in one run:

1. the machine's matmul ceiling (4096x4096, fp32 and bf16) and the network's achieved GFLOP/s;
2. hippocampus cases end to end (read -> write, N cases, one model load);
3. network only: medseg's sliding window vs MONAI ``sliding_window_inference`` with its defaults
   and with medseg's settings, TTA off and on, and the label agreement (Dice) between them;
4. each backend (torch fp32/bf16, ONNX Runtime, OpenVINO fp32/bf16 when installed): seconds and
   label agreement with torch fp32;
5. a CT-sized synthetic volume (512x512x300) through a CT-style nnU-Net network, medseg vs a
   MONAI transform pipeline with its defaults: seconds and peak RSS, each in a fresh subprocess.

Without ``--model`` a randomly initialised model folder is made from the planner's hippocampus
plan (speed figures only; label agreement then compares random networks). Writes the
``inference`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.repo import ROOT, shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section

HIPPO = shared_data("msd_hippocampus")
CT_SPACING_IN = (0.8, 0.8, 1.5)
CT_PLAN_SPACING = (3.0, 3.0, 3.0)


# ----------------------------------------------------------------------------- helpers
def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def dice_fg(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either array (1.0 when both are empty)."""
    scores = []
    for c in sorted(set(np.unique(a)) | set(np.unique(b))):
        if c == 0:
            continue
        x, y = a == c, b == c
        scores.append(2.0 * np.logical_and(x, y).sum() / max(1, x.sum() + y.sum()))
    return float(np.mean(scores)) if scores else 1.0


def matmul_ceiling(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on the CPU (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    seconds, _ = timed(lambda: torch.matmul(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def network_flops(network: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass on a zero tensor of ``shape`` (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(torch.zeros(shape))
    return float(counter.get_total_flops())


def hippocampus_cases(n: int) -> list[Path]:
    images = sorted((HIPPO / "imagesTr").glob("*.nii.gz"))
    if not images:
        raise SystemExit(f"hippocampus data not found under {HIPPO}")
    return images[:n]


def random_model(folder: Path, plan: Any, labels: dict[int, str]) -> Path:
    """A randomly initialised nnU-Net-style U-Net model folder for ``plan`` (speed figures only)."""
    from medseg.model.folder import ModelSpec, save_model_folder
    from medseg.networks import build_model

    torch.manual_seed(0)
    out = max(labels) + 1
    network = build_model("unet", 3, len(plan.channels), out, plan.config_3d)
    spec = ModelSpec(
        family="unet",
        spatial_dims=3,
        in_channels=len(plan.channels),
        out_channels=out,
        labels=labels,
        network=asdict(plan.config_3d),
    )
    return save_model_folder(folder, network, spec, plan)


def hippocampus_model(folder: Path) -> Path:
    from medseg.training.dataset import load_dataset
    from medseg.training.planner import plan_dataset

    spec = load_dataset(HIPPO)
    plan = plan_dataset(spec, max_cases=40, workers=1)
    return random_model(folder, plan, dict(spec.labels))


def ct_model(folder: Path) -> Path:
    """A CT-style plan at 3 mm (TotalSegmentator --fast-like) with a 5-stage nnU-Net U-Net."""
    from medseg.model.plan import NetworkConfig, Normalization, Plan

    config_3d = NetworkConfig(
        (96, 96, 96), 2, (32, 64, 128, 256, 320), ((3, 3, 3),) * 5, ((1, 1, 1),) + ((2, 2, 2),) * 4
    )
    config_2d = NetworkConfig((128, 128), 12, (32, 64, 128, 256), ((3, 3),) * 4, ((1, 1),) + ((2, 2),) * 3)
    plan = Plan(
        name="ct-synthetic",
        channels=("CT",),
        labels={0: "background", 1: "organ", 2: "lesion"},
        target_spacing=CT_PLAN_SPACING,
        normalization=(Normalization("ct", -200.0, 300.0, 50.0, 120.0),),
        config_3d=config_3d,
        config_2d=config_2d,
        slice_axis=2,
    )
    return random_model(folder, plan, dict(plan.labels))


# ----------------------------------------------------------------------------- 1+3: network only
def monai_window(
    forward: Callable, image: torch.Tensor, patch: tuple[int, ...], tta: bool, matched: bool, tiles: int
) -> torch.Tensor:
    """MONAI sliding_window_inference (defaults, or medseg's settings when ``matched``), manual flip TTA."""
    from monai.inferers import sliding_window_inference

    kwargs = dict(overlap=0.5, mode="gaussian", sigma_scale=0.125) if matched else {}
    batch = tiles if matched else 1

    def once(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(x, patch, batch, forward, **kwargs)

    with torch.inference_mode():
        x = image[None]
        total = once(x)
        if tta:
            import itertools

            combos = [c for r in range(1, 4) for c in itertools.combinations((2, 3, 4), r)]
            for dims in combos:
                total = total + torch.flip(once(torch.flip(x, dims)), dims)
            total = total / (len(combos) + 1)
    return total[0]


def interleaved(variants: dict[str, Callable[[Any], Any]], items: list[Any], repeats: int) -> tuple[dict, dict]:
    """Run every variant on every item in turn (round robin, so load bursts on the shared machine
    hit all variants alike); per item keep the best of ``repeats``. Returns total seconds and the
    last outputs per variant."""
    best = {name: [float("inf")] * len(items) for name in variants}
    outputs: dict[str, list[Any]] = {name: [None] * len(items) for name in variants}
    for _ in range(repeats):
        for n, item in enumerate(items):
            for name, fn in variants.items():
                start = time.perf_counter()
                outputs[name][n] = fn(item)
                best[name][n] = min(best[name][n], time.perf_counter() - start)
    return {name: float(sum(v)) for name, v in best.items()}, outputs


def network_only(predictor: Any, arrays: list[np.ndarray], tta_values: tuple[bool, ...], repeats: int) -> dict:
    """medseg vs MONAI windowing on preprocessed arrays with the same network call."""
    from medseg.inference.sliding import predict_volume

    model = predictor.models[0]
    classes = model.spec.out_channels
    rows = {}
    for tta in tta_values:
        window = model.window(0.5, predictor.tiles_per_batch, tta)
        variants = {
            "medseg": lambda a, w=window: (
                predict_volume(model.backend, torch.from_numpy(a), classes, w, model.plan.slice_axis).argmax(0).numpy()
            ),
            "monai_defaults": lambda a, t=tta: (
                monai_window(model.backend, torch.from_numpy(a), model.patch_size, t, False, 1).argmax(0).numpy()
            ),
            "monai_matched": lambda a, t=tta: (
                monai_window(model.backend, torch.from_numpy(a), model.patch_size, t, True, predictor.tiles_per_batch)
                .argmax(0)
                .numpy()
            ),
        }
        variants["medseg"](arrays[0])  # warm-up
        seconds, labels = interleaved(variants, arrays, repeats)
        for name in variants:
            dice = float(np.mean([dice_fg(a, b) for a, b in zip(labels[name], labels["medseg"])]))
            rows[(name, tta)] = {"seconds": seconds[name], "dice_vs_medseg": dice}
    return rows


def tile_count(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    from medseg.inference.sliding import tile_grid

    padded = [max(s, p) for s, p in zip(shape, patch)]
    return len(tile_grid(padded, patch, overlap))


# ----------------------------------------------------------------------------- 2: end to end
def end_to_end(model: Path, cases: list[Path], out: Path, tta: str, threads: int, cache: Path) -> dict[str, Any]:
    """medseg's defaults (backend auto) from file to files; model load counted once."""
    from medseg.inference import OutputOptions, PredictOptions, Predictor, predict_case

    start = time.perf_counter()
    with Predictor.from_folders([model], PredictOptions(tta=tta, threads=threads, cache_dir=str(cache))) as predictor:
        load = time.perf_counter() - start
        results = [predict_case(predictor, case, out, OutputOptions()) for case in cases]
    total = time.perf_counter() - start
    stages = ("read", "preprocess", "network", "inverse", "postprocess", "write")
    mean = {s: float(np.mean([r.timings.get(s, 0.0) for r in results])) for s in stages}
    return {
        "total": total,
        "load": load,
        "per_case": (total - load) / len(cases),
        "stages": mean,
        "precision": predictor.runtime.precision,
        "backend": predictor.models[0].backend.name,
    }


# ----------------------------------------------------------------------------- 4: backends
def backends(model: Path, volumes: list[Any], threads: int, workdir: Path, repeats: int) -> list[dict[str, Any]]:
    """Each backend's seconds (round robin over cases, best of ``repeats``) and label agreement."""
    import importlib.util

    from medseg.inference import PredictOptions, Predictor
    from medseg.inference.export import export_model_folder
    from medseg.model.runtime import cpu_supports_bf16

    export = workdir / "onnx"
    have_onnx = importlib.util.find_spec("onnx") is not None
    if have_onnx:
        export_model_folder(model, export)
    variants = [("torch", "fp32", model), ("torch", "bf16", model)]
    if have_onnx and importlib.util.find_spec("onnxruntime"):
        variants.append(("onnxruntime", "fp32", export))
    if have_onnx and importlib.util.find_spec("openvino"):
        variants += [("openvino", "fp32", export), ("openvino", "bf16", export)]
    variants = [v for v in variants if v[1] != "bf16" or cpu_supports_bf16()]
    predictors = {}
    for backend, precision, folder in variants:
        start = time.perf_counter()
        predictor = Predictor.from_folders(
            [folder], PredictOptions(device="cpu", backend=backend, precision=precision, threads=threads)
        )
        predictor.predict(volumes[:1])  # warm-up: kernel selection, graph compilation
        predictors[(backend, precision)] = (predictor, time.perf_counter() - start)
    calls = {key: (lambda v, p=p: p.predict([v]).labels.array) for key, (p, _) in predictors.items()}
    seconds, labels = interleaved(calls, volumes, repeats)
    reference = labels[("torch", "fp32")]
    rows = []
    for key, (predictor, startup) in predictors.items():
        predictor.close()
        agree = float(np.mean([(a == b).mean() for a, b in zip(labels[key], reference)]))
        dice = float(np.mean([dice_fg(a, b) for a, b in zip(labels[key], reference)]))
        rows.append(
            {
                "backend": key[0],
                "precision": key[1],
                "seconds": seconds[key],
                "startup": startup,
                "per_case": seconds[key] / len(volumes),
                "voxel_agreement": agree,
                "dice_vs_torch_fp32": dice,
            }
        )
    return rows


# ----------------------------------------------------------------------------- 5: CT subprocess
def synthetic_ct(shape: tuple[int, int, int]) -> Any:
    """An int16 HU-like volume with a body ellipse, an organ and a lesion (deterministic)."""
    from medseg.volume import Volume

    i, j = np.ogrid[: shape[0], : shape[1]]
    ci, cj = shape[0] / 2, shape[1] / 2
    body = ((i - ci) / (0.45 * shape[0])) ** 2 + ((j - cj) / (0.35 * shape[1])) ** 2 <= 1
    organ = ((i - ci * 1.2) / (0.12 * shape[0])) ** 2 + ((j - cj) / (0.1 * shape[1])) ** 2 <= 1
    array = np.full(shape, -1000, dtype=np.int16)
    slab = np.where(body, 40, -1000).astype(np.int16)
    slab[organ] = 120
    array[:, :, :] = slab[:, :, None]
    array[:, :, : shape[2] // 6] = -1000
    affine = np.diag([-CT_SPACING_IN[0], -CT_SPACING_IN[1], CT_SPACING_IN[2], 1.0])
    affine[:3, 3] = [200.0, 200.0, -300.0]
    return Volume(array, affine)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: ``VmHWM`` from /proc (reset by exec, unlike
    ``ru_maxrss``, which a child inherits from its parent on Linux); ``ru_maxrss`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ct_worker(kind: str, model: Path, shape: tuple[int, int, int], threads: int, cache: Path) -> dict[str, Any]:
    """Run one CT pipeline in this (fresh) process; report seconds and peak RSS."""
    torch.set_num_threads(threads)
    volume = synthetic_ct(shape)
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    if kind.startswith("medseg"):
        from medseg.inference import PredictOptions, Predictor

        options = PredictOptions(device="cpu", threads=threads, cache_dir=str(cache), fast=kind == "medseg-fast")
        predictor = Predictor.from_folders([model], options)
        prediction = predictor.predict([volume])
        labels, stages = prediction.labels.array, prediction.timings
    else:
        labels, stages = monai_ct(volume, model)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {
        "kind": kind,
        "seconds": seconds,
        "stages": stages,
        "peak_rss_mb": peak,
        "base_rss_mb": base_rss,
        "shape": list(labels.shape),
        "foreground_fraction": float((np.asarray(labels) > 0).mean()),
    }


def monai_ct(volume: Any, model: Path) -> tuple[np.ndarray, dict[str, float]]:
    """A MONAI pipeline with its defaults: Orientation, Spacing, intensity scaling; sliding window
    (overlap 0.25, constant blending, 1 tile per call, fp32); softmax; Invertd; argmax."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import AsDiscreted, Compose, Invertd, Orientationd, ScaleIntensityRanged, Spacingd

    from medseg.model.folder import load_model_folder

    trained = load_model_folder(model)
    norm = trained.plan.normalization[0]
    low, high = (norm.clip_low - norm.mean) / norm.std, (norm.clip_high - norm.mean) / norm.std
    pre = Compose(
        [
            Orientationd("image", "RAS"),
            Spacingd("image", pixdim=trained.plan.target_spacing, mode="bilinear"),
            ScaleIntensityRanged("image", norm.clip_low, norm.clip_high, low, high, clip=True),
        ]
    )
    stages = {}
    start = time.perf_counter()
    data = pre({"image": volume.to_monai().float()})
    stages["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        pred = sliding_window_inference(data["image"][None], trained.plan.config_3d.patch_size, 1, trained.network)
    pred = torch.softmax(pred, 1)[0]
    stages["network"] = time.perf_counter() - start
    start = time.perf_counter()
    post = Compose(
        [
            Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False),
            AsDiscreted(keys="pred", argmax=True),
        ]
    )
    out = post({"pred": pred, "image": data["image"]})["pred"]
    stages["inverse"] = time.perf_counter() - start
    return np.asarray(out[0]).astype(np.uint8), stages


def run_ct(
    kind: str, model: Path, shape: tuple[int, int, int], threads: int, timeout: float, cache: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.inference",
        "--ct-worker",
        kind,
        "--ct-model",
        str(model),
        "--ct-shape",
        *map(str, shape),
        "--threads",
        str(threads),
        "--ct-cache",
        str(cache),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"kind": kind, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
WINDOW_NAMES = {
    "medseg": "medseg (overlap 0.5, Gaussian, {tiles} tiles/call)",
    "monai_defaults": "MONAI defaults (overlap 0.25, constant, 1 tile/call)",
    "monai_matched": "MONAI with medseg's settings (overlap 0.5, Gaussian, {tiles} tiles/call)",
}
STAGES = ("read", "preprocess", "network", "inverse", "postprocess", "write")


def markdown(r: dict[str, Any]) -> str:
    """The docs/benchmarks.md section for one run's results."""
    lines = ["## Inference", "", machine_line() + f" Threads: {r['threads']}.", "", f"Model: {r['model_note']}", ""]
    for section in (_md_ceiling, _md_end_to_end, _md_windowing, _md_backends, _md_ct):
        lines += section(r) + [""]
    lines += [
        "All figures from one run of `python -m benchmarks.inference`; the machine is shared, so "
        "compare rows of one table rather than across runs."
    ]
    return "\n".join(lines)


def _md_ceiling(r: dict[str, Any]) -> list[str]:
    c, precision = r["ceiling"], r["precision"]
    share = r["achieved_gflops"] / c.get(precision, c["fp32"]) * 100
    return [
        "### Compute ceiling and achieved throughput",
        "",
        "| measure | GFLOP/s |",
        "|---|---|",
        f"| matmul 4096x4096 fp32 | {c['fp32']:.0f} |",
        f"| matmul 4096x4096 bf16 | {c['bf16']:.0f} |",
        f"| torch network in medseg's sliding window ({precision}, {' x '.join(map(str, r['big_shape']))} volume) "
        f"| {r['achieved_gflops']:.0f} ({share:.0f}% of the {precision} matmul ceiling) |",
        "",
        f"One forward of a {r['patch']} tile costs {r['tile_gflop']:.1f} GFLOP (torch's flop counter). The "
        "backend table below gives the same figure for each runtime.",
    ]


def _md_end_to_end(r: dict[str, Any]) -> list[str]:
    lines = [
        f"### Hippocampus end to end (read -> write, one model load; TTA off: {r['cases']} cases, "
        f"TTA all: {r['tta_cases']})",
        "",
        "| TTA | backend | total s | model load s | s/case | " + " | ".join(STAGES) + " |",
        "|---" * 11 + "|",
    ]
    for tta, row in r["e2e"].items():
        stages = " | ".join(f"{row['stages'][s]:.3f}" for s in STAGES)
        lines.append(
            f"| {tta} | {row['backend']} ({row['precision']}) | {row['total']:.2f} | {row['load']:.2f} | "
            f"{row['per_case']:.3f} | {stages} |"
        )
    return lines + [
        "",
        "medseg defaults (`--backend auto`). Stage columns are mean seconds per case; write includes "
        "the QC PNG and statistics. The TTA-off run starts with an empty ONNX cache, so its model load "
        "includes the one-time export; the TTA run reuses the cache.",
    ]


def _md_windowing(r: dict[str, Any]) -> list[str]:
    names = {k: v.format(tiles=r["tiles"]) for k, v in WINDOW_NAMES.items()}
    tc = r["tile_counts"]
    lines = [
        f"### Network only: medseg vs MONAI `sliding_window_inference` (same torch network call, {r['precision']})",
        "",
        f"Hippocampus: {r['cases']} preprocessed cases with TTA off (best of {r['repeats']} round-robin runs), "
        f"{r['tta_cases']} with TTA on (8 mirrored passes; medseg flips each tile, the MONAI rows flip the whole "
        f"volume around `sliding_window_inference`). Each case fits one {r['patch']} tile.",
        "",
        "| windowing | TTA | seconds | label Dice vs medseg |",
        "|---|---|---|---|",
    ]
    for (name, tta), row in r["network"].items():
        lines.append(
            f"| {names[name]} | {'all' if tta else 'off'} | {row['seconds']:.2f} | {row['dice_vs_medseg']:.4f} |"
        )
    lines += [
        "",
        f"A {' x '.join(map(str, r['big_shape']))} synthetic volume (many tiles: {tc['big_medseg']} at "
        f"overlap 0.5, {tc['big_monai_defaults']} at MONAI's 0.25), TTA off, best of {r['repeats']} round-robin "
        "runs. medseg places tiles with nnU-Net's evenly spread steps, MONAI with a fixed interval and a "
        "clamped last tile, so tiles differ; with random weights (and per-tile instance norm) the argmax "
        "is very sensitive to tile context, hence the low Dice here.",
        "",
        "| windowing | seconds | label Dice vs medseg |",
        "|---|---|---|",
    ]
    for (name, _), row in r["network_big"].items():
        lines.append(f"| {names[name]} | {row['seconds']:.2f} | {row['dice_vs_medseg']:.4f} |")
    return lines


def _md_backends(r: dict[str, Any]) -> list[str]:
    lines = [
        "### Backends (hippocampus, preprocess + network + inverse per case; GFLOP/s counts the network's "
        "FLOPs over that whole time)",
        "",
        "| backend | precision | s/case | network GFLOP/s | start-up s (load + first case) | "
        "voxel agreement with torch fp32 | Dice vs torch fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["backends"]:
        gflops = r["tile_gflop"] * r["hippo_tiles"] / row["seconds"]
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['per_case']:.4f} | {gflops:.0f} | "
            f"{row['startup']:.2f} | {row['voxel_agreement']:.5f} | {row['dice_vs_torch_fp32']:.4f} |"
        )
    return lines


def _md_ct(r: dict[str, Any]) -> list[str]:
    labels = {
        "medseg": f"medseg defaults ({r.get('ct_backend', '?')}; its ONNX export, {r.get('ct_export', 0):.0f} s "
        "once, was cached beforehand)",
        "medseg-fast": "medseg `--fast` (argmax on the 3 mm grid, nearest back)",
        "monai": "MONAI defaults (transforms + Invertd, fp32 torch)",
    }
    lines = [
        f"### CT-sized volume ({' x '.join(map(str, r['ct_shape']))} int16 at {CT_SPACING_IN} mm, plan "
        f"{CT_PLAN_SPACING} mm, patch 96^3, 5-stage U-Net, random weights)",
        "",
        "| pipeline | seconds | preprocess | network | inverse | peak RSS MB | RSS before MB |",
        "|---|---|---|---|---|---|---|",
    ]
    if not r["ct"]:
        return lines + ["| not run (--skip-ct) | | | | | | |"]
    for row in r["ct"]:
        if "error" in row:
            lines.append(f"| {labels[row['kind']]} | not measured: {row['error']} | | | | | |")
            continue
        st = row["stages"]
        lines.append(
            f"| {labels[row['kind']]} | {row['seconds']:.1f} | {st.get('preprocess', 0):.1f} | "
            f"{st.get('network', 0):.1f} | {st.get('inverse', 0):.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['base_rss_mb']:.0f} |"
        )
    return lines + [
        "",
        "Each CT pipeline ran in a fresh process; peak RSS is the process's high-water mark "
        "(`VmHWM`, which unlike `ru_maxrss` is not inherited from the parent); 'RSS before' is after "
        "imports and creating the input volume. Seconds include loading the model.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="trained model folder (default: random-init hippocampus model)")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--tta-cases", type=int, default=4, help="cases for the TTA runs (8 passes each)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="best-of repeats for the round-robin timings (hippocampus TTA off, large volume)",
    )
    parser.add_argument(
        "--big-shape",
        type=int,
        nargs=3,
        default=(96, 96, 96),
        help="synthetic volume for the many-tile network-only comparison",
    )
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--ct-timeout", type=float, default=300.0)
    add_no_doc_option(parser)
    parser.add_argument("--ct-worker", choices=("medseg", "medseg-fast", "monai"), help=argparse.SUPPRESS)
    parser.add_argument("--ct-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ct-cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ct_worker:
        print(json.dumps(ct_worker(args.ct_worker, args.ct_model, tuple(args.ct_shape), args.threads, args.ct_cache)))
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    results = run_all(args)
    text = markdown(results)
    print(text)
    if not args.no_doc:
        update_section("inference", text)
    return 0


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from medseg.inference import PredictOptions, Predictor
    from medseg.io.files import read_volume_file
    from medseg.model.preprocess import preprocess_case

    work = Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    model = args.model or hippocampus_model(work / "hippo")
    note = (
        f"`{args.model}`"
        if args.model
        else "randomly initialised nnU-Net-style U-Net on the planner's hippocampus plan (no trained model was "
        "available): speed figures only; agreement figures compare random networks"
    )
    cases = hippocampus_cases(args.cases)
    r: dict[str, Any] = {"threads": args.threads, "cases": len(cases), "model_note": note, "repeats": args.repeats}
    print("ceiling...", flush=True)
    r["ceiling"] = {"fp32": matmul_ceiling(torch.float32), "bf16": matmul_ceiling(torch.bfloat16)}
    print("end to end...", flush=True)
    cache = work / "onnx-cache"
    r["e2e"] = {
        "off": end_to_end(model, cases, work / "out-off", "off", args.threads, cache),
        "all": end_to_end(model, cases[: args.tta_cases], work / "out-all", "all", args.threads, cache),
    }
    r["tta_cases"] = min(args.tta_cases, len(cases))
    predictor = Predictor.from_folders([model], PredictOptions(threads=args.threads, backend="torch"))
    volumes = [read_volume_file(c) for c in cases]
    arrays = [preprocess_case([v], predictor.models[0].plan).array for v in volumes]
    print("network only...", flush=True)
    r["network"] = network_only(predictor, arrays, (False,), args.repeats)
    r["network"].update(network_only(predictor, arrays[: args.tta_cases], (True,), 1))
    big = np.random.default_rng(0).normal(size=(1, *args.big_shape)).astype(np.float32)
    r["big_shape"] = list(args.big_shape)
    r["network_big"] = network_only(predictor, [big], (False,), args.repeats)
    m = predictor.models[0]
    r["precision"], r["tiles"], r["patch"] = (
        predictor.runtime.precision,
        predictor.tiles_per_batch,
        "x".join(map(str, m.patch_size)),
    )
    flops = network_flops(load_network(model), (1, m.spec.in_channels, *m.patch_size))
    r["tile_gflop"] = flops / 1e9
    r["hippo_tiles"] = sum(tile_count(a.shape[1:], m.patch_size, 0.5) for a in arrays)
    r["tile_counts"] = {
        "big_medseg": tile_count(tuple(args.big_shape), m.patch_size, 0.5),
        "big_monai_defaults": tile_count(tuple(args.big_shape), m.patch_size, 0.25),
    }
    r["achieved_gflops"] = flops * r["tile_counts"]["big_medseg"] / r["network_big"][("medseg", False)]["seconds"] / 1e9
    print("backends...", flush=True)
    start = time.perf_counter()
    r["backends"] = backends(model, volumes, args.threads, work, args.repeats)
    r["ct_shape"], r["ct"] = list(args.ct_shape), []
    if not args.skip_ct:
        print("CT-sized volume...", flush=True)
        ct = ct_model(work / "ct")
        start = time.perf_counter()
        with Predictor.from_folders([ct], PredictOptions(threads=args.threads, cache_dir=str(cache))) as warm:
            r["ct_backend"] = warm.models[0].backend.name  # exports once into the cache
        r["ct_export"] = time.perf_counter() - start
        r["ct"] = [
            run_ct(kind, ct, tuple(args.ct_shape), args.threads, args.ct_timeout, cache)
            for kind in ("medseg", "medseg-fast", "monai")
        ]
    return r


def load_network(model: Path) -> torch.nn.Module:
    from medseg.model.folder import load_model_folder

    return load_model_folder(model).network


if __name__ == "__main__":
    sys.exit(main())
