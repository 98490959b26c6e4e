"""Training datasets: MSD / nnU-Net folders, CSV manifests (DICOM + SEG), and the per-case checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.training.dataset import load_dataset, read_case


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def blob(shape=(8, 9, 10)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[2:5, 3:6, 4:7] = 1
    label[5:7, 3:6, 4:7] = 2
    return label


def make_nnunet_v2(root: Path, n_cases: int = 2) -> Path:
    """nnU-Net v2 raw layout: channel_names, labels name -> value, _0000/_0001 files, no training list."""
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        for c in range(2):
            save(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz", rng.random((8, 9, 10), dtype=np.float32))
        save(root / "labelsTr" / f"case{i}.nii.gz", blob())
    meta = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "zone": 1, "core": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": "Toy",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_real_msd_folder(shared_data: Path) -> None:
    spec = load_dataset(shared_data / "msd_hippocampus")
    assert len(spec.cases) == 173 and spec.name == "Hippocampus"
    assert spec.labels == {0: "background", 1: "Anterior", 2: "Posterior"} and spec.channels == ("MRI",)
    assert spec.case_ids[0] == "hippocampus_003"
    # hippocampus_003 stores its label as float32 and its image as float32; labels come back uint8
    images, label = read_case(spec.case("hippocampus_003"), spec)
    assert len(images) == 1 and label is not None and label.array.dtype == np.uint8
    assert label.same_grid(images[0]) and set(np.unique(label.array)) == {0, 1, 2}
    assert label.meta.label_names == spec.labels


def test_nnunet_v2_folder_with_channels(tmp_path: Path) -> None:
    spec = load_dataset(make_nnunet_v2(tmp_path / "Dataset001_Toy"))
    assert spec.name == "Toy" and spec.channels == ("T2", "ADC")
    assert spec.labels == {0: "background", 1: "zone", 2: "core"}
    assert [c.id for c in spec.cases] == ["case0", "case1"]
    images, label = read_case(spec.cases[1], spec)
    assert len(images) == 2 and all(im.same_grid(label) for im in images)


def test_msd_4d_image_splits_into_channels(tmp_path: Path) -> None:
    root = tmp_path / "Task09"
    save(root / "imagesTr" / "a.nii.gz", np.random.default_rng(1).random((8, 9, 10, 2), dtype=np.float32))
    save(root / "labelsTr" / "a.nii.gz", blob())
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "x", "2": "y"},
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    spec = load_dataset(root)
    images, _ = read_case(spec.cases[0], spec)
    assert [im.shape for im in images] == [(8, 9, 10), (8, 9, 10)]


def test_checks_name_the_case(tmp_path: Path) -> None:
    root = make_nnunet_v2(tmp_path / "ds", n_cases=3)
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    save(root / "labelsTr" / "case0.nii.gz", blob(), shifted)  # off its image's grid
    bad_values = blob()
    bad_values[0, 0, 0] = 3
    save(root / "labelsTr" / "case1.nii.gz", bad_values)  # undeclared class 3
    (root / "imagesTr" / "case2_0001.nii.gz").unlink()  # one channel missing
    spec = load_dataset(root)
    with pytest.raises(GeometryError, match="case case0: the label grid .* differs from its image"):
        read_case(spec.case("case0"), spec)
    with pytest.raises(InputError, match=r"case case1: label values \[3\] are not declared classes \[0, 1, 2\]"):
        read_case(spec.case("case1"), spec)
    with pytest.raises(InputError, match="case case2 has 1 channel\\(s\\) but the dataset declares 2"):
        read_case(spec.case("case2"), spec)


def test_listing_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no dataset.json"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "x"}}))
    with pytest.raises(InputError, match='needs "modality" or "channel_names"'):
        load_dataset(tmp_path)
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "x"},
        "training": [{"image": "./imagesTr/missing.nii.gz", "label": "./labelsTr/missing.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="case missing: image .* does not exist"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv")


def test_csv_manifest_with_sidecar(tmp_path: Path) -> None:
    root = make_nnunet_v2(tmp_path / "ds")
    manifest = tmp_path / "train.csv"
    manifest.write_text(
        "case,image_0000,image_0001,label\n"
        "p1,ds/imagesTr/case0_0000.nii.gz,ds/imagesTr/case0_0001.nii.gz,ds/labelsTr/case0.nii.gz\n"
        f"p2,{root}/imagesTr/case1_0000.nii.gz,{root}/imagesTr/case1_0001.nii.gz,{root}/labelsTr/case1.nii.gz\n"
    )
    (tmp_path / "train.json").write_text(
        json.dumps({"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "a", "2": "b"}})
    )
    spec = load_dataset(manifest)
    assert spec.name == "train" and spec.case_ids == ("p1", "p2") and spec.channels == ("T2", "ADC")
    images, label = read_case(spec.case("p1"), spec)
    assert len(images) == 2 and label is not None


def test_csv_manifest_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("case,img,label\na,x.nii.gz,y.nii.gz\n")
    with pytest.raises(InputError, match="columns must be case, image"):
        load_dataset(manifest)
    manifest.write_text("case,image,label\na,x.nii.gz,y.nii.gz\n")
    with pytest.raises(InputError, match="row 2: image .*x.nii.gz does not exist"):
        load_dataset(manifest)


def test_csv_manifest_of_dicom_series_with_seg_labels(shared_data: Path, tmp_path: Path) -> None:
    """Real DICOM CT folders; one label a DICOM SEG, one an NRRD label map (dcmqi test data)."""
    base = shared_data / "dicom_seg_rtstruct_examples" / "dcmqi" / "segmentations"
    manifest = tmp_path / "ct.csv"
    manifest.write_text(
        "case,image,label\n"
        f"seg24,{base}/24x38x3/image,{base}/24x38x3/seg/label.seg\n"
        f"nrrd23,{base}/23x38x3/image,{base}/23x38x3/nrrd/label.nrrd\n"
    )
    spec = load_dataset(manifest)  # no sidecar: classes from the label files, modality from DICOM
    assert spec.labels == {0: "background", 1: "label_1"} and spec.channels == ("CT",)
    images, label = read_case(spec.case("seg24"), spec)
    assert images[0].shape == (24, 38, 3) and label is not None and label.same_grid(images[0])
    reference = read_case(spec.case("nrrd23"), spec)[1]
    assert reference is not None and int(reference.array.sum()) > 0
    # the SEG decodes to the same voxels as dcmqi's own NRRD source of it
    from medseg.io import read_volume

    nrrd = read_volume(base / "24x38x3" / "nrrd" / "label.nrrd", kind="label")
    assert np.array_equal(label.array, nrrd.array)
