"""DICOM SEG in and out, checked against real SEG files, their source label maps and real series."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import DicomError, GeometryError, InputError
from medseg.io.dicom import discover_series, load_series, select_series
from medseg.io.seg import CodedTerm, SegmentCoding, derived_frame_of_reference, read_seg, segment_codes, write_seg
from medseg.volume import Volume

SEG_DIR = "dicom_seg_rtstruct_examples/dcmqi/segmentations"
CT2 = "dicom_seg_rtstruct_examples/pydicom_testfiles/dicomdirtests/77654033/CT2"
TCIA_T1 = "dicom_tcia_brain_tumor_progression/dicom/PGBM-003/11-T1post-18670"
DECUBITUS = ["HFS_3_t1_fl2d_sag", "HFP_2_t1_fl2d_sag", "HFDR_2_t1_fl2d_sag", "HFDL_2_t1_fl2d_sag"]
D2N = "dicom_dicom2nifti_testdata/tests/data"
ANONYMISED = ("PatientSex", "PatientBirthDate", "AccessionNumber")


def load(folder: Path, select: str | None = None, resample: bool = False):
    """The one (or selected) image series under ``folder``, loaded with medseg's DICOM loader."""
    return load_series(select_series(discover_series(folder), select), resample=resample, min_slices=1)


def nrrd(path: Path) -> Volume:
    import SimpleITK as sitk

    return Volume.from_sitk(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def ct3(shared_data: Path):
    return load(shared_data / SEG_DIR / "ct-3slice")


# ---------------------------------------------------------------------------- reading real SEGs
def test_dcmqi_liver_equals_its_label_map(shared_data: Path, ct3) -> None:
    # liver.dcm stores its frames z ascending; 01.dcm is the top slice: placement must use positions/UIDs
    first_frame_z = pydicom.dcmread(shared_data / SEG_DIR / "liver.dcm", stop_before_pixels=True)
    z0 = float(first_frame_z.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient[2])
    assert z0 == pytest.approx(-128.69) and ct3.datasets[0].ImagePositionPatient[2] == pytest.approx(-128.69)

    labels = read_seg(shared_data / SEG_DIR / "liver.dcm", ct3)
    expected = nrrd(shared_data / SEG_DIR / "liver_seg.nrrd")
    assert labels.kind == "label"
    assert labels.same_grid(expected) and labels.same_grid(ct3.volume)
    assert np.array_equal(labels.array, expected.array)
    assert int(np.count_nonzero(labels.array)) == 107098
    assert labels.meta.label_names == {1: "Liver"}


@pytest.mark.parametrize("strip", ["PlanePositionSequence", "DerivationImageSequence"])
def test_placement_by_uid_alone_and_by_position_alone(shared_data: Path, tmp_path: Path, ct3, strip: str) -> None:
    ds = pydicom.dcmread(shared_data / SEG_DIR / "liver.dcm")
    for item in ds.PerFrameFunctionalGroupsSequence:
        delattr(item, strip)
    if strip == "PlanePositionSequence":  # keep the SEG valid: positions no longer index the frames
        ds.DimensionIndexSequence = ds.DimensionIndexSequence[:1]
        for item in ds.PerFrameFunctionalGroupsSequence:
            item.FrameContentSequence[0].DimensionIndexValues = [1]
    ds.save_as(tmp_path / "liver.dcm")
    labels = read_seg(tmp_path / "liver.dcm", ct3)
    assert np.array_equal(labels.array, nrrd(shared_data / SEG_DIR / "liver_seg.nrrd").array)


def test_uid_and_position_that_disagree_are_refused(shared_data: Path, tmp_path: Path, ct3) -> None:
    ds = pydicom.dcmread(shared_data / SEG_DIR / "liver.dcm")
    frames = ds.PerFrameFunctionalGroupsSequence
    first = frames[0].DerivationImageSequence[0].SourceImageSequence[0]
    second = frames[1].DerivationImageSequence[0].SourceImageSequence[0]
    first.ReferencedSOPInstanceUID, second.ReferencedSOPInstanceUID = (
        second.ReferencedSOPInstanceUID,
        first.ReferencedSOPInstanceUID,
    )
    ds.save_as(tmp_path / "swapped.dcm")
    with pytest.raises(GeometryError, match="references slice .* but its plane position lies on slice"):
        read_seg(tmp_path / "swapped.dcm", ct3)


def test_dcmqi_partial_overlaps_highest_segment_wins(shared_data: Path, ct3, caplog) -> None:
    maps = [nrrd(shared_data / SEG_DIR / f"partial_overlaps-{n}.nrrd").array for n in (1, 2, 3)]
    assert np.count_nonzero((maps[0] > 0) & (maps[1] > 0)) > 0  # the segments really overlap
    with caplog.at_level(logging.INFO, logger="medseg.io.seg"):
        labels = read_seg(shared_data / SEG_DIR / "partial_overlaps.dcm", ct3)
    assert np.array_equal(labels.array, np.maximum.reduce(maps))
    assert sorted(labels.meta.label_names) == [1, 2, 3, 4, 5]
    assert "segments overlap: 'GREEN' and 'ORANGE' share" in caplog.text and "--masks" in caplog.text


@pytest.mark.parametrize("case", ["23x38x3", "24x38x3"])
@pytest.mark.parametrize("reference", ["Image*", "Multiframe*"])
def test_dcmqi_tiny_seg_on_classic_and_enhanced_reference(shared_data: Path, case: str, reference: str) -> None:
    series = load(shared_data / SEG_DIR / case, select=reference)
    labels = read_seg(shared_data / SEG_DIR / case / "seg" / "label.seg", series)
    expected = nrrd(shared_data / SEG_DIR / case / "nrrd" / "label.nrrd")
    assert labels.same_grid(expected)
    assert np.array_equal(labels.array, expected.array)
    assert labels.array.any()


@pytest.mark.parametrize("name", ["noppv", "ppv5"])
def test_dcmqi_labelmap_seg(shared_data: Path, name: str) -> None:
    series = load(shared_data / SEG_DIR / "24x38x3", select="Image*")
    labels = read_seg(shared_data / SEG_DIR / f"sparse-labelmap-{name}.dcm", series)
    expected = nrrd(shared_data / SEG_DIR / f"sparse_labelmap_{name}_seg.nrrd")
    # the NRRD fills the slice with no frame with the pixel padding value (5); it is no segment
    assert np.array_equal(labels.array, np.where(expected.array == 5, 0, expected.array))
    assert labels.meta.label_names == {1: "Liver"}


@pytest.fixture(scope="module")
def ct2_regular(shared_data: Path, tmp_path_factory):
    """The three evenly spaced slices of pydicom's 16x16 CT series (the fourth is 200 mm away)."""
    folder = tmp_path_factory.mktemp("ct2")
    for name in ("17136", "17166", "17196"):
        shutil.copy(shared_data / CT2 / name, folder / name)
    return load(folder)


@pytest.mark.parametrize("name", ["binary", "binary_fractional", "true_fractional"])
def test_highdicom_segs_match_highdicom_decoding(shared_data: Path, ct2_regular, name: str) -> None:
    import highdicom as hd

    path = shared_data / "dicom_seg_rtstruct_examples/highdicom" / f"seg_image_ct_{name}.dcm"
    labels = read_seg(path, ct2_regular)
    uids = [str(ds.SOPInstanceUID) for ds in ct2_regular.datasets]
    fractions = hd.seg.segread(path).get_pixels_by_source_instance(uids, rescale_fractional=True)[..., 0]
    expected = np.transpose(fractions >= 0.5, (2, 1, 0)).astype(np.uint8)  # (k, row, col) -> (i, j, k)
    assert np.array_equal(labels.array, expected)
    assert labels.array.any()
    if name == "true_fractional":  # some pixels are below 0.5 and must be dropped
        assert np.count_nonzero(fractions) > np.count_nonzero(fractions >= 0.5)


def test_frame_outside_the_reference_is_refused(shared_data: Path, ct2_regular) -> None:
    path = shared_data / "dicom_seg_rtstruct_examples/highdicom/seg_image_ct_binary_overlap.dcm"
    with pytest.raises(GeometryError, match="falls outside the reference grid|does not lie on the voxels"):
        read_seg(path, ct2_regular)  # it also has frames on the slice at z = -99.5 mm


def test_resampled_reference_is_refused_with_hint(shared_data: Path) -> None:
    resampled = load(shared_data / CT2, resample=True)
    path = shared_data / "dicom_seg_rtstruct_examples/highdicom/seg_image_ct_binary.dcm"
    with pytest.raises(GeometryError, match="without --resample"):
        read_seg(path, resampled)


def test_non_seg_file_is_refused(shared_data: Path, ct3) -> None:
    with pytest.raises(DicomError, match="not a DICOM SEG"):
        read_seg(shared_data / SEG_DIR / "ct-3slice" / "01.dcm", ct3)


# ---------------------------------------------------------------------------- writing
def asymmetric_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Off-centre L-shaped block (1), a bar (2) and a one-slice patch (3): any flip or shift shows."""
    i, j, k = shape
    labels = np.zeros(shape, dtype=np.uint8)
    labels[5:40, 8:18, 2:6] = 1
    labels[5:15, 18:50, 2:6] = 1  # the L's foot
    labels[i // 2 : i // 2 + 12, j - 30 : j - 4, k - 4 : k - 1] = 2
    labels[i - 25 : i - 3, 3:9, 1] = 3
    return labels


def check_written_seg(path: Path, series, labels: np.ndarray) -> None:
    """Independent checks of a written SEG: highdicom decoding by source instance, positions, refs."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    by_instance = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    assert np.array_equal(np.transpose(by_instance, (2, 1, 0)), labels)
    positions = {uid: np.asarray(series.frame_positions[k]) for k, uid in enumerate(uids)}
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        assert np.allclose(ipp, positions[source], atol=1e-3)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.datasets[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == series.datasets[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == series.datasets[0].StudyInstanceUID


@pytest.mark.parametrize("folder", [TCIA_T1] + [f"dicom_dcm_qa_decubitus/dicom/{d}" for d in DECUBITUS])
def test_write_seg_round_trip_on_real_series(shared_data: Path, tmp_path: Path, folder: str) -> None:
    series = load(shared_data / folder)
    labels = asymmetric_labels(series.volume.spatial_shape)
    volume = series.volume.with_array(labels, kind="label")
    path = write_seg(volume, series, tmp_path / "seg.dcm", {1: "liver", 2: "tumour", 3: "patch"})
    check_written_seg(path, series, labels)
    back = read_seg(path, series)
    assert back.same_grid(series.volume)
    assert np.array_equal(back.array, labels)
    assert back.meta.label_names == {1: "liver", 2: "tumour", 3: "patch"}
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]  # no temp file left


@pytest.mark.parametrize(
    "folder, nifti",
    [
        (TCIA_T1, "dicom_tcia_brain_tumor_progression/ref_dcm2niix/PGBM-003_11_T1post.nii.gz"),
        (
            "dicom_dcm_qa_decubitus/dicom/HFDL_2_t1_fl2d_sag",
            "dicom_dcm_qa_decubitus/ref_dcm2niix/HFDL_2_t1_fl2d_sag_t1_fl2d_sag_20220407152351.nii.gz",
        ),
    ],
)
def test_written_seg_lands_on_the_same_world_positions_of_dcm2niix_grid(
    shared_data: Path, tmp_path: Path, folder: str, nifti: str
) -> None:
    import nibabel as nib

    series = load(shared_data / folder)
    labels = asymmetric_labels(series.volume.spatial_shape)
    path = write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "seg.dcm")
    grid = Volume.from_nibabel(nib.load(str(shared_data / nifti)))  # dcm2niix flips the row axis
    placed = read_seg(path, grid)
    # same world point <-> same label, through the two independent affines
    to_grid = np.linalg.inv(grid.affine) @ series.volume.affine
    assert not np.allclose(to_grid, np.eye(4), atol=1e-3)  # really a different index grid
    ijk = np.argwhere(labels > 0)
    target = np.rint(ijk @ to_grid[:3, :3].T + to_grid[:3, 3]).astype(int)
    assert np.array_equal(placed.array[tuple(target.T)], labels[tuple(ijk.T)])
    assert np.count_nonzero(placed.array) == len(ijk)


def test_write_seg_on_enhanced_multiframe_source(shared_data: Path, tmp_path: Path) -> None:
    series = load(shared_data / SEG_DIR / "24x38x3", select="Multiframe*")
    assert len(series.datasets) == 1
    labels = np.zeros(series.volume.spatial_shape, dtype=np.uint8)
    labels[2:9, 5:30, 0] = 1
    labels[12:20, 3:7, 2] = 2
    path = write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "mf.dcm")
    assert np.array_equal(read_seg(path, series).array, labels)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    frames = {
        int(i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for i in seg.PerFrameFunctionalGroupsSequence
    }
    assert frames == {1, 3}


def test_label_gaps_keep_segment_numbers(shared_data: Path, tmp_path: Path, ct3) -> None:
    labels = np.zeros(ct3.volume.spatial_shape, dtype=np.uint8)
    labels[100:150, 200:260, 1] = 1
    labels[300:320, 40:90, 0:3] = 3
    path = write_seg(ct3.volume.with_array(labels, kind="label"), ct3, tmp_path / "gap.dcm", {1: "a", 3: "c"})
    back = read_seg(path, ct3)
    assert np.array_equal(back.array, labels)
    assert back.meta.label_names == {1: "a", 2: "label 2", 3: "c"}


def test_write_seg_refuses_bad_labels(shared_data: Path, tmp_path: Path, ct3) -> None:
    shape = ct3.volume.spatial_shape
    shifted = Volume(np.ones(shape, np.uint8), ct3.volume.affine + _shift(0.5), "label")
    with pytest.raises(GeometryError, match="not on the grid"):
        write_seg(shifted, ct3, tmp_path / "a.dcm")
    with pytest.raises(InputError, match="empty"):
        write_seg(ct3.volume.with_array(np.zeros(shape, np.uint8), kind="label"), ct3, tmp_path / "b.dcm")
    resampled = load(shared_data / CT2, resample=True)
    with pytest.raises(GeometryError, match="without resampling"):
        write_seg(
            resampled.volume.with_array(np.ones(resampled.volume.spatial_shape, np.uint8), kind="label"),
            resampled,
            tmp_path / "c.dcm",
        )
    assert list(tmp_path.iterdir()) == []


def _shift(mm: float) -> np.ndarray:
    shift = np.zeros((4, 4))
    shift[0, 3] = mm
    return shift


def test_segment_codes_from_names() -> None:
    coding = segment_codes("liver")
    assert (coding.category.meaning, coding.type.code, coding.type.scheme) == (
        "Anatomical Structure",
        "10200004",
        "SCT",
    )
    assert segment_codes("adrenal gland").type.meaning == "Adrenal gland"
    coding = segment_codes("tumour core 2")
    assert (coding.category.meaning, coding.type.meaning, coding.modifier) == ("Tissue", "Tissue", None)


# ---------------------------------------------------------------------------- anonymised sources, SEG metadata
def loadable_series(root: Path):
    """Every series under ``root`` that medseg's DICOM loader accepts (the 'failing/' ones it refuses are left out)."""
    from medseg.errors import MedsegError

    for info in discover_series(root):
        try:
            yield load_series(info, min_slices=1)
        except MedsegError:
            continue


def header_state(series) -> list[dict]:
    """Every element of every source header, as (keyword -> repr of value): to show nothing changed."""
    return [{str(e.tag): repr(e.value) for e in ds if e.tag != 0x7FE00010} for ds in series.datasets]


def test_seg_round_trips_on_every_loadable_dicom2nifti_series(shared_data: Path, tmp_path: Path) -> None:
    """Anonymised exports (no PatientSex/PatientBirthDate/AccessionNumber, no FrameOfReferenceUID or
    SliceThickness, per-frame pixel measures, ISO 2022 character sets) all get a SEG that reads back."""
    written, anonymised = 0, 0
    for n, series in enumerate(loadable_series(shared_data / D2N)):
        before = header_state(series)
        anonymised += any(k not in series.datasets[0] for k in ANONYMISED)
        labels = (
            asymmetric_labels(series.volume.spatial_shape)
            if min(series.volume.spatial_shape[:2]) >= 50
            else _small_labels(series.volume.spatial_shape)
        )
        path = write_seg(
            series.volume.with_array(labels, kind="label"), series, tmp_path / f"{n}.dcm", {1: "a", 2: "b", 3: "c"}
        )
        back = read_seg(path, series)
        assert back.same_grid(series.volume) and np.array_equal(back.array, labels), series.info.uid
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ANONYMISED:  # type 2: present, empty where the source has none
            assert keyword in header and (header[keyword].value or None) == (series.datasets[0].get(keyword) or None)
        assert header_state(series) == before  # the loaded headers were not changed
        written += 1
    assert written == 12 and anonymised >= 7


def _small_labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:9, 3:20, 0] = 1
    labels[shape[0] - 8 : shape[0] - 2, 1:4, -1] = 2
    labels[10:14, shape[1] - 6 : shape[1] - 1, shape[2] // 2] = 3
    return labels


def test_seg_without_frame_of_reference_uses_one_derived_from_the_series(shared_data: Path, tmp_path: Path) -> None:
    series = load(shared_data / D2N / "siemens/anatomical/001")
    assert "FrameOfReferenceUID" not in series.datasets[0] and "SliceThickness" not in series.datasets[0]
    labels = _small_labels(series.volume.spatial_shape)
    first = write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "a.dcm")
    second = write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "b.dcm")
    uids = {pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID for p in (first, second)}
    assert uids == {derived_frame_of_reference(str(series.datasets[0].SeriesInstanceUID))}
    measures = (
        pydicom.dcmread(first, stop_before_pixels=True).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    )
    assert float(measures.SliceThickness) == pytest.approx(series.volume.spacing[2], rel=1e-5)


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_invalid_type2_values_are_written_empty(shared_data: Path, tmp_path: Path) -> None:
    series = load(shared_data / SEG_DIR / "ct-3slice")
    first = series.datasets[0]
    first.PatientSex, first.PatientBirthDate, first.StudyTime = "male", "1970", "noon"
    del first.StudyID
    labels = np.zeros(series.volume.spatial_shape, np.uint8)
    labels[100:150, 200:260, 1] = 1
    path = write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "seg.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert [header[k].value or None for k in ("PatientSex", "PatientBirthDate", "StudyTime", "StudyID")] == [None] * 4
    assert header.PatientID == first.PatientID and header.StudyDate == first.StudyDate
    assert first.PatientSex == "male" and "StudyID" not in first  # the caller's header is as it was


def test_seg_without_study_uid_is_refused(shared_data: Path, tmp_path: Path) -> None:
    series = load(shared_data / SEG_DIR / "ct-3slice")
    del series.datasets[0].StudyInstanceUID
    labels = np.ones(series.volume.spatial_shape, np.uint8)
    with pytest.raises(DicomError, match="no StudyInstanceUID"):
        write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "seg.dcm")
    assert list(tmp_path.iterdir()) == []


def test_seg_names_the_model_and_carries_the_given_codes(shared_data: Path, tmp_path: Path, ct3) -> None:
    from medseg.version import __version__

    labels = np.zeros(ct3.volume.spatial_shape, np.uint8)
    labels[100:150, 200:260, 1] = 1
    labels[300:320, 40:90, 0:3] = 2
    sct = lambda code, meaning: CodedTerm(code, "SCT", meaning)  # noqa: E731
    codes = {
        1: SegmentCoding(
            sct("91723000", "Anatomical Structure"), sct("5366008", "Hippocampus"), sct("255549009", "Anterior")
        )
    }
    path = write_seg(
        ct3.volume.with_array(labels, kind="label"),
        ct3,
        tmp_path / "seg.dcm",
        {1: "Anterior", 2: "liver"},
        model_name="hippocampus",
        codes=codes,
    )
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert "hippocampus" in header.SeriesDescription and header.ManufacturerModelName == "hippocampus"
    assert header.SoftwareVersions == __version__
    first, second = header.SegmentSequence
    assert (first.SegmentLabel, first.SegmentAlgorithmName) == ("Anterior", "medseg hippocampus")
    assert first.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == __version__
    prop = first.SegmentedPropertyTypeCodeSequence[0]
    assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == ("5366008", "SCT", "Hippocampus")
    assert prop.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "255549009"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    # a label without codes from the model: the default from its name
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert read_seg(path, ct3).meta.label_names == {1: "Anterior", 2: "liver"}


def test_headers_highdicom_refuses_are_a_one_line_dicom_error(shared_data: Path, tmp_path: Path) -> None:
    series = load(shared_data / SEG_DIR / "ct-3slice")
    del series.datasets[0].Modality  # type 1: nothing to fill in
    labels = np.zeros(series.volume.spatial_shape, np.uint8)
    labels[100:150, 200:260, 1] = 1
    with pytest.raises(DicomError, match="a DICOM SEG cannot be built from its headers .*--no-seg"):
        write_seg(series.volume.with_array(labels, kind="label"), series, tmp_path / "seg.dcm")
    assert list(tmp_path.iterdir()) == []
