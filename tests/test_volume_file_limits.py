"""Volume-file headers are checked before voxel memory is allocated (issue 14 items 10 and 17).

A header claiming more voxel data than the file holds, more than the size limit, or complex voxels
is refused in one line saying why; honest files (single- and multi-member gzip, NRRD, MHA) read
exactly as before.
"""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.cli import main
from medseg.errors import ConfigError, InputError
from medseg.io.files import read_volume_file
from medseg.io.limits import MAX_GB_ENV


def nifti_header(shape: tuple[int, ...], dtype: type = np.int16) -> bytes:
    """The 348-byte NIfTI-1 header (+4 extension bytes) of a single-file image of ``shape``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    return header.binaryblock + b"\0" * 4


def bomb(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> Path:
    """A ``.nii.gz`` holding only a header that claims ``shape`` (tens of bytes on disk)."""
    with gzip.open(path, "wb") as handle:
        handle.write(nifti_header(shape, dtype))
    return path


def peak_bytes(function, *args) -> tuple[BaseException | None, int]:
    """(what ``function(*args)`` raised, the peak memory it allocated), as tracemalloc counts it."""
    tracemalloc.start()
    raised = None
    try:
        function(*args)
    except Exception as exc:
        raised = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


def test_a_tiny_gzip_claiming_a_large_volume_is_refused_before_allocating(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.nii.gz", (600, 600, 600))  # 412 MiB claimed in ~60 bytes
    assert path.stat().st_size < 100
    raised, peak = peak_bytes(read_volume_file, path)
    assert isinstance(raised, InputError) and peak < 16 * 1024**2
    message = str(raised)
    assert "claims 600x600x600 int16 voxels (412.0 MiB)" in message and "holds 0 bytes" in message
    assert "truncated or its header is wrong" in message


def test_a_header_beyond_the_size_limit_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bomb(tmp_path / "huge.nii.gz", (32767, 32767, 32767))
    with pytest.raises(
        InputError, match=r"claims 32767x32767x32767 int16 voxels \(64\.0 TiB\), more than the limit of 16\.0 GiB"
    ):
        read_volume_file(path)
    monkeypatch.setenv(MAX_GB_ENV, "0.0001")  # ~105 KiB: a real 200 KiB image is now refused
    image = tmp_path / "real.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((50, 40, 50), np.float32), np.eye(4)), image)
    with pytest.raises(InputError, match=rf"more than the limit of 104\.9 KiB per image.*{MAX_GB_ENV}"):
        read_volume_file(image)
    monkeypatch.setenv(MAX_GB_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_GB_ENV}='lots' is not a positive number"):
        read_volume_file(image)


def test_a_truncated_uncompressed_nifti_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii"
    path.write_bytes(nifti_header((64, 64, 64), np.float32) + b"\0" * 1000)
    with pytest.raises(InputError, match=r"claims 64x64x64 float32 voxels \(1\.0 MiB\) but the file holds 1000 bytes"):
        read_volume_file(path)


def test_honest_gzip_streams_read_exactly(tmp_path: Path) -> None:
    """One gzip member (the trailer's length agrees) and several members (it does not: read in chunks)."""
    array = np.random.default_rng(0).integers(-1000, 1000, (30, 20, 10)).astype(np.int16)
    image = nib.Nifti1Image(array, np.diag([0.5, 0.7, 2.0, 1.0]))
    single = tmp_path / "one.nii.gz"
    nib.save(image, single)
    raw = gzip.decompress(single.read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # as bgzip / pigz --independent write
    for path in (single, multi):
        volume = read_volume_file(path)
        np.testing.assert_array_equal(volume.array, array)
        np.testing.assert_allclose(volume.affine, image.affine)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd"])
def test_truncated_raw_nrrd_and_metaimage_are_refused_before_allocating(suffix: str, tmp_path: Path) -> None:
    array = np.arange(40 * 30 * 20, dtype=np.int16).reshape(20, 30, 40)
    path = tmp_path / f"a{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    np.testing.assert_array_equal(read_volume_file(path).array, array.transpose(2, 1, 0))  # honest: unchanged
    data = tmp_path / "a.raw" if suffix == ".mhd" else path
    data.write_bytes(data.read_bytes()[:-2000])
    with pytest.raises(
        InputError, match=r"claims 40x30x20 16-bit signed integer voxels \(46\.9 KiB\) but the file holds 44\.9 KiB"
    ):
        read_volume_file(path)


def test_a_huge_nrrd_header_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 30000 30000 30000\nendian: little\nencoding: gzip\n\n"
        + b"\x1f\x8b"
    )
    raised, peak = peak_bytes(read_volume_file, path)
    assert isinstance(raised, InputError) and "more than the limit" in str(raised) and peak < 16 * 1024**2


def test_complex_voxels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.complex64), np.eye(4)), path)
    with pytest.raises(InputError, match=r"holds complex \(complex64\) voxels; medseg segments real-valued images"):
        read_volume_file(path)


def test_convert_refuses_a_bomb_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(bomb(tmp_path / "b.nii.gz", (2000, 2000, 2000))), str(tmp_path / "o.nii.gz")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "claims 2000x2000x2000 int16 voxels (14.9 GiB)" in lines[0]
    assert not (tmp_path / "o.nii.gz").exists()
