"""Tiny real training data and recipes, shared by the training tests (not a test module)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.training.recipe import Recipe

LABELS = {0: "background", 1: "Anterior", 2: "Posterior"}


def write_tiny_data(root: Path, source: Path, cases: Sequence[str]) -> Path:
    """A CSV manifest (+ sidecar) of real MSD hippocampus ``cases`` from ``source`` and a plan
    with tiny networks (1 mm, 16x24x16 / 24x16 patches) in ``root``; returns ``root``."""
    rows = "".join(f"{c},{source}/imagesTr/{c}.nii.gz,{source}/labelsTr/{c}.nii.gz\n" for c in cases)
    (root / "cases.csv").write_text("case,image,label\n" + rows)
    (root / "cases.json").write_text(json.dumps({"name": "hippo4", "labels": LABELS, "modality": {"0": "MRI"}}))
    plan = Plan(
        "hippo4",
        ("MRI",),
        LABELS,
        (1.0, 1.0, 1.0),
        (Normalization("zscore"),),
        NetworkConfig((16, 24, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2))),
        NetworkConfig((24, 16), 4, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2))),
        slice_axis=0,
    )
    plan.save(root / "plan.json")
    return root


def tiny_recipe(root: Path, **sections: dict[str, Any]) -> Recipe:
    """A recipe on the tiny data in ``root``; ``sections`` update the given sections' keys."""
    data: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"path": str(root / "cases.csv")},
        "plan": {"file": str(root / "plan.json")},
        "model": {"family": "unet", "spatial_dims": 3},
        "budget": {"epochs": 2, "iterations_per_epoch": 2},
        "validation": {"every": 1},
        "runtime": {"device": "cpu", "workers": 0, "cache_dir": str(root / "cache")},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return Recipe.from_dict(data)
