"""predict_case outputs: label file on the source grid, statistics, probabilities, instances, QC."""

from __future__ import annotations

import csv
import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from medseg.inference import OutputOptions, PostprocessOptions, PredictOptions, Predictor, predict_case
from medseg.inference.outputs import label_stats, value_counts
from medseg.inference.qc import render_qc
from medseg.io.files import read_volume_file
from medseg.volume import Volume
from tests.inference_stubs import Threshold, make_plan, stub_info

CPU = PredictOptions(device="cpu", threads=1, precision="fp32")


@pytest.fixture(scope="module")
def hippo_path(shared_data):
    return shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_004.nii.gz"


def test_case_outputs_on_the_source_grid(hippo_path, tmp_path):
    predictor = Predictor.from_network(
        Threshold(), make_plan(), stub_info(postprocessing={"keep_largest_component": [2]}), CPU
    )
    options = OutputOptions(probabilities=True, postprocess=PostprocessOptions(instances=(1,)))
    result = predict_case(predictor, hippo_path, tmp_path, options)
    assert result.case_id == "hippocampus_004"
    assert {
        "labels",
        "label_names",
        "probabilities",
        "stats_json",
        "stats_csv",
        "qc",
        "instances",
        "instances_csv",
    } <= set(result.outputs)
    assert all(p.is_file() and p.parent == tmp_path for p in result.outputs.values())
    assert {"read", "preprocess", "network", "inverse", "postprocess", "write", "total"} <= set(result.timings)

    source = read_volume_file(hippo_path)
    labels = read_volume_file(result.outputs["labels"], kind="label")
    assert labels.spatial_shape == source.spatial_shape and np.allclose(labels.affine, source.affine, atol=1e-6)
    sidecar = json.loads(result.outputs["label_names"].read_text())
    assert sidecar["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}

    # "auto" largest component from the model's post-processing: class 2 is one component
    from scipy import ndimage

    assert ndimage.label(labels.array == 2, np.ones((3, 3, 3)))[1] == 1

    stats = json.loads(result.outputs["stats_json"].read_text())
    by_label = {row["label"]: row for row in stats["labels"]}
    assert by_label[1]["voxels"] == int((labels.array == 1).sum())
    assert by_label[2]["volume_ml"] == pytest.approx((labels.array == 2).sum() / 1000, abs=1e-4)
    rows = list(csv.DictReader(result.outputs["stats_csv"].open()))
    assert [r["name"] for r in rows] == ["Anterior", "Posterior"]

    probs = nib.load(result.outputs["probabilities"])
    assert probs.shape == (*source.spatial_shape, 3) and np.allclose(probs.affine, source.affine)
    p = probs.get_fdata(dtype=np.float32)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=3e-3)
    assert p.max() <= 1.0 and p.min() >= 0.0

    instances = read_volume_file(result.outputs["instances"], kind="label")
    table = list(csv.DictReader(result.outputs["instances_csv"].open()))
    assert instances.array.max() == len(table) and all(r["class"] == "1" for r in table)
    assert sum(int(r["voxels"]) for r in table) == int((labels.array == 1).sum())
    assert result.outputs["qc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_remap_and_removals_are_applied_before_writing(hippo_path, tmp_path):
    predictor = Predictor.from_network(Threshold(), make_plan(), stub_info(), CPU)
    options = OutputOptions(qc=False, postprocess=PostprocessOptions(largest_component="off", remap={2: 1}))
    result = predict_case(predictor, [read_volume_file(hippo_path)], tmp_path, options, case_id="merged")
    labels = read_volume_file(result.outputs["labels"], kind="label")
    assert set(np.unique(labels.array)) <= {0, 1} and "qc" not in result.outputs
    assert [row["name"] for row in result.stats["labels"]] == ["Anterior"]
    assert result.outputs["labels"].name == "merged.nii.gz"


def test_label_stats_counts_absent_labels_as_zero():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    array = np.zeros((4, 4, 4), np.uint8)
    array[0, 0, :2] = 1
    stats = label_stats(Volume(array, affine, "label"), {0: "bg", 1: "a", 2: "b"})
    assert stats["voxel_volume_mm3"] == 0.5
    assert stats["labels"] == [
        {"label": 1, "name": "a", "voxels": 2, "volume_ml": 0.001},
        {"label": 2, "name": "b", "voxels": 0, "volume_ml": 0.0},
    ]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_value_counts_match_bincount_for_every_label_dtype(dtype):
    array = np.random.default_rng(1).integers(0, 7, (9, 8, 5)).astype(dtype)
    array = array[:, ::-1]  # a non-contiguous view, as restored labels often are
    assert np.array_equal(value_counts(array), np.bincount(array.ravel().astype(np.int64)))
    frozen = np.asfortranarray(array)
    frozen.flags.writeable = False  # label volumes are often read-only views
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(value_counts(frozen), np.bincount(array.ravel().astype(np.int64)))
    assert value_counts(np.zeros((0, 3, 3), dtype)).tolist() == [0]


def test_qc_png_for_empty_and_oblique_labels(tmp_path):
    affine = np.array([[0, 0, 2.0, 5], [-0.7, 0, 0, 1], [0, 1.1, 0, 2], [0, 0, 0, 1]])
    image = Volume(np.random.default_rng(0).normal(size=(20, 16, 12)).astype(np.float32), affine)
    empty = image.with_array(np.zeros((20, 16, 12), np.uint8), kind="label")
    path = render_qc(image, empty, {}, tmp_path / "empty.png", title="nothing")
    assert path.read_bytes()[:4] == b"\x89PNG"
    labels = np.zeros((20, 16, 12), np.uint8)
    labels[5:9, 4:8, 3:6] = 2
    path = render_qc(image, image.with_array(labels, kind="label"), {2: "b"}, tmp_path / "one.png")
    assert path.stat().st_size > 5000
