"""Reading a case: its channel volumes and, for DICOM input, the loaded series (the source of a SEG).

A manifest row may name a DICOM folder as its image; :func:`case_series` picks the series there
(the row's ``series`` cell, as ``--series``, or the folder's only image series) when the case runs,
so one bad row fails only that case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medseg.errors import InputError
from medseg.io.files import read_volume_file

if TYPE_CHECKING:
    from medseg.cases.case import InputCase
    from medseg.io.dicom import DicomSeries, SeriesInfo
    from medseg.volume import Volume


def case_series(case: InputCase) -> SeriesInfo | None:
    """The DICOM series ``case`` reads, or None for volume files.

    Raises InputError when a manifest row's DICOM folder is not its only image, or holds several
    image series and the row names none (or one that is not there).
    """
    if case.series is not None:
        return case.series
    if case.remote is not None:
        raise InputError(
            f"case {case.case_id} lives in an archive ({case.source}); retrieve it first "
            "(medseg.cases.archive.fetch_case)"
        )
    folders = [p for p in case.images if p.is_dir()]
    if not folders:
        return None
    if len(case.images) > 1:
        raise InputError(
            f"case {case.case_id}: a DICOM folder must be the only image of a case; convert the channels to NIfTI first"
        )
    from medseg.io.dicom import discover_series, select_series

    infos = discover_series(folders[0])
    if case.series_select is None and sum(info.is_image for info in infos) != 1:
        raise InputError(
            f"case {case.case_id}: {folders[0]} does not hold exactly one image series; add a 'series' column "
            "(index, UID or description pattern) to the manifest"
        )
    return select_series(infos, case.series_select)


def read_case(
    case: InputCase, resample: bool = False, *, allow_missing_slices: bool = False, values: str = "rescaled"
) -> tuple[list[Volume], DicomSeries | None]:
    """The 3D channel volumes of ``case`` and, for a DICOM series, the loaded ``DicomSeries`` (else None).
    A colour 2D image (PNG, TIFF, a single-frame 2D DICOM image) gives one volume per colour channel;
    a single-frame 2D DICOM image (radiograph, slide: :func:`medseg.io.dicom.image2d.image2d_file`) is
    read as a 2D image, without a ``DicomSeries``.

    The DICOM reader options are :func:`medseg.io.dicom.load_series`'s: a series with gantry
    tilt or uneven slices is refused (GeometryError) unless ``resample`` is set, which resamples
    it onto a regular grid; one with unreadable files is refused (DicomError) unless
    ``allow_missing_slices``, which loads the readable ones (reported; the geometry rules then
    decide); ``values`` is ``"rescaled"`` or ``"real-world"``. Volume files ignore them.
    """
    series = case_series(case)
    if series is not None:
        from medseg.io.dicom import load_series
        from medseg.io.dicom.image2d import image2d_file, read_dicom_image2d

        image2d = image2d_file(series)
        if image2d is not None:  # a radiograph or slide: one 2D image (its colours as channels), no series
            return image_channels(read_dicom_image2d(image2d)), None

        dicom = load_series(series, resample=resample, allow_missing_slices=allow_missing_slices, values=values)
        return [dicom.volume.require_3d()], dicom
    return [channel for p in case.images for channel in image_channels(read_volume_file(p))], None


def image_channels(volume: Volume) -> list[Volume]:
    """The 3D channel volumes of one file: a colour 2D image (``(W, H, 1, C)``) gives one per
    channel; anything else must be 3D (``require_3d``: a 4D series of frames is refused)."""
    if volume.array.ndim == 4 and volume.spatial_shape[2] == 1:
        return [volume.with_array(volume.array[..., c]) for c in range(volume.array.shape[3])]
    return [volume.require_3d()]
