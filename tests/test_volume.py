"""The Volume type: validation, immutability and lossless conversions."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.io import read_volume, write_volume
from medseg.volume import Volume

OBLIQUE = np.array([[0.9, 0.1, 0.0, 10.0], [0.0, -1.2, 0.2, -5.0], [0.05, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture()
def volume() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.random((5, 6, 7), dtype=np.float32), OBLIQUE)


def test_array_is_read_only(volume: Volume) -> None:
    with pytest.raises(ValueError):
        volume.array[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        volume.affine[0, 0] = 1.0


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 4, 5, 6)])
def test_refuses_wrong_dimensions(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match="3 dimensions"):
        Volume(np.zeros(shape), np.eye(4))


def test_refuses_singular_affine() -> None:
    with pytest.raises(GeometryError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_label_must_be_integer() -> None:
    with pytest.raises(InputError, match="integers"):
        Volume(np.zeros((2, 2, 2), np.float32), np.eye(4), kind="label")
    with pytest.raises(InputError, match="non-integer"):
        Volume(np.full((2, 2, 2), 0.5, np.float32), np.eye(4)).as_label()
    label = Volume(np.full((2, 2, 2), 2.0, np.float32), np.eye(4)).as_label()
    assert label.array.dtype == np.uint8 and label.kind == "label"


def test_geometry_properties(volume: Volume) -> None:
    assert volume.spacing == pytest.approx(tuple(np.linalg.norm(OBLIQUE[:3, :3], axis=0)))
    assert np.allclose(np.linalg.norm(volume.direction, axis=0), 1.0)
    assert volume.origin == (10.0, -5.0, 3.0)


@pytest.mark.parametrize("route", ["sitk", "nibabel", "monai"])
def test_conversions_round_trip(volume: Volume, route: str) -> None:
    back = {
        "sitk": lambda v: Volume.from_sitk(v.to_sitk()),
        "nibabel": lambda v: Volume.from_nibabel(v.to_nibabel()),
        "monai": lambda v: Volume.from_monai(v.to_monai()),
    }[route](volume)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine, atol=1e-6)


def test_sitk_uses_lps(volume: Volume) -> None:
    image = volume.to_sitk()
    # RAS origin (10, -5, 3) is LPS (-10, 5, 3); SimpleITK's array is z, y, x.
    assert image.GetOrigin() == pytest.approx((-10.0, 5.0, 3.0))
    assert image.GetSize() == (5, 6, 7)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_file_round_trip(tmp_path, volume: Volume, suffix: str) -> None:
    path = write_volume(volume, tmp_path / f"case{suffix}")
    back = read_volume(path)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"case{suffix}"]  # no temp files left


def test_nifti_label_has_qform_sform_and_sidecar(tmp_path) -> None:
    import json

    import nibabel as nib
    from scipy.spatial.transform import Rotation

    oblique = np.eye(4)  # a rigid oblique grid: qform can represent it exactly
    oblique[:3, :3] = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix() @ np.diag([0.7, 0.7, 6.5])
    oblique[:3, 3] = [97.2, -132.3, -52.5]
    labels = Volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2) % 3, oblique, "label")
    labels = labels.with_meta(label_names={0: "background", 1: "anterior", 2: "posterior"})
    path = write_volume(labels, tmp_path / "seg.nii.gz")
    img = nib.load(path)
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    assert np.allclose(img.get_qform(), oblique, atol=1e-4)
    assert np.allclose(img.get_sform(), oblique, atol=1e-4)
    assert np.issubdtype(img.get_data_dtype(), np.integer)
    names = json.loads((tmp_path / "seg.json").read_text())["labels"]
    assert names == {"0": "background", "1": "anterior", "2": "posterior"}


def test_nan_is_refused(tmp_path) -> None:
    import nibabel as nib

    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="1 NaN/Inf voxel"):
        read_volume(tmp_path / "nan.nii.gz")


def test_4d_is_refused_where_3d_expected(tmp_path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="expected a 3D volume"):
        read_volume(tmp_path / "t.nii.gz").require_3d()


def test_hippocampus_case_reads_with_its_affine(shared_data) -> None:
    import nibabel as nib

    path = shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"
    volume = read_volume(path)
    ref = nib.load(path)
    assert volume.shape == ref.shape
    assert np.allclose(volume.affine, ref.affine)
    label = read_volume(shared_data / "msd_hippocampus" / "labelsTr" / "hippocampus_003.nii.gz", kind="label")
    assert set(np.unique(label.array)) == {0, 1, 2} and label.same_grid(volume)
