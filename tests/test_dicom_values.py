"""Pixel values: bits above BitsStored (both decoding paths), and the rescaled / real-world conventions."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.io.dicom import load_volume

D2N = "dicom_dicom2nifti_testdata/tests/data"
SIEMENS = f"{D2N}/siemens/anatomical/001"  # uint16, BitsStored 12, explicit VR
HITACHI = f"{D2N}/hitachi/anatomical/001"  # int16, BitsStored 12, implicit VR
PHILIPS = "dicom_dcm_qa_enh/dicom/Philips"
PHILIPS_REF = "dicom_dcm_qa_enh/ref_upstream/Philips_WIP_B0_NS_801"


def _set_high_bits(source: Path, target: Path, syntax: str | None = None) -> None:
    """Copy a series, setting garbage bits above BitsStored on a block of pixels of every file.

    Unsigned: bits 12-15 set (4095 becomes 65535). Signed: bits 12-15 flipped against the sign
    bit 11, which sign extension must overwrite. ``syntax`` re-encodes the files (e.g. Deflate,
    which only pydicom decodes: the same stored values through the other decoding path).
    """
    target.mkdir()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array.view(np.uint16).copy()  # the stored 16-bit words
        block = raw[10:20, 10:20]
        sign = (block >> 11) & 1
        raw[10:20, 10:20] = np.where(sign == 1, block & 0x0FFF, block | 0xF000)
        ds.PixelData = raw.tobytes()
        if syntax:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(target / path.name, implicit_vr=syntax is None and ds.original_encoding[0], little_endian=True)


@pytest.mark.parametrize("series", [SIEMENS, HITACHI])
@pytest.mark.parametrize("syntax", [None, DeflatedExplicitVRLittleEndian], ids=["direct read", "pydicom (deflate)"])
def test_bits_above_bits_stored_are_ignored(shared_data: Path, tmp_path: Path, series: str, syntax: str | None) -> None:
    """Masked (unsigned) or sign-extended (signed) from BitsStored, as pydicom and dcm2niix do."""
    _set_high_bits(shared_data / series, tmp_path / "dirty", syntax)
    clean = load_volume(shared_data / series)
    dirty = load_volume(tmp_path / "dirty")
    assert dirty.array.dtype == clean.array.dtype
    np.testing.assert_array_equal(dirty.array, clean.array)
    if syntax is None:  # the files really hold the high bits
        raw = np.frombuffer(pydicom.dcmread(sorted((tmp_path / "dirty").iterdir())[0]).PixelData, np.uint16)
        assert (raw >> 12).any()


def test_siemens_field_map_value_4095_is_not_65535(shared_data: Path, tmp_path: Path) -> None:
    """The reported case: 12-bit 4095 stored with the 4 high bits set reads 4095."""
    (tmp_path / "fmap").mkdir()
    for path in sorted((shared_data / SIEMENS).iterdir()):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.copy()
        pixels[0, :5] = 0xFFFF  # 4095 with garbage high bits
        ds.PixelData = pixels.tobytes()
        ds.save_as(tmp_path / "fmap" / path.name)
    volume = load_volume(tmp_path / "fmap")
    assert volume.array.max() == 4095 and 65535 not in volume.array


def _onto(array: np.ndarray, affine: np.ndarray, reference: nib.Nifti1Image) -> np.ndarray:
    return apply_orientation(array, ornt_transform(io_orientation(affine), io_orientation(reference.affine)))


@pytest.mark.parametrize(("frame", "suffix"), [(0, "e1"), (1, "e2_fieldmaphz")])
def test_real_world_values_match_dcm2niix_on_a_philips_field_map(shared_data: Path, frame: int, suffix: str) -> None:
    """dcm2niix writes Philips "precise" values (RS, RI and the private Scale Slope SS): compare voxels.

    dcm2niix computes its scale in float32 (slope 0.24420166 where 1 / 4.095 = 0.24420023), so
    values agree to 2e-5 of their range, not bit for bit.
    """
    reference = nib.load(shared_data / f"{PHILIPS_REF}_{suffix}.nii.gz")
    expected = reference.get_fdata()
    volume = load_volume(shared_data / PHILIPS, values="real-world")
    actual = _onto(np.asarray(volume.array[..., frame], np.float64), volume.affine, reference)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    assert volume.meta.extra["values"] == "real-world"


def test_rescaled_is_the_default_and_differs_where_philips_scales(shared_data: Path) -> None:
    """Default: RescaleSlope/Intercept only (DICOM display values); the magnitude differs from dcm2niix by 1 / (RS * SS)."""
    sidecar = json.loads((shared_data / f"{PHILIPS_REF}_e1.json").read_text())
    rescaled = load_volume(shared_data / PHILIPS)
    real = load_volume(shared_data / PHILIPS, values="real-world")
    assert rescaled.meta.extra["values"] == "rescaled"
    factor = 1.0 / (sidecar["PhilipsRescaleSlope"] * sidecar["PhilipsScaleSlope"])
    magnitude = np.asarray(rescaled.array[..., 0], np.float64)
    np.testing.assert_allclose(np.asarray(real.array[..., 0], np.float64), magnitude * factor, rtol=1e-5)
    np.testing.assert_allclose(real.array[..., 1], rescaled.array[..., 1], atol=0.01)  # field map: FP = DV = Hz


def _with_mapping(source: Path, target: Path, slope: float, intercept: float) -> None:
    """Copy a classic series adding one RealWorldValueMappingSequence item to every file."""
    target.mkdir()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        item = pydicom.Dataset()
        item.RealWorldValueSlope, item.RealWorldValueIntercept = slope, intercept
        item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
        item.LUTLabel, item.LUTExplanation = "T1", "T1 map (ms)"
        ds.RealWorldValueMappingSequence = [item]
        ds.save_as(target / path.name)


def test_real_world_value_mapping_of_classic_files(shared_data: Path, tmp_path: Path) -> None:
    _with_mapping(shared_data / SIEMENS, tmp_path / "rwv", 2.5, -10.0)
    stored = load_volume(shared_data / SIEMENS).array.astype(np.float32)  # rescale is the identity here
    real = load_volume(tmp_path / "rwv", values="real-world")
    np.testing.assert_allclose(real.array, stored * 2.5 - 10.0, rtol=1e-6)
    assert real.meta.rescale == (2.5, -10.0)
    np.testing.assert_array_equal(load_volume(tmp_path / "rwv").array, load_volume(shared_data / SIEMENS).array)


def test_real_world_without_a_mapping_is_the_rescaled_values(shared_data: Path) -> None:
    np.testing.assert_array_equal(
        load_volume(shared_data / HITACHI, values="real-world").array, load_volume(shared_data / HITACHI).array
    )


def test_real_world_on_only_some_frames_is_refused(shared_data: Path, tmp_path: Path) -> None:
    _with_mapping(shared_data / SIEMENS, tmp_path / "rwv", 2.5, -10.0)
    first = sorted((tmp_path / "rwv").iterdir())[0]
    ds = pydicom.dcmread(first)
    del ds.RealWorldValueMappingSequence
    ds.save_as(first)
    with pytest.raises(Exception, match=r"only some of its frames give a real-world value mapping.*--values rescaled"):
        load_volume(tmp_path / "rwv", values="real-world")


def test_unknown_values_choice_names_the_choices(shared_data: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown values 'real'.*rescaled, real-world"):
        load_volume(shared_data / HITACHI, values="real")


def test_convert_values_option(shared_data: Path, tmp_path: Path) -> None:
    from medseg.cli import build_parser
    from medseg.io.dicom import load

    convert = build_parser()._subparsers._group_actions[0].choices["convert"]  # type: ignore[union-attr]
    (values,) = [a for a in convert._actions if a.dest == "values"]
    assert tuple(values.choices) == load.VALUES  # the CLI offers exactly what the reader takes
    out = tmp_path / "rwv.nii.gz"
    _with_mapping(shared_data / SIEMENS, tmp_path / "rwv", 2.5, -10.0)
    assert main(["convert", str(tmp_path / "rwv"), str(out), "--values", "real-world"]) == 0
    written = np.asarray(nib.load(out).dataobj)
    expected = load_volume(shared_data / SIEMENS).array.astype(np.float32) * 2.5 - 10.0
    np.testing.assert_allclose(written, expected, rtol=1e-6)


def test_deflated_file_is_decoded(shared_data: Path, tmp_path: Path) -> None:
    """A valid Deflated Explicit VR Little Endian series loads (pydicom inflates it), not 'truncated'."""
    (tmp_path / "deflated").mkdir()
    for path in sorted((shared_data / SIEMENS).iterdir()):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / "deflated" / path.name)
    assert (
        pydicom.dcmread(sorted((tmp_path / "deflated").iterdir())[0]).file_meta.TransferSyntaxUID
        == DeflatedExplicitVRLittleEndian
    )
    volume, original = load_volume(tmp_path / "deflated"), load_volume(shared_data / SIEMENS)
    assert volume.same_grid(original, atol=1e-6)
    np.testing.assert_array_equal(volume.array, original.array)
