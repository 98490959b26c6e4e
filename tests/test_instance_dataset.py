"""Instance datasets (images/ + labels/, MSD-style 3D with "instances": true) and their object fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.errors import InputError
from medseg.training.dataset import load_dataset, read_case
from medseg.training.object_fingerprint import compute_object_fingerprint


def _write_pair(root: Path, name: str, labels: np.ndarray) -> None:
    grey = (labels > 0).astype(np.uint8) * 200 + 20
    Image.fromarray(grey).save(root / "images" / f"{name}.png")
    Image.fromarray(labels.astype(np.uint16)).save(root / "labels" / f"{name}.png")


def _hand_made(root: Path) -> Path:
    (root / "images").mkdir(parents=True), (root / "labels").mkdir()
    a = np.zeros((20, 30), np.uint16)
    a[1:5, 1:5] = 1  # 16 px, touches 2
    a[5:9, 1:5] = 2  # 16 px
    a[12:18, 20:26] = 3  # 36 px, alone
    b = np.zeros((20, 30), np.uint16)
    b[3:7, 3:11] = 700  # 32 px, alone, id far above 255
    _write_pair(root, "a", a)
    _write_pair(root, "b", b)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "images" / "c.png")  # unlabelled
    return root


def test_images_labels_folder_loads_as_instance_dataset(tmp_path: Path) -> None:
    spec = load_dataset(_hand_made(tmp_path / "ds"))
    assert spec.instances and spec.case_ids == ("a", "b", "c") and spec.channels == ("grey",)
    assert spec.labels == {0: "background", 1: "object"} and spec.case("c").label is None
    images, label = read_case(spec.case("b"), spec)  # id 700 is not a class: accepted for instances
    assert label is not None and int(label.array.max()) == 700 and label.same_grid(images[0])


def test_object_fingerprint_of_hand_made_dataset(tmp_path: Path) -> None:
    fingerprint = compute_object_fingerprint(load_dataset(_hand_made(tmp_path / "ds")), workers=1)
    summary = fingerprint.summary()
    assert summary["n_cases"] == 3 and summary["n_images"] == 2 and summary["dims"] == 2
    assert summary["objects_per_image"] == {"min": 1, "median": 2.0, "mean": 2.0, "max": 3, "total": 4}
    assert sorted(fingerprint.pooled("sizes").tolist()) == [16, 16, 32, 36]
    assert fingerprint.touching_fraction == 0.5  # 2 of 4 objects touch another
    assert summary["size_mm"] is None and summary["spacing_known"] is False
    extents = fingerprint.pooled("box_extents")
    assert sorted(map(tuple, extents.tolist())) == [(4, 4, 1), (4, 4, 1), (6, 6, 1), (8, 4, 1)]
    objects = summary["intensity"][0]["objects"]
    assert objects["min"] == objects["max"] == 220.0  # objects are 220 everywhere, background 20
    assert summary["intensity"][0]["image"]["min"] == 20.0


def test_msd_style_3d_instance_dataset(tmp_path: Path) -> None:
    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True), (root / "labelsTr").mkdir()
    labels = np.zeros((12, 12, 8), np.uint16)
    labels[1:5, 1:5, 1:5], labels[5:9, 1:5, 1:5] = 300, 301  # touching cubes
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(labels.astype(np.float32), affine), root / "imagesTr" / "c1.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / "c1.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "cell"}, "modality": {"0": "MR"}, "instances": True})
    )
    spec = load_dataset(root)
    assert spec.instances
    fingerprint = compute_object_fingerprint(spec, workers=1)
    summary = fingerprint.summary()
    assert summary["dims"] == 3 and summary["touching_fraction"] == 1.0
    assert summary["size_mm"]["p50"] == pytest.approx(64 * 0.5)  # 64 voxels of 0.5 mm³


def test_semantic_dataset_is_refused_by_object_fingerprint(tmp_path: Path) -> None:
    root = _hand_made(tmp_path / "ds")
    spec = load_dataset(root)
    from dataclasses import replace

    with pytest.raises(InputError, match="instance maps"):
        compute_object_fingerprint(replace(spec, instances=False))


def test_real_dsb_folder_and_fingerprint(shared_data: Path) -> None:
    spec = load_dataset(shared_data / "dsb2018_nuclei")
    assert spec.instances and len(spec.cases) == 542 and spec.channels == ("red", "green", "blue")
    fingerprint = compute_object_fingerprint(spec, max_cases=4, workers=1)
    expected = sum(
        len(np.unique(np.asarray(Image.open(shared_data / "dsb2018_nuclei" / "labels" / f"{im.case}.png")))) - 1
        for im in fingerprint.images
    )
    assert int(fingerprint.counts.sum()) == expected
    assert 0.0 <= fingerprint.touching_fraction < 1.0
    assert len(fingerprint.summary()["intensity"]) == 3
