"""Single-frame 2D DICOM images (DX, CR, XA, MG, SM, ...) -> a one-slice :class:`~medseg.volume.Volume`.

A radiograph or a slide image is not a slice of a volume: it has no slice positions, often no
ImageOrientationPatient, and its pixel size is PixelSpacing (in the patient, or in the slide) or
only ImagerPixelSpacing (at the detector, magnification not corrected). The series loader refuses
such files; this module reads them with the same header parser (:func:`read_header`,
:func:`frames_of`) and pixel decoder (:func:`decode_file`, :func:`rescale`), so rescaling and
compressed transfer syntaxes behave as for volumes.

* Pixels: the array layout of :mod:`medseg.io.image2d` (``(W, H, 1)``, or ``(W, H, 1, 3)`` for
  colour: RGB, YBR (converted to RGB by pydicom) and palette colour). Greyscale values are the
  rescaled values; MONOCHROME1 is kept as stored (``meta.extra["photometric"]`` says which).
* Spacing: PixelSpacing, else ImagerPixelSpacing (``meta.extra["spacing_source"]`` names it), else
  unknown (pixel units, ``meta.spacing_known`` False).
* Placement: the patient geometry (ImagePositionPatient, ImageOrientationPatient) when the header
  has it and PixelSpacing; otherwise the default plane of :func:`medseg.io.image2d.image_affine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import DicomError
from medseg.io.dicom.checks import directions
from medseg.io.dicom.headers import frames_of, read_header
from medseg.io.dicom.pixels import decode_file, rescale
from medseg.io.image2d import volume_from_pixels
from medseg.volume import LPS_TO_RAS, Kind, Volume, VolumeMeta

if TYPE_CHECKING:
    from medseg.io.dicom.series import FileHeader, Frame, SeriesInfo

#: modalities whose images are projections or photographs: 2D by nature
PROJECTION_MODALITIES = frozenset({"DX", "CR", "XA", "RF", "MG", "IO", "PX", "SM", "XC", "GM", "ES", "OP"})
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


def is_dicom_image2d(path: str | Path) -> bool:
    """True when ``path`` is one DICOM file holding one 2D image: a single frame of a projection /
    photographic modality (:data:`PROJECTION_MODALITIES`), or a single frame without patient geometry.

    Non-DICOM files and folders give False; multi-frame files go to the series loader.
    """
    path = Path(path)
    if not path.is_file():
        return False
    header = read_header(path)
    if header is None:
        return False
    frames = frames_of(header)
    if len(frames) != 1:
        return False
    modality = str(header.dataset.get("Modality", "") or "").upper()
    return modality in PROJECTION_MODALITIES or frames[0].position is None or frames[0].orientation is None


def image2d_file(info: SeriesInfo) -> Path | None:
    """The one file of a discovered "series" that is a single 2D DICOM image (:func:`is_dicom_image2d`:
    a radiograph, a slide or a photograph), read with :func:`read_dicom_image2d`; None for a slice
    stack, which the series loader reads."""
    if info.n_slices != 1 or info.unreadable:
        return None
    files = info.readable_files
    return files[0] if len(files) == 1 and is_dicom_image2d(files[0]) else None


def read_dicom_image2d(path: str | Path, kind: Kind = "image") -> Volume:
    """Read a single-frame 2D DICOM image into a one-slice Volume (see the module docstring).

    Needs a DICOM file with exactly one frame; raises :class:`DicomError` (one line) for non-DICOM
    files, several frames, or pixel data that cannot be decoded.
    """
    path = Path(path)
    header = read_header(path)
    if header is None:
        raise DicomError(f"{path} is not a DICOM file; check the path")
    frames = frames_of(header)
    if len(frames) != 1:
        raise DicomError(
            f"{path} holds {len(frames)} frames; medseg reads single-frame 2D DICOM images (a multi-frame "
            "file is read as a series: pass its folder, or export one frame)"
        )
    frame = frames[0]
    pixels, photometric = _pixels(header, frame)
    spacing, spacing_source = _spacing(header, frame)
    affine = _patient_affine(frame, spacing) if spacing_source == "PixelSpacing" else None
    meta = _meta(header, frame, path, photometric, spacing_source)
    return volume_from_pixels(pixels, spacing, kind, meta, affine)


def _pixels(header: FileHeader, frame: Frame) -> tuple[np.ndarray, str]:
    """(H, W) rescaled greyscale or (H, W, 3) RGB pixels and the photometric interpretation."""
    ds = header.dataset
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if photometric not in _COLOUR:
        values = rescale(decode_file(header)[:1], [frame.rescale[0]], [frame.rescale[1]])
        return values[0], photometric
    import pydicom
    from pydicom.pixels import apply_color_lut

    try:
        full = pydicom.dcmread(header.path, force=True)
        array = full.pixel_array  # pydicom 3 converts YBR to RGB
        if photometric == "PALETTE COLOR":
            array = apply_color_lut(array, full)
    except Exception as exc:  # pydicom and its plugins raise many types
        raise DicomError(
            f"cannot decode the colour pixel data of {header.path} ({type(exc).__name__}: {exc}); the file may be "
            "truncated, or install the decoder plugins (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls)"
        ) from None
    return np.asarray(array), photometric


def _spacing(header: FileHeader, frame: Frame) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm and the attribute it came from ("" when unknown)."""
    if frame.pixel_spacing is not None and all(v > 0 for v in frame.pixel_spacing[:2]):
        return (float(frame.pixel_spacing[0]), float(frame.pixel_spacing[1])), "PixelSpacing"
    imager = header.dataset.get("ImagerPixelSpacing")
    try:
        values = [float(v) for v in imager] if imager is not None else []
    except (TypeError, ValueError):
        values = []
    if len(values) >= 2 and all(v > 0 for v in values[:2]):
        return (values[0], values[1]), "ImagerPixelSpacing"
    return None, ""


def _patient_affine(frame: Frame, spacing: tuple[float, float] | None) -> np.ndarray | None:
    """The voxel -> RAS affine from ImagePositionPatient / ImageOrientationPatient, or None without them."""
    if frame.position is None or frame.orientation is None or spacing is None:
        return None
    row_dir, col_dir, normal = directions(frame.orientation)
    thickness = frame.header.dataset.get("SliceThickness")
    try:
        step = float(thickness) if thickness not in (None, "") and float(thickness) > 0 else 1.0
    except (TypeError, ValueError):
        step = 1.0
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = frame.position
    return LPS_TO_RAS @ lps


def _meta(header: FileHeader, frame: Frame, path: Path, photometric: str, spacing_source: str) -> VolumeMeta:
    ds = header.dataset
    return VolumeMeta(
        modality=str(ds.get("Modality", "") or "") or None,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "") or None,
        description=str(ds.get("SeriesDescription", "") or "") or None,
        rescale=None if frame.rescale == (1.0, 0.0) else (float(frame.rescale[0]), float(frame.rescale[1])),
        source=str(path),
        extra={
            "format": "dicom",
            "photometric": photometric,
            "spacing_source": spacing_source,
            "sop_class_uid": str(ds.get("SOPClassUID", "") or ""),
        },
    )
