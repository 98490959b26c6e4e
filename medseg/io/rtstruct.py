"""DICOM RT Structure Sets (RTSTRUCT) in: closed planar contours rasterised onto the image grid.

Each ROI's CLOSED_PLANAR contours are converted from patient LPS millimetres to voxel indices of
the referenced series, assigned to the slice they lie on (within
:attr:`medseg.io.seg.ReferenceGrid.tolerance` of a slice), and filled in the slice plane with
matplotlib's polygon test at voxel centres. Contours of one ROI on one slice are combined with
the even-odd rule, so an inner contour cuts a hole. POINT and OPEN contours carry no area and are
skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from medseg.errors import DicomError, InputError, did_you_mean
from medseg.io.seg import ReferenceGrid
from medseg.volume import Volume, VolumeMeta

if TYPE_CHECKING:
    import pydicom

    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True)
class Roi:
    """One ROI of a structure set: its number, name and closed planar contours (LPS mm, N x 3)."""

    number: int
    name: str
    contours: tuple[np.ndarray, ...]


def read_rtstruct(
    path: str | Path, reference: "DicomSeries | Volume", rois: Sequence[str] | None = None
) -> Volume:
    """Rasterise the ROIs of an RTSTRUCT onto the grid of ``reference``.

    Needs an RTSTRUCT file (files without a DICOM preamble are read with ``force=True``) and the
    image series it was drawn on (checked by SeriesInstanceUID when ``reference`` is a loaded
    series). ``rois`` picks ROIs by name (case-insensitive), in the order given; default all ROIs
    in file order. Promises a label Volume on the reference grid where ROI number ``n`` in that
    order has value ``n`` (a later ROI wins where ROIs overlap, logged) and
    ``meta.label_names`` maps values to ROI names.
    """
    path = Path(path)
    ds = open_rtstruct(path)
    grid = ReferenceGrid.of(reference)
    _check_reference(ds, grid, path)
    selected = _select_rois(_read_rois(ds), rois, path)
    labels = np.zeros(grid.shape, dtype=np.uint8 if len(selected) < 256 else np.uint16)
    overlap = 0
    for value, roi in enumerate(selected, start=1):
        overlap += _paint_roi(labels, roi, value, grid, path)
    if overlap:
        log.info("%d voxel(s) lie in several ROIs; the later ROI was kept", overlap)
    meta = VolumeMeta(
        modality="RTSTRUCT",
        series_uid=grid.series_uid,
        description=str(ds.get("StructureSetLabel", "")) or None,
        source=str(path),
        label_names={value: roi.name for value, roi in enumerate(selected, start=1)},
    )
    return Volume(labels, grid.volume.affine, "label", meta)


def open_rtstruct(path: Path) -> "pydicom.Dataset":
    """Read an RTSTRUCT with pydicom (retrying with ``force=True`` for files without a preamble)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; pass the RTSTRUCT file")
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, force=True)
        sop_class = str(ds.get("SOPClassUID", ""))
        is_rtstruct = sop_class == RTSTRUCT_SOP_CLASS or (not sop_class and "StructureSetROISequence" in ds)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DicomError(f"{path} is not a readable DICOM file ({exc}); pass an RTSTRUCT file") from None
    if not is_rtstruct:
        raise DicomError(f"{path} is not a DICOM RT Structure Set; pass an RTSTRUCT file")
    return ds


def referenced_series_uids(ds: "pydicom.Dataset") -> list[str]:
    """SeriesInstanceUIDs of the image series an RTSTRUCT's contours were drawn on."""
    uids = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in series:
                    uids.append(str(series.SeriesInstanceUID))
    return uids


def _check_reference(ds: "pydicom.Dataset", grid: ReferenceGrid, path: Path) -> None:
    """Refuse a reference series other than the one the structure set names."""
    wanted = referenced_series_uids(ds)
    if wanted and grid.series_uid and grid.series_uid not in wanted:
        raise DicomError(
            f"{path} was drawn on image series {', '.join(wanted)} but the reference is series "
            f"{grid.series_uid}; pass the image series the RTSTRUCT refers to"
        )
    frames = {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", []) if "FrameOfReferenceUID" in f}
    if frames and grid.frame_of_reference_uid and grid.frame_of_reference_uid not in frames:
        log.warning(
            "%s names frame of reference %s but its image series has %s; placing the contours "
            "by the series reference", path, ", ".join(sorted(frames)), grid.frame_of_reference_uid,
        )


def _read_rois(ds: "pydicom.Dataset") -> list[Roi]:
    """All ROIs in StructureSetROISequence order with their CLOSED_PLANAR contour points."""
    contours: dict[int, list[np.ndarray]] = {}
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        for contour in item.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            if len(points) >= 3:
                contours.setdefault(number, []).append(points)
    return [
        Roi(int(r.ROINumber), str(r.get("ROIName", f"ROI {r.ROINumber}")), tuple(contours.get(int(r.ROINumber), ())))
        for r in ds.get("StructureSetROISequence", [])
    ]


def _select_rois(available: list[Roi], names: Sequence[str] | None, path: Path) -> list[Roi]:
    """The ROIs named in ``names`` (case-insensitive, in that order), or all of them."""
    if not available:
        raise DicomError(f"{path} defines no ROIs; there is nothing to convert")
    if names is None:
        return available
    by_name = {roi.name.lower(): roi for roi in available}
    selected = []
    for name in names:
        roi = by_name.get(name.lower())
        if roi is None:
            hint = did_you_mean(name, [r.name for r in available])
            raise InputError(
                f"{path} has no ROI named {name!r}; {hint}available: {', '.join(r.name for r in available)}"
            )
        selected.append(roi)
    return selected


def _paint_roi(labels: np.ndarray, roi: Roi, value: int, grid: ReferenceGrid, path: Path) -> int:
    """Fill ``roi`` into ``labels`` with ``value``; returns how many labelled voxels it overwrote."""
    slices: dict[int, np.ndarray] = {}
    skipped = 0
    for points in roi.contours:
        placed = _contour_in_slice(points, grid)
        if placed is None:
            skipped += 1
            continue
        k, ij = placed
        mask = slices.setdefault(k, np.zeros(grid.shape[:2], dtype=bool))
        mask ^= polygon_mask(ij, grid.shape[:2])  # even-odd: an inner contour makes a hole
    if skipped:
        log.warning(
            "%s: %d contour(s) of ROI %r are not on a slice of the image series and were skipped",
            path, skipped, roi.name,
        )
    if not slices:
        log.warning("%s: ROI %r has no closed contours on this series; it stays empty", path, roi.name)
    overlap = 0
    for k, mask in slices.items():
        plane = labels[:, :, k]
        overlap += int(np.count_nonzero(mask & (plane > 0)))
        plane[mask] = value
    return overlap


def _contour_in_slice(points: np.ndarray, grid: ReferenceGrid) -> tuple[int, np.ndarray] | None:
    """``(k, ij)`` for a contour lying on slice ``k`` (ij: N x 2 voxel indices), else None."""
    index = grid.to_index(points)
    k = int(round(float(np.mean(index[:, 2]))))
    if not 0 <= k < grid.shape[2] or np.max(np.abs(index[:, 2] - k)) > grid.tolerance[2]:
        return None
    return k, index[:, :2]


def polygon_mask(ij: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the voxel centres inside the closed polygon ``ij`` (N x 2 indices).

    Uses matplotlib's point-in-polygon test on the polygon's bounding box only; the polygon is
    closed implicitly (last point joins the first), as DICOM closed planar contours are.
    """
    from matplotlib.path import Path as PolygonPath

    mask = np.zeros(shape, dtype=bool)
    low = np.maximum(np.floor(ij.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(ij.max(axis=0)).astype(int) + 1, shape)
    if np.any(high <= low):
        return mask
    ii, jj = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]), indexing="ij")
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    inside = PolygonPath(ij, closed=False).contains_points(centres)
    mask[low[0]:high[0], low[1]:high[1]] = inside.reshape(ii.shape)
    return mask
