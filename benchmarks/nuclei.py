"""Nuclei instance segmentation on DSB2018: the U-Net instance model, Mask R-CNN and the classical baselines.

    python -m benchmarks.nuclei [--minutes 30] [--out runs/benchmarks/nuclei] [--reuse unet=RUN_DIR]
                                [--families unet maskrcnn] [--shipped] [--no-doc]

On the fixed split of ``../shared/data/dsb2018_nuclei`` (542 images; ``fixed-80-20`` with seed 0, as
both recipes use it: 434 training, 108 validation images), per model family:

1. train its recipe (``pipelines/nuclei.toml`` for the U-Net family, ``pipelines/nuclei_maskrcnn.toml``)
   for ``--minutes`` of wall-clock time from scratch, or take a run already trained with it
   (``--reuse FAMILY=RUN_DIR``: its recipe must match and its budget must not exceed ``--minutes``);
2. predict every validation image with the shipped predictor (``medseg predict``'s defaults, one model
   load) and score it as ``medseg evaluate --instances`` does: DSB2018 score, AP@0.5, COCO box mAP,
   and images per second (preprocessing, network, instance formation and the inverse; reading and
   writing excluded);
3. beside them, on the same images in the same script: the classical baselines of
   :mod:`medseg.inference.classical` (Otsu + components, distance-transform watershed), and with
   ``--shipped`` the shipped model ``medseg/pretrained/nuclei``.

Prints the figures and writes the ``nuclei`` section of docs/benchmarks.md, with the published
figures of other methods (their own test sets, named) for context.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.repo import repo_path, shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section
from medseg.training.recipe import InstanceConfig

FAMILIES = {
    "unet": ("2D U-Net instance heads + seeded watershed", "nuclei.toml"),
    "maskrcnn": ("Mask R-CNN, ResNet-18 FPN (GroupNorm), from scratch", "nuclei_maskrcnn.toml"),
}
DATASET = "dsb2018_nuclei"

#: published figures (their own test sets; not comparable one to one with this split)
PUBLISHED = """| method (publication) | test set | reported |
|---|---|---|
| 2018 Data Science Bowl winner, "topcoders" (Caicedo et al., *Nature Methods* 16, 2019) | DSB2018 stage-2 test set (the 106 scored of 3,019 images; more imaging types than stage 1) | DSB score 0.631 |
| StarDist (Schmidt et al., MICCAI 2018) | 50 test images of a 497-image fluorescence subset of DSB2018 stage-1 train | AP@0.5 0.864 (Mask R-CNN baseline in the same paper: 0.832) |
| Cellpose (Stringer et al., *Nature Methods* 18, 2021) | its own nucleus test set (incl. DSB2018 images) | reported as AP over IoU thresholds in the paper's figures |
| Mask R-CNN (He et al., ICCV 2017) | COCO (natural images), ImageNet-pretrained backbone | mask AP 37.1; not a nuclei figure |

The DSB score and AP@0.5 are the same per-image measures as ours (TP/(TP+FP+FN), one-to-one
matching at IoU > t); the test sets differ, so these rows give scale, not a ranking."""


def validation_ids(seed: int = 0) -> tuple[list[str], list[str]]:
    """The fixed split of the 542 images: (training ids, validation ids)."""
    from medseg.training.dataset import load_dataset
    from medseg.training.splits import make_splits

    spec = load_dataset(shared_data(DATASET))
    split = make_splits(spec.case_ids, "fixed-80-20", seed=seed)[0]
    return list(split.train), list(split.val)


def train_family(recipe: Path, minutes: float, run_dir: Path, device: str) -> Path:
    """Train one recipe from scratch into ``run_dir`` (replaced); returns its model folder."""
    import shutil

    from medseg.training.recipe import load_recipe
    from medseg.training.trainer import TrainOptions, train

    shutil.rmtree(run_dir, ignore_errors=True)
    return train(load_recipe(recipe), TrainOptions(run_dir, minutes=minutes, device=device, progress_bar=False))


def reused_folder(recipe: Path, run_dir: Path, minutes: float) -> Path:
    """The model folder of a run trained with ``recipe`` within ``minutes`` (SystemExit otherwise)."""
    from medseg.training.recipe import Recipe, load_recipe

    spec = json.loads((run_dir / "model" / "model.json").read_text(encoding="utf-8"))
    used, wanted = Recipe.from_dict(spec["recipe"]), load_recipe(recipe)
    for part in ("model", "loss", "optimizer", "augmentation", "plan", "instances", "dataset"):
        mine, theirs = getattr(used, part), getattr(wanted, part)
        if part == "instances":  # thresholds act after the network: the run is scored with its own
            mine, theirs = training_settings(mine), training_settings(theirs)
        if mine != theirs:
            raise SystemExit(f"--reuse {run_dir}: its {part} differs from {recipe.name}; train it again")
    trained = training_seconds(run_dir / "model")
    if trained > minutes * 60 + 30:
        raise SystemExit(f"--reuse {run_dir}: trained {trained:.0f} s, over {minutes:g} min")
    return run_dir / "model"


#: ``[instances]`` settings that act only after the network (a run is scored with the ones it has)
POSTPROCESSING_ONLY = ("foreground_threshold", "seed_threshold", "min_seed", "score_threshold")


def training_settings(instances: InstanceConfig) -> InstanceConfig:
    """``instances`` with the post-processing-only settings reset to their defaults."""
    from dataclasses import replace

    return replace(instances, **{k: getattr(InstanceConfig(), k) for k in POSTPROCESSING_ONLY})


def training_seconds(folder: Path) -> float:
    """Seconds a model folder's run trained: model.json's ``training_seconds`` less the final
    validation, which runs after the budget (the last row of the folder's training log)."""
    from medseg.training.logs import read_log_csv

    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    rows = read_log_csv(folder / "training_log.csv")
    return float(spec["metrics"]["training_seconds"]) - (rows[-1].get("val_seconds", 0.0) if rows else 0.0)


def read_cases(ids: Sequence[str]) -> list[tuple[str, list, object]]:
    """(id, channel Volumes, instance map) of each image, read as training reads them."""
    from medseg.training.dataset import load_dataset, read_case

    spec = load_dataset(shared_data(DATASET))
    return [(case_id, *read_case(spec.case(case_id), spec)) for case_id in ids]


def score(cases: list, predict: Callable) -> dict:
    """Predict every case (timed), score as ``medseg evaluate --instances``; the summary + images/s."""
    from medseg.evaluation.boxes import box_map
    from medseg.evaluation.instance_eval import InstanceEvaluation, evaluate_instance_volumes

    scores, boxes, seconds = [], [], 0.0
    for case_id, images, reference in cases:
        start = time.perf_counter()
        instances, object_scores = predict(images)
        seconds += time.perf_counter() - start
        image_scores, image_boxes = evaluate_instance_volumes(case_id, instances, reference, object_scores)
        scores.append(image_scores)
        boxes.append(image_boxes)
    summary = InstanceEvaluation(tuple(scores), box_map(boxes)).summary()
    return {**summary, "seconds": seconds, "images_per_second": len(cases) / max(seconds, 1e-9)}


def model_row(folder: Path, cases: list) -> dict:
    """A model folder's figures on ``cases`` through the shipped predictor (default options)."""
    from medseg.inference import PredictOptions, Predictor

    with Predictor.from_folders([folder], PredictOptions()) as predictor:
        backend = predictor.models[0].backend.name

        def predict(images):
            prediction = predictor.predict(images)
            return prediction.instances, prediction.scores

        predict(cases[0][1])  # warm-up (an ONNX export or compilation is not inference)
        row = score(cases, predict)
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    metrics = spec["metrics"]
    return {
        **row,
        "settings": instance_settings(spec["instances"]),
        "backend": backend,
        "training_seconds": training_seconds(folder),
        "iterations": metrics.get("iterations"),
        "weights_mb": (folder / "weights.safetensors").stat().st_size / 1e6,
    }


def instance_settings(instances: dict) -> str:
    """The settings that turn a model's outputs into objects, as one table cell."""
    if instances.get("method") == "watershed":
        return (
            f"foreground > {instances['foreground_threshold']:g}, seeds > {instances['seed_threshold']:g}, "
            f"objects >= {instances['min_size']} px"
        )
    return f"score >= {instances.get('score_threshold', 0.5):g}, objects >= {instances.get('min_size')} px"


def classical_rows(cases: list) -> dict[str, dict]:
    """The two classical baselines on ``cases`` (one colour Volume per image)."""
    from medseg.inference.classical import otsu_instances, watershed_instances
    from medseg.inference.instance_predict import colour_image

    return {
        name: score(cases, lambda images, f=f: (f(colour_image(images)), None))
        for name, f in (
            ("Otsu + connected components", otsu_instances),
            ("Otsu + distance-transform watershed", watershed_instances),
        )
    }


def report(rows: dict[str, dict], minutes: float, n_train: int, n_val: int, load: str) -> str:
    """The markdown section."""
    lines = [
        f"{machine_line()} Load average while measuring: {load} (a shared 2-core machine: seconds "
        "and images/s are this machine's, under that load).",
        "",
        f"Fixed split of the 542 DSB2018 images (`fixed-80-20`, seed 0): {n_train} training, {n_val} validation "
        f"images; every row scored on the same {n_val} validation images as `medseg evaluate --instances` does "
        f"(mean over images of the DSB score and of AP@0.5; COCO box mAP over all boxes). Trained models: "
        f"{minutes:g} wall-clock minutes from scratch (no downloaded weights); predicted with `medseg predict`'s "
        "defaults (TTA off). Images/s: preprocessing, network, instance formation and inverse; reading excluded.",
        "",
        "| model | DSB score | AP@0.5 | box mAP | box AP50 | objects found / true | images/s | trained | weights (MB) | objects from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        trained = f"{r['iterations']} it, {r['training_seconds'] / 60:.1f} min" if r.get("iterations") else "none"
        weights = f"{r['weights_mb']:.1f}" if r.get("weights_mb") else ""
        lines.append(
            f"| {name} | {r['dsb_score']:.4f} | {r['ap50']:.4f} | {r['box_map']:.4f} | {r['box_ap50']:.4f} | "
            f"{r['predicted']} / {r['true']} | {r['images_per_second']:.2f} | {trained} | {weights} | "
            f"{r.get('settings', '')} |"
        )
    missing = [name for name, _ in FAMILIES.values() if name not in rows]
    if missing:
        lines += ["", "Not measured in this run: " + "; ".join(missing) + " (`--families` left it out)."]
    lines += [
        "",
        "`objects from`: the settings in each model folder's `model.json` that turn its outputs into objects "
        "(a run is scored with its own; the shipped model is a U-Net run's network with thresholds chosen on "
        "training images, docs/pretrained.md). What training Mask R-CNN from scratch costs cannot be measured "
        "against pretrained weights here (nothing is downloaded): the row above is what 30 CPU minutes from "
        "scratch give; the published Mask R-CNN figures below come from other training set-ups and test sets.",
        "",
        "Published figures (other test sets):",
        "",
        PUBLISHED,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="wall-clock training budget per family (default 30)"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=repo_path("runs", "benchmarks", "nuclei"))
    parser.add_argument("--families", nargs="+", choices=tuple(FAMILIES), default=list(FAMILIES))
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="FAMILY=RUN_DIR",
        help="take a run already trained with that family's recipe instead of training it",
    )
    parser.add_argument("--shipped", action="store_true", help="also score the shipped model medseg/pretrained/nuclei")
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    reuse = dict(item.split("=", 1) for item in args.reuse)
    train_ids, val_ids = validation_ids()
    cases = read_cases(val_ids)
    rows: dict[str, dict] = {}
    for family in args.families:
        name, recipe_name = FAMILIES[family]
        recipe = repo_path("pipelines", recipe_name)
        folder = (
            reused_folder(recipe, Path(reuse[family]), args.minutes)
            if family in reuse
            else train_family(recipe, args.minutes, args.out / family, args.device)
        )
        rows[name] = model_row(folder, cases)
        print(name, json.dumps(rows[name], default=str))
    if args.shipped:
        from medseg.pretrained import PRETRAINED_DIR

        rows["shipped `nuclei` model"] = model_row(PRETRAINED_DIR / "nuclei", cases)
    rows.update(classical_rows(cases))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = report(rows, args.minutes, len(train_ids), len(val_ids), load)
    print(text)
    if not args.no_doc:
        update_section("nuclei", "## Nuclei instance segmentation (`python -m benchmarks.nuclei`)\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
