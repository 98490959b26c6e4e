"""RTSTRUCT out (rt-utils): contours on the real sample DICOM export read back as the label map."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io.dicom import discover_series, load_series, select_series
from medseg.io.palette import label_colour
from medseg.io.rtstruct import fill_contours, read_rtstruct

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rt_utils") is None, reason='rt-utils is not installed (pip install "medseg[rtstruct]")'
)
NAMES = {1: "ellipsoid", 2: "small sphere", 3: "ring"}


@pytest.fixture(scope="module")
def t1post(sample_data: Path):
    """The oblique T1 series of the shipped TCIA export."""
    return load_series(select_series(discover_series(sample_data / "dicom"), "T1post"))


def structures_on(series) -> np.ndarray:
    """Three structures on the series grid: an ellipsoid, a small sphere, a ring with a hole."""
    shape, spacing = series.volume.spatial_shape, series.volume.spacing
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    mm = lambda a, c, s: (a - c) * s  # noqa: E731
    labels = np.zeros(shape, np.uint8)
    labels[
        (mm(i, 110, spacing[0]) / 40) ** 2 + (mm(j, 160, spacing[1]) / 30) ** 2 + (mm(k, 11, spacing[2]) / 25) ** 2 < 1
    ] = 1
    labels[
        (mm(i, 190, spacing[0]) / 8) ** 2 + (mm(j, 160, spacing[1]) / 8) ** 2 + (mm(k, 11, spacing[2]) / 10) ** 2 < 1
    ] = 2
    labels[100:140, 30:70, 3] = 3
    labels[110:130, 40:60, 3] = 0
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_rtstruct_of_sample_export_reads_back_as_the_label_map(t1post, tmp_path: Path) -> None:
    from medseg.io.rtstruct_writer import write_rtstruct

    array = structures_on(t1post)
    labels = t1post.volume.with_array(array, kind="label")
    path = write_rtstruct(labels, t1post, tmp_path / "case_rtstruct.dcm", NAMES)
    back = read_rtstruct(path, t1post)
    assert back.same_grid(t1post.volume) and back.meta.label_names == NAMES
    for value in NAMES:
        assert dice(array == value, back.array == value) >= 0.95
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT" and ds.Manufacturer == "medseg"
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in ds.ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .ContourImageSequence
    }
    assert referenced == {str(d.SOPInstanceUID) for d in t1post.datasets}
    colours = {int(c.ReferencedROINumber): tuple(int(v) for v in c.ROIDisplayColor) for c in ds.ROIContourSequence}
    assert colours == {n: label_colour(n) for n in NAMES}


def test_empty_labels_are_refused_with_the_reason(t1post, tmp_path: Path) -> None:
    from medseg.io.rtstruct_writer import write_rtstruct

    empty = t1post.volume.with_array(np.zeros(t1post.volume.spatial_shape, np.uint8), kind="label")
    with pytest.raises(InputError, match="the segmentation is empty"):
        write_rtstruct(empty, t1post, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_contours_through_edge_voxel_centres_fill_exactly_those_voxels() -> None:
    square = np.array([[10, 10], [19, 10], [19, 19], [10, 19]], float)  # through the centres of the edge voxels
    hole = np.array([[13, 13], [16, 13], [16, 16], [13, 16]], float)  # through the centres of the ring's inner voxels
    plane = fill_contours([square, hole], (30, 30))
    expected = np.zeros((30, 30), bool)
    expected[10:20, 10:20] = True
    expected[14:16, 14:16] = False
    assert np.array_equal(plane, expected)


def test_predict_writes_rtstruct_for_dicom_input(sample_data: Path, tmp_path: Path) -> None:
    from medseg.inference.options import OutputOptions
    from medseg.inference.outputs import case_paths
    from medseg.inference.writer import write_dicom_outputs

    series = load_series(select_series(discover_series(sample_data / "dicom"), "T1post"))
    labels = series.volume.with_array(structures_on(series), kind="label")
    stats: dict = {}
    outputs = write_dicom_outputs(
        "case",
        labels,
        NAMES,
        series,
        case_paths(tmp_path, "case"),
        OutputOptions(dicom_seg=False, rtstruct=True),
        stats,
    )
    assert outputs == {"rtstruct": tmp_path / "case_rtstruct.dcm"} and not stats
    stats = {}
    assert (
        write_dicom_outputs(
            "case", labels, NAMES, None, case_paths(tmp_path, "nifti"), OutputOptions(rtstruct=True), stats
        )
        == {}
    )
    assert stats["rtstruct_skipped"] == "the input is not a DICOM series"
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_predict_rtstruct_of_the_sample_export_matches_its_labels(sample_data: Path, tmp_path: Path) -> None:
    """The shipped model on the sample export's T1 series (about 90 s on 2 CPU cores), with --rtstruct."""
    from medseg.cli import main
    from medseg.io.files import read_volume_file

    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "-m",
                "hippocampus",
                "-i",
                str(sample_data / "dicom"),
                "--series",
                "T1post",
                "-o",
                str(out),
                "--rtstruct",
                "--backend",
                "torch",
                "--no-qc",
            ]
        )
        == 0
    )
    (labels_path,) = out.glob("*.nii.gz")
    labels = read_volume_file(labels_path, kind="label")
    series = load_series(select_series(discover_series(sample_data / "dicom"), "T1post"))
    back = read_rtstruct(next(out.glob("*_rtstruct.dcm")), series)
    values = [int(v) for v in np.unique(np.asarray(labels.array)) if v]  # ROI n = n-th label value present
    assert values and list(back.meta.label_names.values()) == [("Anterior", "Posterior")[v - 1] for v in values]
    for n, value in enumerate(values, start=1):
        assert dice(np.asarray(labels.array) == value, back.array == n) >= 0.95
