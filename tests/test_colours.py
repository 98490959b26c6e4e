"""One palette everywhere: colour tables parse back, and equal the DICOM SEG's display colours,
the Slicer segmentation's colours and the QC picture's legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io.colour_tables import read_itksnap_labels, read_slicer_ctbl, slicer_name, write_colour_tables
from medseg.io.dicom import discover_series, load_series, select_series
from medseg.io.palette import PALETTE, colour_float, label_colour, rgb_from_dicom
from medseg.io.seg import write_seg
from medseg.io.segnrrd import write_labels_seg_nrrd
from medseg.volume import LPS_TO_RAS

NAMES = {1: "left hippocampus", 2: "posterior", 3: 'odd "name"', 21: "wraps round"}


@pytest.fixture(scope="module")
def t1post(sample_data: Path):
    return load_series(select_series(discover_series(sample_data / "dicom"), "T1post"))


def blobs_on(series, values: tuple[int, ...]) -> np.ndarray:
    """One box per label value on the series grid."""
    labels = np.zeros(series.volume.spatial_shape, np.uint8)
    for n, value in enumerate(values):
        labels[40 + 50 * n : 80 + 50 * n, 100:150, 8:14] = value
    return labels


def test_palette_is_by_value_distinct_and_has_no_greys() -> None:
    assert label_colour(1) == (255, 0, 0) and label_colour(21) == label_colour(1)
    assert len(set(PALETTE)) == len(PALETTE)
    assert all(max(c) - min(c) >= 100 for c in PALETTE)  # stands out on a greyscale image
    with pytest.raises(ValueError, match="background"):
        label_colour(0)


def test_colour_tables_parse_back_with_names_and_palette_colours(tmp_path: Path) -> None:
    paths = write_colour_tables(NAMES, tmp_path / "case.nii.gz")
    assert paths == {"slicer_ctbl": tmp_path / "case.ctbl", "itksnap_labels": tmp_path / "case_itksnap.txt"}
    slicer = read_slicer_ctbl(paths["slicer_ctbl"])
    itksnap = read_itksnap_labels(paths["itksnap_labels"])
    assert slicer[0] == ("Background", (0, 0, 0)) and itksnap[0] == ("Clear Label", (0, 0, 0))
    for value, name in NAMES.items():
        assert slicer[value] == (slicer_name(name), label_colour(value))
        assert itksnap[value] == (name.replace('"', "'"), label_colour(value))
    assert slicer[1][0] == "left_hippocampus"


def test_malformed_colour_tables_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ctbl"
    bad.write_text("# header\n1 liver 255 0\n")
    with pytest.raises(InputError, match=r"bad.ctbl:2 has 4 fields"):
        read_slicer_ctbl(bad)
    bad.write_text("1 255 0 0 1 1 1 no quotes\n")
    with pytest.raises(InputError, match=r"bad.ctbl:1 is not 'IDX R G B A VIS MSH \"LABEL\"'"):
        read_itksnap_labels(bad)


def test_seg_display_colours_equal_the_colour_tables(t1post, tmp_path: Path) -> None:
    array = blobs_on(t1post, (1, 2, 3))
    labels = t1post.volume.with_array(array, kind="label")
    names = {1: "anterior", 2: "posterior", 3: "third"}
    write_seg(labels, t1post, tmp_path / "seg.dcm", names)
    tables = write_colour_tables(names, tmp_path / "case.nii.gz")
    slicer, itksnap = read_slicer_ctbl(tables["slicer_ctbl"]), read_itksnap_labels(tables["itksnap_labels"])
    segments = pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence
    assert [int(s.SegmentNumber) for s in segments] == [1, 2, 3]
    for segment in segments:
        shown = rgb_from_dicom(segment.RecommendedDisplayCIELabValue)
        assert shown == slicer[int(segment.SegmentNumber)][1] == itksnap[int(segment.SegmentNumber)][1]


def test_seg_nrrd_holds_the_label_map_on_its_grid_with_names_and_colours(sample_data: Path, tmp_path: Path) -> None:
    import slicerio

    from medseg.io.files import read_volume_file

    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / "hippocampus_107.nii.gz", kind="label")
    path = write_labels_seg_nrrd(labels, tmp_path / "case.seg.nrrd", {1: "anterior", 2: "posterior", 5: "absent"})
    segmentation = slicerio.read_segmentation(str(path))
    assert np.array_equal(segmentation["voxels"], np.asarray(labels.array))
    assert np.allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ labels.affine)
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert set(segments) == {"anterior", "posterior", "absent"}
    for value, name in ((1, "anterior"), (2, "posterior"), (5, "absent")):
        assert segments[name]["labelValue"] == value
        assert np.allclose(segments[name]["color"], colour_float(label_colour(value)), atol=1e-4)
        assert np.array_equal(slicerio.segment_mask(segmentation, name), np.asarray(labels.array) == value)


def test_qc_picture_legend_uses_the_palette(sample_data: Path, tmp_path: Path) -> None:
    from matplotlib.colors import to_rgb

    from medseg.inference import qc
    from medseg.io.files import read_volume_file

    colours, _ = qc._colours([1, 2, 7])
    assert {v: tuple(round(c * 255) for c in to_rgb(rgb)) for v, rgb in colours.items()} == {
        1: label_colour(1),
        2: label_colour(2),
        7: label_colour(7),
    }
    image = read_volume_file(sample_data / "hippocampus" / "imagesTs" / "hippocampus_107.nii.gz")
    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / "hippocampus_107.nii.gz", kind="label")
    from PIL import Image

    picture = np.asarray(Image.open(qc.render_qc(image, labels, {1: "a", 2: "p"}, tmp_path / "qc.png")).convert("RGB"))
    legend = picture[-60:].reshape(-1, 3)  # the legend patches are drawn at full colour
    assert all(np.any(np.all(legend == label_colour(v), axis=1)) for v in (1, 2))
