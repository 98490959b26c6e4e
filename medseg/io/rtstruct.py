"""DICOM RT Structure Sets (RTSTRUCT) in: closed planar contours rasterised onto the image grid.

Each ROI's CLOSED_PLANAR contours are converted from patient LPS millimetres to voxel indices of
the referenced series, assigned to the slice they lie on (within
:attr:`medseg.io.seg.ReferenceGrid.tolerance` of a slice), and filled in the slice plane with
matplotlib's polygon test at voxel centres (:func:`fill_contours`: centres on an outer contour
count as inside, so contours through edge-voxel centres read back exactly). Contours of one ROI
on one slice are combined with the even-odd rule, so an inner contour cuts a hole. POINT and
OPEN contours carry no area and are skipped.

:func:`read_rtstruct_masks` keeps one mask per ROI (nothing lost where ROIs overlap);
:func:`read_rtstruct` collapses them into one label map and names the overlapping ROIs. Writing
is in :mod:`medseg.io.rtstruct_writer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import DicomError, InputError, did_you_mean
from medseg.io.masks import StructureMasks, structure_masks
from medseg.io.seg import ReferenceGrid
from medseg.volume import Volume

if TYPE_CHECKING:
    import pydicom
    from matplotlib.path import Path as MplPath

    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Voxel centres this close (in voxels) to a contour count as lying on it.
_EDGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Roi:
    """One ROI of a structure set: its number, name and closed planar contours (LPS mm, N x 3)."""

    number: int
    name: str
    contours: tuple[np.ndarray, ...]


def read_rtstruct(path: str | Path, reference: DicomSeries | Volume, rois: Sequence[str] | None = None) -> Volume:
    """Rasterise the ROIs of an RTSTRUCT onto the grid of ``reference`` as one label map.

    Needs an RTSTRUCT file (files without a DICOM preamble are read with ``force=True``) and the
    image series it was drawn on (checked by SeriesInstanceUID when ``reference`` is a loaded
    series). ``rois`` picks ROIs by name (case-insensitive), in the order given; default all ROIs
    in file order. Promises a label Volume on the reference grid where ROI number ``n`` in that
    order has value ``n`` and ``meta.label_names`` maps values to ROI names. Where ROIs overlap a
    later ROI wins; a warning names the overlapping ROIs (:func:`read_rtstruct_masks` keeps them all).
    """
    structures = read_rtstruct_masks(path, reference, rois)
    message = structures.overlap_message("ROIs")
    if message:
        log.warning(
            "%s: %s; in the label map the later ROI wins those voxels (medseg convert --masks keeps one mask per ROI)",
            path,
            message,
        )
    return structures.label_map()


def read_rtstruct_masks(
    path: str | Path, reference: DicomSeries | Volume, rois: Sequence[str] | None = None
) -> StructureMasks:
    """Rasterise every selected ROI into a mask of its own, so overlapping ROIs lose nothing.

    Needs what :func:`read_rtstruct` needs. Promises :class:`~medseg.io.masks.StructureMasks`:
    a 4D ``(I, J, K, N)`` uint8 Volume on the reference grid (channel ``n - 1`` is ROI ``n`` in
    selection order) and the overlapping ROI pairs with their shared voxel counts.
    """
    path = Path(path)
    ds = open_rtstruct(path)
    grid = ReferenceGrid.of(reference)
    _check_reference(ds, grid, path)
    selected = _select_rois(_read_rois(ds), rois, path)
    masks = np.zeros((*grid.shape, len(selected)), dtype=np.uint8, order="F")
    for n, roi in enumerate(selected):
        masks[..., n] = _roi_mask(roi, grid, path)
    meta = {
        "modality": "RTSTRUCT",
        "series_uid": grid.series_uid,
        "source": str(path),
        "description": str(ds.get("StructureSetLabel", "")) or None,
    }
    return structure_masks(masks, [roi.name for roi in selected], grid.volume, meta)


def open_rtstruct(path: Path) -> pydicom.Dataset:
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


def referenced_series_uids(ds: pydicom.Dataset) -> list[str]:
    """SeriesInstanceUIDs of the image series an RTSTRUCT's contours were drawn on."""
    uids = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in series:
                    uids.append(str(series.SeriesInstanceUID))
    return uids


def _check_reference(ds: pydicom.Dataset, grid: ReferenceGrid, path: Path) -> None:
    """Refuse a reference series other than the one the structure set names."""
    wanted = referenced_series_uids(ds)
    if wanted and grid.series_uid and grid.series_uid not in wanted:
        raise DicomError(
            f"{path} was drawn on image series {', '.join(wanted)} but the reference is series "
            f"{grid.series_uid}; pass the image series the RTSTRUCT refers to"
        )
    frames = {
        str(f.FrameOfReferenceUID)
        for f in ds.get("ReferencedFrameOfReferenceSequence", [])
        if "FrameOfReferenceUID" in f
    }
    if frames and grid.frame_of_reference_uid and grid.frame_of_reference_uid not in frames:
        log.warning(
            "%s names frame of reference %s but its image series has %s; placing the contours by the series reference",
            path,
            ", ".join(sorted(frames)),
            grid.frame_of_reference_uid,
        )


def _read_rois(ds: pydicom.Dataset) -> list[Roi]:
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


def _roi_mask(roi: Roi, grid: ReferenceGrid, path: Path) -> np.ndarray:
    """The boolean mask of one ROI on the grid: its contours filled slice by slice."""
    by_slice: dict[int, list[np.ndarray]] = {}
    skipped = 0
    for points in roi.contours:
        placed = _contour_in_slice(points, grid)
        if placed is None:
            skipped += 1
            continue
        by_slice.setdefault(placed[0], []).append(placed[1])
    if skipped:
        log.warning(
            "%s: %d contour(s) of ROI %r are not on a slice of the image series and were skipped",
            path,
            skipped,
            roi.name,
        )
    if not by_slice:
        log.warning("%s: ROI %r has no closed contours on this series; it stays empty", path, roi.name)
    mask = np.zeros(grid.shape, dtype=bool)
    for k, contours in by_slice.items():
        mask[:, :, k] = fill_contours(contours, grid.shape[:2])
    return mask


def fill_contours(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill the closed contours of one ROI on one slice (each N x 2 voxel indices) with the even-odd rule.

    A contour inside an odd number of others is a hole. Voxel centres on a contour belong to the
    structure: an outer contour includes its boundary, a hole excludes it, so contours drawn
    through the centres of the edge voxels (as rt-utils and many planning systems write them)
    give back exactly those voxels.
    """
    from matplotlib.path import Path as PolygonPath

    paths = [PolygonPath(ij, closed=False) for ij in contours]
    areas = [_polygon_area(ij) for ij in contours]
    plane = np.zeros(shape, dtype=bool)
    for n, ij in enumerate(contours):
        depth = sum(
            1
            for m, other in enumerate(paths)
            if m != n and areas[m] > areas[n] and np.all(_inside(other, ij, boundary=True))
        )
        plane ^= polygon_mask(ij, shape, boundary=depth % 2 == 0)
    return plane


def _polygon_area(ij: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N x 2)."""
    x, y = ij[:, 0], ij[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _inside(path: MplPath, points: np.ndarray, boundary: bool) -> np.ndarray:
    """Which ``points`` lie inside ``path``; points on it count when ``boundary`` is set.

    matplotlib's margin grows or shrinks the polygon depending on its orientation, so the union
    of both signs includes the boundary and their intersection excludes it.
    """
    grow = path.contains_points(points, radius=_EDGE_TOLERANCE)
    shrink = path.contains_points(points, radius=-_EDGE_TOLERANCE)
    return grow | shrink if boundary else grow & shrink


def _contour_in_slice(points: np.ndarray, grid: ReferenceGrid) -> tuple[int, np.ndarray] | None:
    """``(k, ij)`` for a contour lying on slice ``k`` (ij: N x 2 voxel indices), else None."""
    index = grid.to_index(points)
    k = int(round(float(np.mean(index[:, 2]))))
    if not 0 <= k < grid.shape[2] or np.max(np.abs(index[:, 2] - k)) > grid.tolerance[2]:
        return None
    return k, index[:, :2]


def polygon_mask(ij: np.ndarray, shape: tuple[int, int], boundary: bool = True) -> np.ndarray:
    """Boolean ``shape`` mask of the voxel centres inside the closed polygon ``ij`` (N x 2 indices).

    Centres on the polygon count as inside when ``boundary`` is set (within
    :data:`_EDGE_TOLERANCE` voxels). Tests the polygon's bounding box only; the polygon is closed
    implicitly (last point joins the first), as DICOM closed planar contours are.
    """
    from matplotlib.path import Path as PolygonPath

    mask = np.zeros(shape, dtype=bool)
    low = np.maximum(np.floor(ij.min(axis=0) - _EDGE_TOLERANCE).astype(int), 0)
    high = np.minimum(np.ceil(ij.max(axis=0) + _EDGE_TOLERANCE).astype(int) + 1, shape)
    if np.any(high <= low):
        return mask
    ii, jj = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]), indexing="ij")
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    inside = _inside(PolygonPath(ij, closed=False), centres, boundary)
    mask[low[0] : high[0], low[1] : high[1]] = inside.reshape(ii.shape)
    return mask
