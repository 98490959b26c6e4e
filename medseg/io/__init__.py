"""Reading and writing volumes: DICOM exports, NIfTI, NRRD, MHA; DICOM SEG and RTSTRUCT; 2D images
(PNG, TIFF, single-frame 2D DICOM) as one-slice volumes (:mod:`medseg.io.image2d`).

Use :func:`read_volume` for any single input (file or DICOM folder) and
:func:`write_volume` for any volume output.
"""

from __future__ import annotations

from pathlib import Path

from medseg.io.files import is_volume_file, read_volume_file, write_volume_file
from medseg.volume import Kind, Volume

__all__ = ["is_volume_file", "read_volume", "write_volume"]


def read_volume(
    path: str | Path,
    kind: Kind = "image",
    series: str | None = None,
    resample: bool = False,
    *,
    allow_missing_slices: bool = False,
    values: str = "rescaled",
) -> Volume:
    """Read one volume from a NIfTI/NRRD/MHA file, a PNG/TIFF 2D image, or a DICOM file/folder.

    A single DICOM file holding one 2D image (DX, CR, XA, MG, SM, ... or any single frame
    without patient geometry) is read as a one-slice volume (:mod:`medseg.io.dicom.image2d`).

    ``series`` selects a DICOM series (UID, index from ``medseg series`` or a description
    pattern); it is required when a folder holds several image series. ``resample`` lets a
    DICOM series with gantry tilt or uneven slice spacing be resampled onto a regular grid
    instead of being refused; ``allow_missing_slices`` loads the readable files of a series some
    of whose files cannot be read (reported) instead of refusing it; ``values`` is ``"rescaled"``
    (default) or ``"real-world"`` (see :func:`medseg.io.dicom.load_series`). Volume files and 2D
    DICOM images ignore these three.
    """
    from medseg.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path")
    if is_volume_file(path):
        return read_volume_file(path, kind=kind)
    from medseg.io.dicom import load_volume
    from medseg.io.dicom.image2d import is_dicom_image2d, read_dicom_image2d

    if is_dicom_image2d(path):
        return read_dicom_image2d(path, kind=kind)
    volume = load_volume(
        path, select=series, resample=resample, allow_missing_slices=allow_missing_slices, values=values
    )
    return volume.as_label() if kind == "label" else volume


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write a volume by suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``; ``.png``/``.tif`` for one slice), atomically."""
    return write_volume_file(volume, path)
