"""Synthetic instance data with known ids, shared by the instance-model tests (not a test module).

Objects are balls (3D) or discs (2D) that touch their neighbours. Their brightness falls from the
centre to the rim (like stained nuclei), so touching objects meet in a shallow valley and a model
can learn where one ends and the next begins; ids are known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def touching_objects(
    shape: Sequence[int],
    rng: np.random.Generator,
    count: int,
    radius: tuple[float, float],
    squash: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, ids uint16)`` of ``count`` balls/discs (ellipsoids when ``squash`` scales the
    axes), each placed touching or slightly overlapping an earlier one (overlaps go to the nearer
    centre), numbered 1..N in placement order."""
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    scale = np.asarray(squash if squash is not None else [1.0] * len(shape), dtype=np.float32)
    centres, radii = [], []
    for _ in range(count * 20):
        if len(centres) == count:
            break
        r = float(rng.uniform(*radius))
        if centres:
            k = int(rng.integers(len(centres)))
            direction = rng.normal(size=len(shape))
            direction /= np.linalg.norm(direction)
            centre = centres[k] + direction * (r + radii[k]) * 0.9 / scale  # overlaps its neighbour a little
        else:
            centre = np.array([s / 2 for s in shape], dtype=np.float64)
        margin = r / scale + 1
        if np.any(centre < margin) or np.any(centre > np.array(shape) - 1 - margin):
            continue
        if any(np.linalg.norm((centre - c) * scale) < 0.8 * (r + q) for c, q in zip(centres, radii)):
            continue
        centres.append(centre)
        radii.append(r)
    distance = np.full(shape, np.inf, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.uint16)
    image = np.zeros(shape, dtype=np.float32)
    for n, (centre, r) in enumerate(zip(centres, radii), start=1):
        offset = (grid - np.asarray(centre, dtype=np.float32).reshape(-1, *[1] * len(shape))) * scale.reshape(
            -1, *[1] * len(shape)
        )
        d = np.sqrt((offset**2).sum(0)) / r
        inside = (d <= 1.0) & (d < distance)
        ids[inside] = n
        distance[inside] = d[inside]
        image = np.maximum(image, np.clip(1.0 - d**2, 0.0, None))
    image += rng.normal(0.0, 0.05, shape).astype(np.float32)
    return image.astype(np.float32), ids


def write_instance_dataset(
    root: Path,
    cases: int,
    shape: Sequence[int],
    seed: int = 0,
    count: int = 4,
    radius: tuple[float, float] = (5.0, 7.0),
) -> Path:
    """An MSD-style 3D instance dataset (``imagesTr``/``labelsTr`` NIfTI, ``"instances": true``) in ``root``."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    names = []
    for n in range(cases):
        image, ids = touching_objects(shape, rng, count, radius)
        name = f"blob_{n:03d}"
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(ids, np.eye(4)), root / "labelsTr" / f"{name}.nii.gz")
        names.append(name)
    meta = {
        "name": "blobs3d",
        "labels": {"0": "background", "1": "blob"},
        "modality": {"0": "MRI"},
        "instances": True,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
