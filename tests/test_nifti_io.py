"""NIfTI gzip through ISA-L: byte streams any gzip reader accepts, nibabel's headers and voxels."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import read_volume_file
from medseg.io.nifti import load_nifti, save_nifti

AFFINE = np.array([[0.0, 0.0, 1.5, -20.0], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.9, 0.0, 5.0], [0, 0, 0, 1.0]])


def _image(dtype=np.int16, image_class=nib.Nifti1Image) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(17, 11, 9)).astype(dtype)
    image = image_class(array, AFFINE)
    image.set_qform(AFFINE, code=1)
    image.set_sform(AFFINE, code=1)
    return image


@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_written_gzip_is_read_by_nibabel_and_python_gzip(tmp_path, image_class) -> None:
    image = _image(image_class=image_class)
    path = tmp_path / "case.nii.gz"
    save_nifti(image, path)
    with gzip.open(path, "rb") as handle:  # a standard gzip stream
        assert int.from_bytes(handle.read(4), "little") in (348, 540)
    back = nib.load(path)
    assert type(back) is image_class
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(image.dataobj))
    np.testing.assert_allclose(back.affine, AFFINE)
    assert back.header.get_data_dtype() == np.int16


@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_files_nibabel_wrote_load_identically(tmp_path, image_class) -> None:
    image = _image(np.float32, image_class)
    image.header.set_slope_inter(2.0, -5.0)  # scaled data: the reader must apply it
    path = tmp_path / "case.nii.gz"
    nib.save(image, path)
    ours, theirs = load_nifti(path), nib.load(path)
    assert type(ours) is image_class
    np.testing.assert_array_equal(ours.get_fdata(), theirs.get_fdata())
    np.testing.assert_allclose(ours.affine, theirs.affine)
    assert ours.header.get_slope_inter() == theirs.header.get_slope_inter()


def test_uncompressed_files_go_straight_to_nibabel(tmp_path) -> None:
    path = tmp_path / "case.nii"
    save_nifti(_image(), path)
    with open(path, "rb") as handle:
        assert int.from_bytes(handle.read(4), "little") == 348  # not gzipped
    np.testing.assert_array_equal(np.asarray(load_nifti(path).dataobj), np.asarray(_image().dataobj))


def test_gzip_that_holds_no_nifti_is_a_clear_input_error(tmp_path) -> None:
    path = tmp_path / "notes.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"this is not a NIfTI header" * 20)
    with pytest.raises(InputError, match="could not be read as .nii.gz"):
        read_volume_file(path)


def test_truncated_gzip_is_a_clear_input_error(tmp_path) -> None:
    path = tmp_path / "cut.nii.gz"
    save_nifti(_image(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="is the file complete"):
        read_volume_file(path)
