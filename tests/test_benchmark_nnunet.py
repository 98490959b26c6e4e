"""The nnU-Net comparison benchmark's helpers (benchmarks/nnunet.py, run from the checkout): the
short speed recipe is a valid copy of the full one, and ``prepare`` writes nnU-Net's raw dataset
with medseg's split."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.nnunet import SPEED_TRAINER, prepare_nnunet, short_recipe
from benchmarks.repo import repo_path
from medseg.training.recipe import load_recipe
from medseg.training.splits import make_splits


def test_speed_recipe_is_a_valid_two_epoch_copy(tmp_path: Path) -> None:
    source = repo_path("pipelines", "hippocampus_full.toml")
    copy = tmp_path / "elsewhere" / "speed.toml"
    copy.parent.mkdir()
    copy.write_text(short_recipe(source, 7, "fp32"))
    recipe, full = load_recipe(copy), load_recipe(source)
    assert (recipe.budget.epochs, recipe.budget.iterations_per_epoch) == (2, 7)
    assert recipe.runtime.precision == "fp32" and recipe.validation.every == 1000
    assert recipe.dataset.path == full.dataset.path
    assert (recipe.model, recipe.plan, recipe.optimizer) == (full.model, full.plan, full.optimizer)
    compile(SPEED_TRAINER.format(iterations=7), "nnUNetTrainer_medsegSpeed.py", "exec")


def test_prepare_writes_a_v2_raw_dataset_with_medsegs_split(tmp_path: Path) -> None:
    source = tmp_path / "msd"
    for sub in ("imagesTr", "labelsTr"):
        (source / sub).mkdir(parents=True)
    ids = [f"case_{i:03d}" for i in range(10)]
    for case in ids:
        for sub in ("imagesTr", "labelsTr"):
            (source / sub / f"{case}.nii.gz").write_bytes(b"")
    (source / "dataset.json").write_text(
        json.dumps(
            {
                "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
                "modality": {"0": "MRI"},
                "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
            }
        )
    )
    recipe = repo_path("pipelines", "hippocampus.toml")
    raw, splits = prepare_nnunet(tmp_path / "nnunet", recipe, source)
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 10
    assert (raw / "imagesTr" / "case_003_0000.nii.gz").resolve() == (source / "imagesTr" / "case_003.nii.gz").resolve()
    assert (raw / "labelsTr" / "case_003.nii.gz").is_symlink()
    split = load_recipe(recipe).dataset
    fold = make_splits(tuple(ids), split.split, split.folds, split.seed)[split.fold]
    assert json.loads(splits.read_text()) == [{"train": list(fold.train), "val": list(fold.val)}]
    prepare_nnunet(tmp_path / "nnunet", recipe, source)  # again: existing links are kept
