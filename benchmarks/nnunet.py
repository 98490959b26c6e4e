"""medseg vs nnU-Net v2, side by side on this machine: ``python -m benchmarks.nnunet``.

nnU-Net lives in its own virtual environment (``pip install nnunetv2`` pulls its own torch); pass
its ``bin`` folder with ``--nnunet-bin``. Two parts, each writing its own section of
docs/benchmarks.md:

``inference``
    The same weights in both tools: the medseg model folder is written as an nnU-Net model folder
    (``medseg export --format nnunet``), then both command lines run on the same files, each
    in a fresh process, timed from start to exit (start-up counted once per run), with the peak
    resident memory of the whole process tree. (1) N hippocampus cases, TTA off and on; label
    agreement (mean Dice over cases and classes) with nnU-Net's labels. (2) A CT-sized synthetic
    512x512x300 volume with a CT-style 5-stage network (random weights): seconds and peak RSS.

``training``
    Reads nnU-Net training runs that were made on the same split (``--nnunet-run``, repeatable:
    each run's ``fold_0`` folder) and a medseg model folder trained with the same wall-clock budget
    (``--medseg-model``); scores both on the validation cases with medseg's evaluator (nnU-Net's
    own validation predictions, which use mirroring; medseg's with TTA off and on).

``speed``
    Training iterations/s for the same network, patch and batch (nnU-Net's planned 3d_fullres
    configuration; medseg's ``pipelines/hippocampus_full.toml``), both run here one after the
    other: two short epochs each (``--iterations`` per epoch), the second one timed, so start-up
    and warm-up are left out on both sides. The nnU-Net side is a stock ``nnUNetTrainer`` with only
    the epoch lengths changed (``nnUNetTrainer_medsegSpeed``, written into nnU-Net's venv by this
    script). Needs the nnU-Net environment variables of a preprocessed Dataset004_Hippocampus.

``prepare``
    Writes nnU-Net's raw ``Dataset004_Hippocampus`` (links to the shared MSD cases, its
    ``dataset.json``) under ``--nnunet-root`` and medseg's fixed split of
    ``pipelines/hippocampus.toml`` as nnU-Net's ``splits_final.json``, then prints the commands
    that follow.

Setting up nnU-Net (outside the repository; nnunetv2 pulls a CUDA torch build, which runs on the CPU)::

    python3 -m venv ~/nnunet/venv && ~/nnunet/venv/bin/pip install nnunetv2
    python -m benchmarks.nnunet prepare --nnunet-root ~/nnunet
    export nnUNet_raw=~/nnunet/raw nnUNet_preprocessed=~/nnunet/preprocessed nnUNet_results=~/nnunet/results
    nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -np 2
    nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainer_1epoch -device cpu     # for ``training``
    # nnUNetTrainer_1epoch (stock): one epoch of 250 iterations. Choose the number of epochs that
    # fits the 30-minute budget on your machine (an epoch took 15 to 25 minutes on this project's
    # 2-core CPU); ``prepare --epochs 2 --nnunet-bin BIN`` writes nnUNetTrainer_medseg2epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.repo import repo_path, shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section

HIPPO = shared_data("msd_hippocampus")


# ----------------------------------------------------------------------------- process timing
def _tree_rss_kb(root: int) -> int:
    """Resident memory (kB) of ``root`` and all its descendants, read from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        match = re.search(r"VmRSS:\s+(\d+)", status)
        rss[int(entry.name)] = int(match.group(1)) if match else 0
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(p, 0) for p in tree)


def run_timed(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``cmd``; wall seconds and peak RSS (MB) of its process tree (sampled every 0.1 s)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": f"over {timeout:.0f} s"}
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        return {"error": (output.strip().splitlines() or ["failed"])[-1], "seconds": seconds}
    return {"seconds": seconds, "peak_rss_mb": peak[0] / 1024}


# ----------------------------------------------------------------------------- agreement
def mean_dice(pred_dir: Path, ref_dir: Path, classes: int) -> float:
    """Mean Dice over the cases and foreground classes of two folders of label files (by name)."""
    import nibabel as nib

    scores = []
    for ref in sorted(ref_dir.glob("*.nii.gz")):
        a = np.asarray(nib.load(pred_dir / ref.name).dataobj)
        b = np.asarray(nib.load(ref).dataobj)
        for c in range(1, classes):
            denom = (a == c).sum() + (b == c).sum()
            scores.append(1.0 if denom == 0 else 2.0 * ((a == c) & (b == c)).sum() / denom)
    return float(np.mean(scores))


def nnunet_inputs(images: list[Path], folder: Path) -> Path:
    """nnU-Net's input layout: ``<case>_0000.nii.gz`` links to the images."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.name.replace(".nii.gz", "_0000.nii.gz")).symlink_to(image.resolve())
    return folder


def medseg_inputs(images: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.name).symlink_to(image.resolve())
    return folder


def nnunet_cmd(bin_dir: Path, model: Path, inputs: Path, out: Path, tta: bool) -> list[str]:
    cmd = [
        str(bin_dir / "nnUNetv2_predict_from_modelfolder"),
        "-i",
        str(inputs),
        "-o",
        str(out),
        "-m",
        str(model),
        "-f",
        "0",
        "-chk",
        "checkpoint_final.pth",
        "-device",
        "cpu",
        "-npp",
        "1",
        "-nps",
        "1",
    ]
    return cmd if tta else cmd + ["--disable_tta"]


def medseg_cmd(model: Path, inputs: Path, out: Path, tta: bool, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medseg",
        "predict",
        "-m",
        str(model),
        "-i",
        str(inputs),
        "-o",
        str(out),
        "--tta",
        "all" if tta else "off",
        "--no-qc",
        "--largest-component",
        "off",
        *extra,
    ]


MEDSEG_VARIANTS = {"medseg defaults": (), "medseg torch fp32": ("--backend", "torch", "--precision", "fp32")}


def hippocampus_inference(
    bin_dir: Path, medseg_model: Path, nnunet_model: Path, cases: list[Path], work: Path, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Both tools on the same cases, TTA off and on; seconds, s/case, RSS, agreement."""
    import nibabel as nib

    from medseg.inference.export_nnunet import check_storage_order

    for case in cases:
        check_storage_order(nib.load(case).affine)
    nn_in, ms_in = nnunet_inputs(cases, work / "nn-in"), medseg_inputs(cases, work / "ms-in")
    # one untimed medseg run fills the compiled-runtime cache (a one-time export per model)
    run_timed(medseg_cmd(medseg_model, ms_in, work / "warm", False), env)
    rows = []
    for tta in (False, True):
        tag = "tta" if tta else "plain"
        nn_out = work / f"nn-{tag}"
        nn = run_timed(nnunet_cmd(bin_dir, nnunet_model, nn_in, nn_out, tta), env)
        rows.append({"tool": "nnU-Net v2 predictor", "tta": tta, **nn})
        for name, extra in MEDSEG_VARIANTS.items():
            out = work / f"ms-{tag}-{name.split()[-1]}"
            result = run_timed(medseg_cmd(medseg_model, ms_in, out, tta, extra), env)
            if "error" not in result and "error" not in nn:
                result["dice_vs_nnunet"] = mean_dice(out, nn_out, 3)
            rows.append({"tool": name, "tta": tta, **result})
    return rows


# ----------------------------------------------------------------------------- CT-sized volume
def ct_volume(shape: tuple[int, int, int], path: Path) -> Path:
    """The inference benchmark's synthetic CT, stored RAS (no flips, so the weights carry over)."""
    import nibabel as nib

    from benchmarks.inference import CT_SPACING_IN, synthetic_ct

    volume = synthetic_ct(shape)
    affine = np.diag([*CT_SPACING_IN, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume.array), affine), path)
    return path


def ct_inference(
    bin_dir: Path, work: Path, shape: tuple[int, int, int], env: dict[str, str], timeout: float
) -> list[dict[str, Any]]:
    from benchmarks.inference import ct_model
    from medseg.inference.export_nnunet import write_nnunet_model

    model = ct_model(work / "ct-model")
    nn_model = write_nnunet_model(model, work / "ct-nnunet")
    image = ct_volume(shape, work / "ct-in" / "ct.nii.gz")
    nn_in = nnunet_inputs([image], work / "ct-nn-in")
    run_timed(medseg_cmd(model, image.parent, work / "ct-warm", False), env, timeout)  # compiled-runtime cache
    rows = [
        {
            "tool": "nnU-Net v2 predictor",
            **run_timed(nnunet_cmd(bin_dir, nn_model, nn_in, work / "ct-nn", False), env, timeout),
        }
    ]
    for name, extra in {
        "medseg defaults": (),
        "medseg --fast": ("--fast",),
        "medseg torch fp32": MEDSEG_VARIANTS["medseg torch fp32"],
    }.items():
        rows.append(
            {
                "tool": name,
                **run_timed(
                    medseg_cmd(model, image.parent, work / f"ct-{name.split()[-1]}", False, extra), env, timeout
                ),
            }
        )
    return rows


# ----------------------------------------------------------------------------- training
def nnunet_epochs(fold_dir: Path) -> list[float]:
    """Epoch times (s) from nnU-Net's training log."""
    times = []
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        times += [float(m) for m in re.findall(r"Epoch time: ([\d.]+) s", log.read_text())]
    return times


def score_folder(pred_dir: Path, case_ids: list[str], labels_dir: Path) -> dict[str, float]:
    """Dice per class (mean over cases) of ``pred_dir/<case>.nii.gz`` against the references."""
    import nibabel as nib

    from medseg.evaluation import class_dice

    rows = [
        class_dice(
            np.asarray(nib.load(pred_dir / f"{c}.nii.gz").dataobj),
            np.asarray(nib.load(labels_dir / f"{c}.nii.gz").dataobj),
            [1, 2],
        )
        for c in case_ids
    ]
    mean = np.mean(rows, axis=0)
    return {"Anterior": float(mean[0]), "Posterior": float(mean[1]), "mean": float(mean.mean())}


def medseg_validation(model: Path, case_ids: list[str], work: Path, tta: bool) -> dict[str, float]:
    images = [HIPPO / "imagesTr" / f"{c}.nii.gz" for c in case_ids]
    ms_in = work / "val-in"
    if not ms_in.exists():
        medseg_inputs(images, ms_in)
    out = work / f"val-{'tta' if tta else 'plain'}"
    result = run_timed(medseg_cmd(model, ms_in, out, tta, ("--largest-component", "auto")))
    if "error" in result:
        raise SystemExit(f"medseg predict failed: {result['error']}")
    return score_folder(out, case_ids, HIPPO / "labelsTr")


def validation_cases(spec: dict[str, Any]) -> list[str]:
    """The validation case ids of the split a medseg model was trained on (from its recipe)."""
    from medseg.training.dataset import load_dataset
    from medseg.training.splits import make_splits

    dataset = spec["recipe"]["dataset"]
    splits = make_splits(
        load_dataset(HIPPO).case_ids, dataset["split"], dataset.get("folds", 5), dataset.get("seed", 0)
    )
    return list(splits[dataset.get("fold", 0)].val)


def nnunet_run(fold: Path, val: list[str]) -> dict[str, Any]:
    """One nnU-Net training run: trainer, epoch times and its validation predictions' Dice."""
    epochs = nnunet_epochs(fold)
    return {
        "trainer": fold.parent.name.split("__")[0],
        "epochs": len(epochs),
        "epoch_seconds": epochs,
        "total_seconds": sum(epochs),
        "it_per_s": 250 / statistics.median(epochs) if epochs else None,
        "dice": score_folder(fold / "validation", val, HIPPO / "labelsTr"),
    }


def training_comparison(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """nnU-Net's runs (epoch times, their validation predictions) against medseg's model folder."""
    model = Path(args.medseg_model)
    spec = json.loads((model / "model.json").read_text())
    val = validation_cases(spec)
    nnunet = [nnunet_run(Path(fold), val) for fold in args.nnunet_run]
    medseg = {
        "metrics": spec["metrics"],
        "recipe": args.medseg_recipe,
        "dice_plain": medseg_validation(model, val, work, False),
        "dice_tta": medseg_validation(model, val, work, True),
    }
    return {"val_cases": len(val), "nnunet": nnunet, "medseg": medseg}


# ----------------------------------------------------------------------------- nnU-Net dataset
def prepare_nnunet(root: Path, recipe: Path, source: Path = HIPPO) -> tuple[Path, Path]:
    """nnU-Net v2's raw ``Dataset004_Hippocampus`` under ``root/raw`` (symlinks to ``source``'s
    images as ``<case>_0000.nii.gz`` and labels, a v2 ``dataset.json``) and ``recipe``'s split as
    ``root/preprocessed/Dataset004_Hippocampus/splits_final.json`` (fold 0 = medseg's split).
    Returns the raw dataset folder and the splits file; existing links are kept."""
    import tomllib

    from medseg.training.dataset import load_dataset
    from medseg.training.splits import make_splits

    dataset = load_dataset(source)
    raw = root / "raw" / "Dataset004_Hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for case in dataset.cases:
        if len(case.images) != 1 or case.label is None:
            raise SystemExit(f"prepare: case {case.id} needs one image and a label")
        for link, target in (
            (raw / "imagesTr" / f"{case.id}_0000.nii.gz", case.images[0]),
            (raw / "labelsTr" / f"{case.id}.nii.gz", case.label),
        ):
            if not link.is_symlink():
                link.symlink_to(Path(target).resolve())
    labels = {name: int(value) for value, name in dataset.labels.items()}
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": dict(enumerate(dataset.channels)),
                "labels": labels,
                "numTraining": len(dataset.cases),
                "file_ending": ".nii.gz",
            },
            indent=1,
        )
    )
    split = tomllib.loads(recipe.read_text())["dataset"]
    fold = make_splits(dataset.case_ids, split["split"], split.get("folds", 5), split.get("seed", 0))[
        split.get("fold", 0)
    ]
    splits = root / "preprocessed" / "Dataset004_Hippocampus" / "splits_final.json"
    splits.parent.mkdir(parents=True, exist_ok=True)
    splits.write_text(json.dumps([{"train": list(fold.train), "val": list(fold.val)}], indent=1))
    return raw, splits


# ----------------------------------------------------------------------------- training speed
SPEED_TRAINER = """# Written by medseg's benchmarks/nnunet.py (not part of nnunetv2): the stock trainer with short epochs,
# for timing training iterations; the end-of-training validation is skipped.
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medsegSpeed(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass
"""


EPOCHS_TRAINER = """# Written by medseg's benchmarks/nnunet.py (not part of nnunetv2): the stock trainer with {epochs} epochs
# (its poly schedule spread over them), for a fixed wall-clock budget on a slow machine.
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
"""


def _install_trainer(bin_dir: Path, name: str, code: str) -> None:
    """Write trainer class ``name`` into the nnunetv2 package of the venv at ``bin_dir``."""
    query = "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"
    root = subprocess.run([str(bin_dir / "python"), "-c", query], capture_output=True, text=True, check=True)
    (Path(root.stdout.strip()) / "training" / "nnUNetTrainer" / "variants" / f"{name}.py").write_text(code)


def install_speed_trainer(bin_dir: Path, iterations: int) -> None:
    """Write ``nnUNetTrainer_medsegSpeed`` into the nnunetv2 package of the venv at ``bin_dir``."""
    _install_trainer(bin_dir, "nnUNetTrainer_medsegSpeed", SPEED_TRAINER.format(iterations=iterations))


def epochs_trainer(bin_dir: Path | None, epochs: int) -> str:
    """The trainer to run for ``epochs`` epochs: the stock ``nnUNetTrainer_1epoch`` for one, else
    ``nnUNetTrainer_medseg<N>epochs`` written into the venv at ``bin_dir`` (the stock trainer with
    ``num_epochs`` changed)."""
    if epochs < 1:
        raise SystemExit(f"--epochs must be at least 1, got {epochs}")
    if epochs == 1:
        return "nnUNetTrainer_1epoch"
    name = f"nnUNetTrainer_medseg{epochs}epochs"
    if bin_dir is None:
        raise SystemExit(f"prepare --epochs {epochs} needs --nnunet-bin (to write {name} into nnU-Net's venv)")
    _install_trainer(bin_dir, name, EPOCHS_TRAINER.format(epochs=epochs, name=name))
    return name


def nnunet_speed(bin_dir: Path, iterations: int, workers: int, timeout: float) -> dict[str, Any]:
    """Two short nnU-Net epochs on CPU with ``workers`` augmentation processes; iterations/s of the
    second epoch (from its training log)."""
    results = os.environ.get("nnUNet_results")  # noqa: SIM112 (nnU-Net's own spelling)
    if not results:
        raise SystemExit(
            "speed: set nnUNet_raw, nnUNet_preprocessed and nnUNet_results "
            "(a preprocessed Dataset004_Hippocampus) before running"
        )
    install_speed_trainer(bin_dir, iterations)
    fold = Path(results) / "Dataset004_Hippocampus" / "nnUNetTrainer_medsegSpeed__nnUNetPlans__3d_fullres" / "fold_0"
    for old in fold.glob("training_log_*.txt"):
        old.unlink()
    run = run_timed(
        [
            str(bin_dir / "nnUNetv2_train"),
            "4",
            "3d_fullres",
            "0",
            "-tr",
            "nnUNetTrainer_medsegSpeed",
            "-device",
            "cpu",
            "--disable_checkpointing",
        ],
        env={"nnUNet_n_proc_DA": str(workers)},
        timeout=timeout,
    )
    if "error" in run:
        raise SystemExit(f"nnU-Net training failed: {run['error']}")
    epochs = nnunet_epochs(fold)
    return {"epoch_seconds": epochs, "it_per_s": iterations / epochs[-1], "peak_rss_mb": run["peak_rss_mb"]}


def short_recipe(recipe: Path, iterations: int, precision: str) -> str:
    """``recipe``'s text with two epochs of ``iterations``, no periodic validation, the given
    precision and an absolute dataset path (so the copy can live anywhere)."""
    import tomllib

    text = recipe.read_text()
    dataset = (recipe.parent / tomllib.loads(text)["dataset"]["path"]).resolve()
    for pattern, value in (
        (r"path = .*", f'path = "{dataset}"'),
        (r"epochs = .*", "epochs = 2"),
        (r"iterations_per_epoch = .*", f"iterations_per_epoch = {iterations}"),
        (r"every = .*", "every = 1000"),
        (r"precision = .*", f'precision = "{precision}"'),
    ):
        text, count = re.subn(f"(?m)^{pattern}$", value, text, count=1)
        if count != 1:
            raise ValueError(f"{recipe} has no line matching {pattern!r}")
    return text


def medseg_speed(recipe: Path, iterations: int, work: Path, precision: str, timeout: float) -> dict[str, Any]:
    """Two short medseg epochs of ``recipe``; iterations/s of the second (from training_log.csv)."""
    import csv

    text = short_recipe(recipe, iterations, precision)
    short = work / f"speed-{precision}.toml"
    short.write_text(text)
    out = work / f"speed-{precision}"
    run = run_timed(
        [sys.executable, "-m", "medseg", "train", str(short), "-o", str(out), "--no-progress"], timeout=timeout
    )
    if "error" in run:
        raise SystemExit(f"medseg training failed: {run['error']}")
    with open(out / "training_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["epoch_seconds"]) for r in rows]
    return {
        "precision": precision,
        "epoch_seconds": seconds,
        "it_per_s": iterations / seconds[-1],
        "peak_rss_mb": run["peak_rss_mb"],
    }


# ----------------------------------------------------------------------------- report
def _fmt(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def md_inference(
    hippo: list[dict[str, Any]],
    ct: list[dict[str, Any]],
    n_cases: int,
    model: str,
    versions: str,
    shape: tuple[int, int, int],
) -> str:
    lines = [
        "## medseg vs nnU-Net v2: inference (`python -m benchmarks.nnunet inference`)",
        "",
        machine_line() + f" nnU-Net side: {versions}.",
        "",
        f"Same weights in both tools: `{model}` written as an nnU-Net model folder "
        "(`medseg export --format nnunet`; the two networks' outputs agree to 3e-5 on the same input). "
        "Each row is one command run in a fresh process, timed from start to exit, so start-up counts once; "
        "peak RSS is the whole process tree's. nnU-Net: `nnUNetv2_predict_from_modelfolder -device cpu -npp 1 "
        "-nps 1`; medseg: `medseg predict --no-qc --largest-component off` (label NIfTI only, like nnU-Net), "
        "its compiled-runtime cache filled by an earlier run.",
        "",
        f"### {n_cases} hippocampus cases",
        "",
        "| tool | TTA | seconds | s/case | nnU-Net time / this | peak RSS MB | label Dice vs nnU-Net |",
        "|---|---|---|---|---|---|---|",
    ]
    for tta in (False, True):
        rows = [r for r in hippo if r["tta"] == tta]
        base = rows[0].get("seconds")
        for r in rows:
            ratio = f"{base / r['seconds']:.2f}" if base and r.get("seconds") and "error" not in r else "-"
            lines.append(
                f"| {r['tool']} | {'all axes' if tta else 'off'} | {_fmt(r, 'seconds', '.1f')} | "
                f"{r['seconds'] / n_cases:.3f} | {ratio} | {_fmt(r, 'peak_rss_mb', '.0f')} | "
                f"{_fmt(r, 'dice_vs_nnunet', '.4f')} |"
                if "error" not in r
                else f"| {r['tool']} | {'all axes' if tta else 'off'} | failed: {r['error']} | | | | |"
            )
    lines += [
        "",
        f"### CT-sized volume ({'x'.join(map(str, shape))} int16 at 0.8 x 0.8 x 1.5 mm, plan 3 mm, "
        "patch 96^3, 5-stage U-Net, random weights, TTA off)",
        "",
        "| tool | seconds | nnU-Net time / this | peak RSS MB |",
        "|---|---|---|---|",
    ]
    base = ct[0].get("seconds") if ct and "error" not in ct[0] else None
    for r in ct:
        if "error" in r:
            lines.append(f"| {r['tool']} | failed: {r['error']} | | |")
            continue
        ratio = f"{base / r['seconds']:.2f}" if base else "-"
        lines.append(f"| {r['tool']} | {r['seconds']:.1f} | {ratio} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        "nnU-Net's CPU predictor runs fp32 torch; it resamples the image with cubic splines and the "
        "class probabilities back to the source grid at full resolution. medseg defaults pick OpenVINO bf16 "
        "on this CPU (see the inference section).",
    ]
    return "\n".join(lines)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def md_training(r: dict[str, Any], versions: str) -> str:
    runs, ms = r["nnunet"], r["medseg"]
    m = ms["metrics"]
    trainers = ", ".join(f"`{nn['trainer']}` ({_epochs(nn['epochs'])})" for nn in runs)
    lines = [
        "## medseg vs nnU-Net v2: training (`python -m benchmarks.nnunet training`)",
        "",
        machine_line() + f" nnU-Net side: {versions}.",
        "",
        f"Same fixed 80/20 split (138 training, {r['val_cases']} validation cases), same machine, run one after "
        f"the other. nnU-Net: `nnUNetv2_train 4 3d_fullres 0 -tr TRAINER -device cpu` with {trainers} "
        "(its planned network: widths 32-256, patch 40x56x40, batch 6, fp32 on CPU; epochs of 250 iterations "
        "with its poly schedule over them, then its own validation of the whole cases with mirroring). "
        f"medseg: `{r['medseg']['recipe']}` ({m['iterations']} iterations in {m['training_seconds'] / 60:.1f} min, {m['precision']}). "
        "Both scored here with medseg's Dice (mean over the validation cases).",
        "",
        "| run | wall-clock | iterations | Dice Anterior | Dice Posterior | mean Dice |",
        "|---|---|---|---|---|---|",
    ]
    for nn in runs:
        lines.append(
            f"| nnU-Net v2, {_epochs(nn['epochs'])} (mirroring TTA) | "
            f"{nn['total_seconds'] / 60:.1f} min | {250 * nn['epochs']} | "
            f"{nn['dice']['Anterior']:.4f} | {nn['dice']['Posterior']:.4f} | {nn['dice']['mean']:.4f} |"
        )
    for key, label in (("dice_plain", "TTA off"), ("dice_tta", "mirroring TTA")):
        d = ms[key]
        lines.append(
            f"| medseg `{r['medseg']['recipe']}` ({label}) | {m['training_seconds'] / 60:.1f} min | {m['iterations']} | "
            f"{d['Anterior']:.4f} | {d['Posterior']:.4f} | {d['mean']:.4f} |"
        )
    return "\n".join(lines)


def md_speed(nn: dict[str, Any], ms: list[dict[str, Any]], iterations: int, workers: int, versions: str) -> str:
    lines = [
        "## medseg vs nnU-Net v2: training speed (`python -m benchmarks.nnunet speed`)",
        "",
        machine_line() + f" nnU-Net side: {versions}.",
        "",
        "Same network, patch and batch: nnU-Net's planned 3d_fullres configuration for the hippocampus "
        "(U-Net widths 32-256, 4 stages, deep supervision, patch 40x56x40, batch 6); medseg trains it with "
        "`pipelines/hippocampus_full.toml`. Each trainer runs two epochs of "
        f"{iterations} iterations one after the other on this machine, augmentation and data loading "
        f"included ({workers} data-loading processes each: `nnUNet_n_proc_DA={workers}`, recipe `workers = {workers}`); the second epoch is timed (start-up and warm-up left out on both sides). nnU-Net: "
        "`nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainer_medsegSpeed -device cpu` (stock trainer, epoch "
        "lengths changed; its epoch also holds one validation iteration; fp32, the only precision its CPU "
        "path runs).",
        "",
        "| trainer | precision | s per epoch (timed) | iterations/s | relative to nnU-Net | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| nnU-Net v2 | fp32 | {nn['epoch_seconds'][-1]:.1f} | {nn['it_per_s']:.3f} | 1.00 | "
        f"{nn['peak_rss_mb']:.0f} |",
    ]
    for m in ms:
        lines.append(
            f"| medseg | {m['precision']} | {m['epoch_seconds'][-1]:.1f} | {m['it_per_s']:.3f} | "
            f"{m['it_per_s'] / nn['it_per_s']:.2f} | {m['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def nnunet_versions(bin_dir: Path) -> str:
    code = "import importlib.metadata as m; print(f\"nnunetv2 {m.version('nnunetv2')}, torch {m.version('torch')}\")"
    done = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown versions"


def prepare_main(root: Path, recipe: Path, epochs: int = 1, bin_dir: Path | None = None) -> int:
    """``prepare``: the raw dataset and split (and the ``epochs`` trainer), then the commands
    that come next."""
    raw, splits = prepare_nnunet(root, recipe)
    trainer = epochs_trainer(bin_dir, epochs)
    print(
        f"wrote {raw} and {splits}\nnext:\n"
        f"  export nnUNet_raw={root / 'raw'} nnUNet_preprocessed={root / 'preprocessed'} "
        f"nnUNet_results={root / 'results'}\n"
        "  nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -np 2\n"
        f"  nnUNetv2_train 4 3d_fullres 0 -tr {trainer} -device cpu   # for the training part"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("prepare", "inference", "training", "speed"))
    parser.add_argument("--nnunet-bin", type=Path, help="bin folder of the venv holding nnunetv2")
    parser.add_argument("--nnunet-root", type=Path, help="prepare: folder for nnU-Net's raw/, preprocessed/, results/")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="prepare: epochs of 250 iterations that fit the training budget here (default 1)",
    )
    parser.add_argument("--model", default="hippocampus", help="medseg unet model folder or shipped name")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--nnunet-run",
        type=Path,
        action="append",
        default=[],
        help="training: an nnU-Net run's fold_0 folder (same split); repeat for several runs",
    )
    parser.add_argument("--medseg-model", type=Path, help="training: medseg model folder, same budget")
    parser.add_argument("--medseg-recipe", default="pipelines/hippocampus.toml", help="training: the recipe it used")
    parser.add_argument("--iterations", type=int, default=30, help="speed: iterations per timed epoch")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], help="speed: medseg precisions")
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    recipes = repo_path("pipelines")
    if args.part == "prepare":
        if not args.nnunet_root:
            parser.error("prepare needs --nnunet-root")
        return prepare_main(args.nnunet_root.resolve(), recipes / "hippocampus.toml", args.epochs, args.nnunet_bin)
    if not args.nnunet_bin:
        parser.error(f"{args.part} needs --nnunet-bin (the bin folder of the venv holding nnunetv2)")
    work = Path(tempfile.mkdtemp(prefix="medseg-nnunet-"))
    versions = nnunet_versions(args.nnunet_bin)
    env = {"nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work)}
    if args.part == "inference":
        from medseg.inference.export_nnunet import write_nnunet_model
        from medseg.pretrained import resolve_model_path

        model = Path(resolve_model_path(args.model))
        nn_model = write_nnunet_model(model, work / "nnunet-model")
        cases = sorted((HIPPO / "imagesTr").glob("*.nii.gz"))[: args.cases]
        hippo = hippocampus_inference(args.nnunet_bin, model, nn_model, cases, work, env)
        ct = [] if args.skip_ct else ct_inference(args.nnunet_bin, work, tuple(args.ct_shape), env, args.timeout)
        name = args.model if not Path(args.model).exists() else model.name
        text = md_inference(hippo, ct, len(cases), name, versions, tuple(args.ct_shape))
    elif args.part == "speed":
        import tomllib

        recipe = recipes / "hippocampus_full.toml"
        workers = tomllib.loads(recipe.read_text())["runtime"]["workers"]
        nn = nnunet_speed(args.nnunet_bin, args.iterations, workers, args.timeout)
        ms = [medseg_speed(recipe, args.iterations, work, p, args.timeout) for p in args.precisions]
        text = md_speed(nn, ms, args.iterations, workers, versions)
    else:
        if not (args.nnunet_run and args.medseg_model):
            parser.error("training needs --nnunet-run and --medseg-model")
        text = md_training(training_comparison(args, work), versions)
    print(text)
    if not args.no_doc:
        update_section(f"nnunet_{args.part}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
