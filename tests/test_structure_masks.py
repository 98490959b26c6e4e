"""Overlapping SEG segments and RTSTRUCT ROIs read into one mask each: nothing lost, overlaps named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.io.dicom import discover_series, load_series, select_series
from medseg.io.files import read_volume_file
from medseg.io.rtstruct import read_rtstruct, read_rtstruct_masks
from medseg.io.seg import read_seg, read_seg_masks
from medseg.volume import LPS_TO_RAS, Volume

SEG_DIR = "dicom_seg_rtstruct_examples/dcmqi/segmentations"
DICOMPYLER = "dicom_seg_rtstruct_examples/dicompyler"


@pytest.fixture(scope="module")
def ct3(shared_data: Path):
    return load_series(select_series(discover_series(shared_data / SEG_DIR / "ct-3slice"), None), min_slices=1)


@pytest.fixture(scope="module")
def breast_grid(shared_data: Path) -> Volume:
    """The grid of dicompyler's 98-slice breast plan CT (only its top slice, ct.0.dcm, is shipped).

    In-plane axes, origin and pixel size come from ct.0.dcm (pixels 4x coarser, to keep the test
    small); the 98 slices lie 3 mm apart down from it, where the plan's contours are.
    """
    ct = pydicom.dcmread(shared_data / DICOMPYLER / "ct.0.dcm", stop_before_pixels=True)
    orientation = np.asarray(ct.ImageOrientationPatient, float).reshape(2, 3)
    normal = np.cross(orientation[0], orientation[1])
    row, col = (float(v) * 4 for v in ct.PixelSpacing)
    top = np.asarray(ct.ImagePositionPatient, float)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = orientation[0] * col, orientation[1] * row, -normal * 3.0
    lps[:3, 3] = top
    return Volume(np.zeros((128, 128, 98), np.int16), LPS_TO_RAS @ lps)


def test_partial_overlap_segments_each_equal_dcmqi_source_maps(shared_data: Path, ct3) -> None:
    maps = [
        read_volume_file(shared_data / SEG_DIR / f"partial_overlaps-{n}.nrrd", kind="label").array for n in (1, 2, 3)
    ]
    structures = read_seg_masks(shared_data / SEG_DIR / "partial_overlaps.dcm", ct3)
    masks = structures.masks.array
    assert masks.shape == (*ct3.volume.spatial_shape, 5) and structures.masks.same_grid(ct3.volume)
    numbers = structures.masks.meta.extra["segment_numbers"]
    for channel, number in enumerate(numbers):  # each segment whole, from the source label maps of dcmqi
        expected = np.logical_or.reduce([m == number for m in maps])
        assert expected.any() and np.array_equal(masks[..., channel] > 0, expected)
    pairs = {(o.first, o.second): o.voxels for o in structures.overlaps}
    for (a, b), voxels in pairs.items():
        ca, cb = structures.names.index(a), structures.names.index(b)
        assert voxels == np.count_nonzero(masks[..., ca] & masks[..., cb])
    assert pairs[("GREEN", "ORANGE")] > 0
    label_map = read_seg(shared_data / SEG_DIR / "partial_overlaps.dcm", ct3)
    lost = sum(np.count_nonzero(masks[..., c] & (label_map.array != n)) for c, n in enumerate(numbers))
    assert lost > 0  # what the one-value-per-voxel label map cannot hold


def test_breast_plan_rois_overlap_body_and_every_roi_keeps_its_voxels(shared_data: Path, breast_grid, caplog) -> None:
    path = shared_data / DICOMPYLER / "rtss.dcm"
    with caplog.at_level(logging.WARNING, logger="medseg.io.rtstruct"):
        structures = read_rtstruct_masks(path, breast_grid)
    assert "not on a slice" not in caplog.text  # every contour found its slice of the plan's grid
    assert "ROI 'Areola' has no closed contours" in caplog.text  # a point ROI: no area
    names = structures.names
    assert names[0] == "BODY" and len(names) == 10
    masks = structures.masks.array > 0
    assert all(masks[..., c].any() for c, name in enumerate(names) if name != "Areola")
    for name in ("Heart", "Lt Lung", "Breast"):  # each ROI alone gives exactly its mask
        alone = read_rtstruct(path, breast_grid, rois=[name]).array > 0
        assert np.array_equal(masks[..., names.index(name)], alone)
    inside_body = {o.second: o.voxels for o in structures.overlaps if o.first == "BODY"}
    heart = names.index("Heart")
    assert inside_body["Heart"] == np.count_nonzero(masks[..., 0] & masks[..., heart]) > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medseg.io.rtstruct"):
        labels = read_rtstruct(path, breast_grid)
    assert "ROIs overlap: 'BODY' and 'Borders' share" in caplog.text and "'BODY' and 'Heart' share" in caplog.text
    assert "'Tumor Bed' and 'Tumor Bed Block' share" in caplog.text
    assert np.count_nonzero(labels.array == 1) < np.count_nonzero(masks[..., 0])  # the label map lost BODY voxels
    assert np.array_equal(labels.array == heart + 1, masks[..., heart] & ~np.any(masks[..., heart + 1 :], axis=3))


def test_convert_masks_writes_one_channel_per_structure(shared_data: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "structures.nii.gz"
    with caplog.at_level(logging.INFO):
        code = main(["convert", str(shared_data / SEG_DIR / "partial_overlaps.dcm"), str(out), "--masks"])
    assert code == 0
    assert "segments overlap: 'GREEN' and 'ORANGE'" in caplog.text and "kept in every mask" in caplog.text
    image = nib.load(out)
    assert image.shape[3] == 5 and image.get_data_dtype() == np.uint8
    names = json.loads(out.with_name("structures.json").read_text())["labels"]
    assert names["1"] == "GREEN" or "GREEN" in names.values()
    overlap = np.asarray(image.dataobj).sum(axis=3)
    assert overlap.max() >= 2  # voxels in several structures kept in several channels


def test_convert_seg_to_seg_nrrd_puts_overlaps_in_layers(shared_data: Path, ct3, tmp_path: Path) -> None:
    import slicerio

    out = tmp_path / "overlaps.seg.nrrd"
    assert main(["convert", str(shared_data / SEG_DIR / "partial_overlaps.dcm"), str(out)]) == 0
    segmentation = slicerio.read_segmentation(str(out))
    assert segmentation["voxels"].ndim == 4  # overlapping segments need more than one layer
    assert np.allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ ct3.volume.affine, atol=1e-4)
    structures = read_seg_masks(shared_data / SEG_DIR / "partial_overlaps.dcm", ct3)
    for channel, name in enumerate(structures.names):
        assert np.array_equal(slicerio.segment_mask(segmentation, name), structures.masks.array[..., channel] > 0)


def test_masks_option_needs_seg_or_rtstruct(sample_data: Path, tmp_path: Path, capsys) -> None:
    image = sample_data / "hippocampus" / "imagesTs" / "hippocampus_020.nii.gz"
    assert main(["convert", str(image), str(tmp_path / "x.nii.gz"), "--masks"]) == 2
    assert "--masks needs a DICOM SEG or RTSTRUCT" in capsys.readouterr().err
