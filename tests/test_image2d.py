"""2D images in and out: PNG / TIFF / single-frame DICOM as one-slice Volumes, label maps written back."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.errors import InputError, OutputError
from medseg.io import read_volume, write_volume
from medseg.io.files import is_volume_file
from medseg.io.image2d import image_pixels, read_image2d, volume_from_pixels
from medseg.volume import Volume
from tests.dicom_factory import write_dx_image

RNG = np.random.default_rng(7)


def _grey(h: int = 5, w: int = 7, dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max, size=(h, w), endpoint=True).astype(dtype)


def test_png_axis_order_and_unknown_spacing(tmp_path: Path) -> None:
    pixels = _grey()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    volume = read_volume(tmp_path / "a.png")
    assert volume.shape == (7, 5, 1)  # (W, H, 1): i = column, j = row
    assert volume.array[6, 4, 0] == pixels[4, 6] and volume.array[2, 0, 0] == pixels[0, 2]
    assert np.array_equal(image_pixels(volume), pixels)
    assert volume.meta.spacing_known is False
    assert np.allclose(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert is_volume_file(tmp_path / "a.png")


def test_png_geometry_matches_simpleitk(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from medseg.volume import Volume

    pixels = _grey(6, 9, np.uint16)
    Image.fromarray(pixels).save(tmp_path / "b.png")
    reference = Volume.from_sitk(sitk.JoinSeries([sitk.ReadImage(str(tmp_path / "b.png"))]))
    ours = read_volume(tmp_path / "b.png")
    assert np.array_equal(ours.array, reference.array)
    assert np.allclose(ours.affine, reference.affine)


def test_rgba_alpha_dropped_colour_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgba = RNG.integers(0, 255, size=(4, 6, 4), endpoint=True).astype(np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    volume = read_volume(tmp_path / "c.png")
    assert volume.shape == (6, 4, 1, 3)
    assert np.array_equal(image_pixels(volume), rgba[..., :3])
    assert read_image2d(tmp_path / "c.png", keep_alpha=True).shape == (6, 4, 1, 4)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "d.png")
    with caplog.at_level(logging.WARNING):
        read_volume(tmp_path / "d.png")
    assert "transparent" in caplog.text


def test_16bit_rgb_png_is_read_losslessly(tmp_path: Path) -> None:
    import SimpleITK as sitk

    rgb = RNG.integers(256, 65535, size=(5, 7, 3)).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "e.png"))
    assert np.array_equal(image_pixels(read_volume(tmp_path / "e.png")), rgb)


def test_palette_png_gives_indices_as_label(tmp_path: Path) -> None:
    index = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    image.save(tmp_path / "p.png")
    assert np.array_equal(image_pixels(read_volume(tmp_path / "p.png", kind="label")), index)
    assert read_volume(tmp_path / "p.png").shape == (3, 2, 1, 3)
    with pytest.raises(InputError, match="one channel"):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
        read_volume(tmp_path / "rgb.png", kind="label")


def test_tiff_resolution_gives_spacing(tmp_path: Path) -> None:
    import tifffile

    pixels = _grey(4, 6, np.uint16)
    # 2000 px/cm across (0.005 mm columns), 4000 px/cm down (0.0025 mm rows)
    tifffile.imwrite(tmp_path / "a.tif", pixels, resolution=(2000, 4000), resolutionunit="CENTIMETER")
    volume = read_volume(tmp_path / "a.tif")
    assert volume.meta.spacing_known and np.allclose(volume.spacing, (0.005, 0.0025, 1.0))
    assert np.array_equal(image_pixels(volume), pixels)
    tifffile.imwrite(tmp_path / "ij.tif", pixels, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    assert np.allclose(read_volume(tmp_path / "ij.tif").spacing, (0.0005, 0.0005, 1.0))
    tifffile.imwrite(tmp_path / "none.tif", pixels)  # ResolutionUnit NONE
    assert read_volume(tmp_path / "none.tif").meta.spacing_known is False


def test_tiff_stack_is_refused(tmp_path: Path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 4, 6), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="2D TIFF"):
        read_volume(tmp_path / "stack.tif")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_label_map_written_with_input_height_and_width(tmp_path: Path, suffix: str) -> None:
    image = volume_from_pixels(_grey(5, 7), (0.5, 0.25))
    labels = RNG.integers(0, 3000, size=(5, 7)).astype(np.int32)
    label_volume = image.with_array(np.swapaxes(labels, 0, 1)[:, :, None], kind="label")
    path = write_volume(label_volume, tmp_path / f"labels{suffix}")
    if suffix == ".png":
        stored = np.asarray(Image.open(path))
    else:
        import tifffile

        stored = tifffile.imread(path)
    assert stored.shape == (5, 7) and stored.dtype == np.uint16 and np.array_equal(stored, labels)
    back = read_volume(path, kind="label")
    assert np.array_equal(back.array, label_volume.array)
    if suffix == ".tif":  # the spacing travels with TIFF
        assert back.same_grid(image)


def test_label_maps_that_do_not_fit(tmp_path: Path) -> None:
    image = volume_from_pixels(_grey(2, 3), None)
    big = image.with_array(np.full((3, 2, 1), 70000, np.int32), kind="label")
    with pytest.raises(OutputError, match="16-bit PNG"):
        write_volume(big, tmp_path / "big.png")
    assert not (tmp_path / "big.png").exists() and not list(tmp_path.glob(".big*"))
    write_volume(big, tmp_path / "big.tif")
    assert int(read_volume(tmp_path / "big.tif", kind="label").array.max()) == 70000
    from medseg.volume import Volume

    with pytest.raises(OutputError, match=r"nii\.gz"):
        write_volume(Volume(np.zeros((3, 3, 2), np.uint8), np.eye(4), "label"), tmp_path / "x.png")


def test_real_dsb_image_and_label_round_trip(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "dsb2018_nuclei"
    name = sorted(p.name for p in (folder / "images").glob("*.png") if Image.open(p).size[0] != Image.open(p).size[1])[
        0
    ]
    original = np.asarray(Image.open(folder / "images" / name))  # (H, W, 4) RGBA, not square
    image = read_volume(folder / "images" / name)
    label = read_volume(folder / "labels" / name, kind="label")
    assert image.shape == (original.shape[1], original.shape[0], 1, 3) and label.same_grid(image)
    assert np.array_equal(image_pixels(image), original[..., :3])
    written = write_volume(label, tmp_path / name)
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(Image.open(folder / "labels" / name)))


# ------------------------------------------------------------------------------------ DICOM
def test_dicom_dx_with_imager_pixel_spacing_and_rescale(tmp_path: Path) -> None:
    pixels = _grey(4, 6, np.uint16) // 4
    path = write_dx_image(
        tmp_path / "dx.dcm", pixels, ImagerPixelSpacing=[0.2, 0.1], RescaleSlope=2, RescaleIntercept=-10
    )
    volume = read_volume(path)
    assert volume.shape == (6, 4, 1)
    assert np.allclose(volume.spacing, (0.1, 0.2, 1.0)) and volume.meta.spacing_known
    assert volume.meta.extra["spacing_source"] == "ImagerPixelSpacing" and volume.meta.modality == "DX"
    assert np.allclose(image_pixels(volume), pixels * 2.0 - 10)
    assert read_volume(write_dx_image(tmp_path / "bare.dcm", pixels)).meta.spacing_known is False


def test_dicom_2d_with_patient_geometry(tmp_path: Path) -> None:
    pixels = _grey(3, 5, np.uint16)
    path = write_dx_image(
        tmp_path / "geo.dcm",
        pixels,
        PixelSpacing=[0.5, 0.25],
        ImagePositionPatient=[10, 20, 30],
        ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
    )
    volume = read_volume(path)
    ijk = np.array([2, 1, 0, 1.0])  # column 2, row 1
    lps = np.array([10, 20, 30]) + 2 * 0.25 * np.array([0, 1, 0]) + 1 * 0.5 * np.array([0, 0, -1])
    assert np.allclose(volume.affine @ ijk, [-lps[0], -lps[1], lps[2], 1.0])


def test_dicom_colour_2d_from_pydicom_test_file() -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb_small_odd.dcm")
    volume = read_volume(path)
    assert volume.shape == (3, 3, 1, 3) and np.allclose(volume.spacing[:2], (33.333333, 33.333333))
    assert np.array_equal(image_pixels(volume), pydicom.dcmread(path).pixel_array)


def test_semantic_evaluation_of_png_says_pixels_not_mm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from medseg.evaluation import evaluate

    labels = np.zeros((10, 12), np.uint8)
    labels[2:6, 3:9] = 1
    Image.fromarray(labels).save(tmp_path / "ref.png")
    shifted = np.roll(labels, 2, axis=1)  # two columns
    Image.fromarray(shifted).save(tmp_path / "pred.png")
    with caplog.at_level(logging.WARNING):
        (result,) = evaluate(tmp_path / "pred.png", tmp_path / "ref.png")
    assert "in pixels, not mm" in caplog.text
    assert result.metrics[0].hd95 == pytest.approx(2.0)  # two pixels


# ------------------------------------------------------------------------- DICOM SEG of a 2D image
def _objects(volume: Volume) -> np.ndarray:
    ids = np.zeros(volume.spatial_shape, np.uint16)
    ids[1:4, 2:6, 0], ids[8:12, 1:3, 0] = 1, 3  # object 2 absent: an empty segment keeps the numbering
    return ids


@pytest.mark.parametrize(
    "geometry",
    [
        {},  # a radiograph without patient position: no frame of reference, no plane positions
        {
            "PixelSpacing": [0.5, 0.25],
            "ImagePositionPatient": [10, 20, 30],
            "ImageOrientationPatient": [0, 1, 0, 0, 0, -1],
            "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.1",
        },
    ],
)
def test_2d_dicom_labels_written_as_a_seg_referencing_the_image(tmp_path: Path, geometry: dict) -> None:
    import highdicom as hd
    import pydicom

    from medseg.io.seg import write_seg_image2d

    source = write_dx_image(tmp_path / "dx.dcm", _grey(9, 14, np.uint16), PatientName="Doe^Jane", **geometry)
    volume = read_volume(source)
    ids = _objects(volume)
    out = write_seg_image2d(volume.with_array(ids, kind="label"), source, tmp_path / "dx_seg.dcm", {1: "a 1", 3: "a 3"})
    seg = hd.seg.segread(out)
    uid = pydicom.dcmread(source).SOPInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["a 1", "label 2", "a 3"]
    assert seg.get_source_image_uids()[0][2] == uid and str(seg.StudyInstanceUID) == str(
        pydicom.dcmread(source).StudyInstanceUID
    )
    frames = seg.get_pixels_by_source_instance([uid], combine_segments=True, relabel=False)
    assert np.array_equal(frames[0], ids[:, :, 0].T)  # (rows, columns) = the image's pixels
    positioned = "PlanePositionSequence" in seg.PerFrameFunctionalGroupsSequence[0]
    assert positioned == bool(geometry)


def test_2d_dicom_seg_refuses_labels_of_another_grid(tmp_path: Path) -> None:
    from medseg.errors import GeometryError
    from medseg.io.seg import write_seg_image2d

    source = write_dx_image(tmp_path / "dx.dcm", _grey(9, 14, np.uint16))
    other = read_volume(write_dx_image(tmp_path / "other.dcm", _grey(14, 9, np.uint16)))
    with pytest.raises(GeometryError, match="not on the pixel grid of dx.dcm"):
        write_seg_image2d(other.with_array(_objects(other), kind="label"), source, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_class_labels_of_a_2d_dicom_image_get_a_seg_and_others_none(tmp_path: Path) -> None:
    """The writer every model's outputs go through: a 2D DICOM source gives a SEG of the class
    labels (no DicomSeries needed); a PNG source gives none; an empty map is skipped with its reason."""
    import highdicom as hd

    from medseg.inference.options import OutputOptions
    from medseg.inference.outputs import case_paths
    from medseg.inference.writer import write_dicom_outputs

    image = read_volume(write_dx_image(tmp_path / "dx.dcm", _grey(9, 14, np.uint16)))
    labels = image.with_array(_objects(image), kind="label")
    stats: dict = {}
    paths = case_paths(tmp_path / "out", "case")
    (tmp_path / "out").mkdir()
    names = {1: "lung", 2: "heart", 3: "spine"}
    outputs = write_dicom_outputs("case", labels, names, None, paths, OutputOptions(), stats, "m", None, image)
    assert [s.SegmentLabel for s in hd.seg.segread(outputs["seg"]).SegmentSequence] == ["lung", "heart", "spine"]
    empty = image.with_array(np.zeros(image.spatial_shape, np.uint8), kind="label")
    assert write_dicom_outputs("e", empty, names, None, paths, OutputOptions(), stats, "m", None, image) == {}
    assert stats["seg_skipped"] == "the segmentation is empty"
    Image.fromarray(_grey(9, 14)).save(tmp_path / "x.png")
    png = read_volume(tmp_path / "x.png")
    assert write_dicom_outputs("p", labels, names, None, paths, OutputOptions(), {}, "m", None, png) == {}
