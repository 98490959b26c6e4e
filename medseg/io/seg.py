"""DICOM Segmentation (SEG) objects in and out, placed exactly on the referenced image grid.

Reading (:func:`read_seg`) decodes the SEG with highdicom and places every frame on a slice of
the reference by the frame's ``ReferencedSOPInstanceUID`` when that instance is part of the
reference series, otherwise by its plane position (``ImagePositionPatient``) within
:data:`POSITION_TOLERANCE` voxels. Frame order is never used: scanners and writers order SEG frames
freely (dcmqi stores them z ascending whatever the source order). When a frame has both a
reference and a position, the two must agree, so a SEG that would land shifted or flipped is
refused instead of being placed wrongly.

Writing (:func:`write_seg`) builds a BINARY SEG with highdicom from a label volume on the source
series grid: one segment per label value, frames tied to their source instances with the source
slice positions in ``PlanePositionSequence``, segments named and coded (:class:`SegmentCoding`,
SNOMED CT) from the model's label metadata or the label names. Anonymised sources whose patient
or study type-2 attributes are absent or invalid get them empty in the SEG (from a patched copy of
the first header; the source datasets are never changed).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Mapping, MutableSequence, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import ConfigError, DicomError, GeometryError, InputError
from medseg.io.atomic import atomic_path
from medseg.io.masks import StructureMasks, structure_masks
from medseg.io.palette import dicom_display_colour, label_colour
from medseg.volume import LPS_TO_RAS, Volume

if TYPE_CHECKING:
    import highdicom as hd
    import pydicom
    from pydicom.sr.coding import Code

    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)

#: Largest offset, in voxels along each axis, between a frame (or contour) position and the
#: reference voxel it is placed on. Half a voxel would be ambiguous; real files agree to ~1e-4.
POSITION_TOLERANCE = 0.2
#: ... and never more than this many millimetres, so thick slices cannot swallow nearby frames.
POSITION_TOLERANCE_MM = 0.5

SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
}


# ---------------------------------------------------------------------------- reference grid
@dataclass(frozen=True)
class ReferenceGrid:
    """The voxel grid that SEG frames and RTSTRUCT contours are placed on.

    ``lps`` maps voxel indices ``(i, j, k)`` to LPS millimetres; ``slice_positions`` holds the LPS
    position of voxel ``(0, 0, k)`` of every slice (the source ``ImagePositionPatient`` for a DICOM
    series, so irregular slice spacing is honoured); ``source_to_k`` maps ``(SOPInstanceUID,
    1-based frame number)`` of each source frame to its slice ``k`` (empty for a plain Volume or
    a resampled series, whose slices are no source frames).
    """

    volume: Volume
    lps: np.ndarray
    slice_positions: np.ndarray
    source_to_k: Mapping[tuple[str, int], int] = field(default_factory=dict)
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    resampled: bool = False

    @classmethod
    def of(cls, reference: DicomSeries | Volume) -> ReferenceGrid:
        """The grid of a loaded DICOM series (with its instance UIDs) or of a plain Volume."""
        if isinstance(reference, Volume):
            volume = reference.require_3d()
            lps = LPS_TO_RAS @ volume.affine
            ks = np.arange(volume.spatial_shape[2])
            positions = (lps[:3, 2:3] * ks).T + lps[:3, 3]
            return cls(volume, lps, positions, {}, volume.meta.series_uid)
        volume = reference.volume.require_3d()
        first = reference.datasets[0]
        return cls(
            volume,
            LPS_TO_RAS @ volume.affine,
            np.asarray(reference.frame_positions, dtype=np.float64).reshape(-1, 3),
            _source_to_k(reference),
            str(first.SeriesInstanceUID),
            str(first.get("FrameOfReferenceUID", "")) or None,
            bool(reference.resampled),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The reference's spatial shape ``(I, J, K)``."""
        return self.volume.spatial_shape

    @property
    def tolerance(self) -> np.ndarray:
        """Per-axis placement tolerance in voxels: :data:`POSITION_TOLERANCE`, at most 0.5 mm."""
        return np.minimum(POSITION_TOLERANCE, POSITION_TOLERANCE_MM / np.asarray(self.volume.spacing))

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(N, 3)`` of LPS points ``(N, 3)``.

        The slice index comes from the nearest source slice position (so irregular series are
        placed slice by slice); the in-plane indices and the residual distance to that slice
        come from the grid's axes.
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        axes = self.lps[:3, :3]
        normal = np.cross(axes[:, 0], axes[:, 1])
        normal /= np.linalg.norm(normal)
        distance = (points @ normal)[:, None] - (self.slice_positions @ normal)[None, :]
        k = np.argmin(np.abs(distance), axis=1)
        local = np.linalg.solve(axes, (points - self.slice_positions[k]).T).T
        local[:, 2] += k
        return local


def _source_to_k(series: DicomSeries) -> dict[tuple[str, int], int]:
    """``(SOPInstanceUID, frame number) -> k`` for every source frame of slice k (volume 0)."""
    if series.resampled:
        return {}
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    if series.source_frames:
        return {(uids[frames[0][0]], int(frames[0][1])): k for k, frames in enumerate(series.source_frames)}
    if len(uids) == series.volume.spatial_shape[2]:  # classic series, one instance per slice
        return {(uid, 1): k for k, uid in enumerate(uids)}
    return {}


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Frame:
    """Where one SEG frame goes: its 1-based number, segment number and index placement."""

    number: int
    segment: int
    origin: tuple[int, int, int]  # voxel index of the frame's pixel (row 0, column 0)
    col_axis: tuple[int, int]  # (axis, +1/-1) the column index runs along
    row_axis: tuple[int, int]  # (axis, +1/-1) the row index runs along


def read_seg(path: str | Path, reference: DicomSeries | Volume) -> Volume:
    """Read a DICOM SEG as a label Volume on the grid of ``reference``.

    Needs a SEG file (BINARY, FRACTIONAL or LABELMAP) whose frames lie on slices of
    ``reference`` (a loaded DICOM series, or a Volume for placement by position only).
    Promises a ``kind="label"`` Volume with the reference's shape and affine; voxel values are
    segment numbers (FRACTIONAL thresholded at 0.5), names in ``meta.label_names``. Where
    segments overlap the highest number wins and a warning names them (:func:`read_seg_masks`
    keeps them all). Raises :class:`DicomError` / :class:`GeometryError` with the reason when the
    file is no SEG or a frame cannot be placed exactly.
    """
    structures = read_seg_masks(path, reference)
    message = structures.overlap_message("segments")
    if message:
        log.warning(
            "%s: %s; in the label map the highest segment number wins those voxels "
            "(medseg convert --masks keeps one mask per segment)",
            path,
            message,
        )
    numbers = structures.masks.meta.extra["segment_numbers"]
    masks = structures.masks.array
    labels = np.zeros(masks.shape[:3], dtype=np.uint8 if max(numbers + [1]) < 256 else np.uint16, order="F")
    for channel, number in sorted(enumerate(numbers), key=lambda item: item[1]):
        labels[masks[..., channel] > 0] = number
    meta = replace(structures.masks.meta, label_names=dict(zip(numbers, structures.names)))
    return Volume(labels, structures.masks.affine, "label", meta)


def read_seg_masks(path: str | Path, reference: DicomSeries | Volume) -> StructureMasks:
    """Read every segment of a DICOM SEG into a mask of its own, so overlapping segments lose nothing.

    Needs what :func:`read_seg` needs. Promises :class:`~medseg.io.masks.StructureMasks` with
    one channel per segment in SegmentSequence order (``meta.extra["segment_numbers"]`` holds
    their segment numbers) and the overlapping segment pairs.
    """
    path = Path(path)
    seg = _open_seg(path)
    grid = ReferenceGrid.of(reference)
    _check_frame_of_reference(seg, grid, path)
    frames = _place_frames(seg, grid, path)
    segments = [item for item in seg.SegmentSequence if int(item.SegmentNumber) > 0]
    numbers = [int(item.SegmentNumber) for item in segments]
    masks = _paint_masks(seg, frames, grid.shape, numbers)
    meta = {
        "modality": "SEG",
        "series_uid": grid.series_uid,
        "source": str(path),
        "description": str(seg.get("SeriesDescription", "")) or None,
        "extra": {"seg_series_uid": str(seg.SeriesInstanceUID), "segment_numbers": numbers},
    }
    names = [str(item.get("SegmentLabel", f"segment {item.SegmentNumber}")) for item in segments]
    return structure_masks(masks, names, grid.volume, meta)


def seg_referenced_series_uids(path: str | Path) -> list[str]:
    """SeriesInstanceUIDs of the image series a SEG file references (headers only)."""
    path = Path(path)
    ds = _read_header(path)
    return [
        str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in item
    ]


def _read_header(path: Path) -> pydicom.Dataset:
    """The header of a DICOM SEG file (no pixel data), or a one-line error."""
    import pydicom

    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; pass the DICOM SEG file")
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for non-DICOM or truncated files
        raise DicomError(f"{path} is not a readable DICOM file ({exc}); pass a DICOM SEG file") from None
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        name = getattr(header.get("SOPClassUID"), "name", sop_class or "unknown")
        raise DicomError(f"{path} is a {name} object, not a DICOM SEG; pass a Segmentation file")
    return header


def _open_seg(path: Path) -> hd.seg.Segmentation:
    """Parse ``path`` with highdicom, turning every failure into a one-line user error."""
    import highdicom as hd

    _read_header(path)
    try:
        return hd.seg.segread(path)
    except Exception as exc:
        raise DicomError(
            f"{path}: the SEG could not be decoded ({type(exc).__name__}: {exc}); is the file complete and valid?"
        ) from None


def _check_frame_of_reference(seg: pydicom.Dataset, grid: ReferenceGrid, path: Path) -> None:
    """Refuse a SEG drawn in another patient coordinate system than the reference."""
    ours = str(seg.get("FrameOfReferenceUID", "")) or None
    if ours and grid.frame_of_reference_uid and ours != grid.frame_of_reference_uid:
        raise GeometryError(
            f"{path} is in frame of reference {ours} but the reference series is in "
            f"{grid.frame_of_reference_uid}; pass the image series the SEG was made on"
        )


def _functional_item(seg: pydicom.Dataset, per_frame: Any, keyword: str) -> Any:
    """The first item of functional group ``keyword`` for a frame (per-frame, else shared)."""
    for groups in (per_frame, seg.get("SharedFunctionalGroupsSequence", [None])[0]):
        items = groups.get(keyword) if groups is not None else None
        if items:
            return items[0]
    return None


def _place_frames(seg: pydicom.Dataset, grid: ReferenceGrid, path: Path) -> list[_Frame]:
    """Work out where every SEG frame goes on the reference grid (by instance UID, else position)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or [None] * int(seg.get("NumberOfFrames", 1))
    labelmap = str(seg.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.7"
    frames = []
    for number, groups in enumerate(per_frame, start=1):
        segment = 0 if labelmap else _frame_segment(seg, groups, number, path)
        uid_k = _frame_source_slice(groups, grid)
        placement = _frame_geometry(seg, groups, grid)
        if placement is None:
            if uid_k is None:
                raise DicomError(
                    f"{path}: frame {number} has neither a plane position nor a reference to an "
                    "instance of the reference series; pass the image series the SEG was made on"
                )
            placement = ((0, 0, uid_k), (0, 1), (1, 1))  # same pixel grid as the source instance
            if (int(seg.Columns), int(seg.Rows)) != grid.shape[:2]:
                raise GeometryError(
                    f"{path}: frame {number} is {seg.Rows}x{seg.Columns} pixels but its source image "
                    f"{grid.shape[1]}x{grid.shape[0]}, and it has no plane position to place it; re-export the SEG"
                )
        elif uid_k is not None and placement[0][2] != uid_k:
            raise GeometryError(
                f"{path}: frame {number} references slice {uid_k + 1} of the series but its plane "
                f"position lies on slice {placement[0][2] + 1}; the SEG is inconsistent, re-export it"
            )
        else:
            _check_frame_fits(seg, placement, grid.shape, path, number)
        frames.append(_Frame(number, segment, *placement))
    _check_one_frame_per_slice(frames, path)
    return frames


def _check_one_frame_per_slice(frames: list[_Frame], path: Path) -> None:
    """Refuse two frames of one segment on one reference slice (a coarser reference grid)."""
    seen: dict[tuple, int] = {}
    for frame in frames:
        key = (frame.segment, frame.origin, frame.col_axis, frame.row_axis)
        if key in seen:
            raise GeometryError(
                f"{path}: frames {seen[key]} and {frame.number} land on the same slice of the reference; "
                "its slices are coarser than the SEG's, pass the image series the SEG was made on"
            )
        seen[key] = frame.number


def _frame_segment(seg: pydicom.Dataset, groups: Any, number: int, path: Path) -> int:
    """The segment number a BINARY/FRACTIONAL frame belongs to."""
    item = _functional_item(seg, groups, "SegmentIdentificationSequence")
    if item is None or "ReferencedSegmentNumber" not in item:
        raise DicomError(f"{path}: frame {number} does not say which segment it belongs to; re-export the SEG")
    return int(item.ReferencedSegmentNumber)


def _frame_source_slice(groups: Any, grid: ReferenceGrid) -> int | None:
    """Slice ``k`` of the reference instance a frame was derived from, if it is in the grid."""
    if groups is None:
        return None
    for derivation in groups.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            key = (str(source.get("ReferencedSOPInstanceUID", "")), _first_int(source.get("ReferencedFrameNumber")))
            k = grid.source_to_k.get(key)
            if k is not None:
                return k
    return None


def _first_int(value: Any, default: int = 1) -> int:
    """The first number of a (possibly multi-valued or empty) DICOM integer element."""
    if isinstance(value, MutableSequence):
        value = value[0] if len(value) else None
    return default if value in (None, "") else int(value)


def _frame_geometry(
    seg: pydicom.Dataset, groups: Any, grid: ReferenceGrid
) -> tuple[tuple[int, int, int], tuple[int, int], tuple[int, int]] | None:
    """Index placement of a frame from its plane position, orientation and pixel spacing.

    Returns ``(origin, (col_axis, sign), (row_axis, sign))`` or None when the frame has no
    position. Raises :class:`GeometryError` when the frame is not on the reference voxels.
    """
    position = _functional_item(seg, groups, "PlanePositionSequence")
    orientation = _functional_item(seg, groups, "PlaneOrientationSequence")
    measures = _functional_item(seg, groups, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
        return None
    ipp = np.asarray(position.ImagePositionPatient, dtype=np.float64)
    iop = np.asarray(orientation.ImageOrientationPatient, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
    origin = grid.to_index(ipp)[0]
    axes = np.linalg.solve(grid.lps[:3, :3], np.stack([iop[:3] * col_spacing, iop[3:] * row_spacing], 1))
    col_axis, row_axis = _unit_axis(axes[:, 0]), _unit_axis(axes[:, 1])
    extent = max(int(seg.Rows), int(seg.Columns))
    rounded = np.round(origin)
    if (
        col_axis is None
        or row_axis is None
        or col_axis[0] == row_axis[0]
        or np.any(np.abs(origin - rounded) > grid.tolerance)
        or extent * _axis_error(axes) > POSITION_TOLERANCE
    ):
        hint = "load the series without --resample" if grid.resampled else "pass the image series the SEG was made on"
        raise GeometryError(
            f"a SEG frame at {np.round(ipp, 2).tolist()} mm (orientation {np.round(iop, 4).tolist()}) "
            f"does not lie on the voxels of the reference series; {hint}"
        )
    return (tuple(int(v) for v in rounded), col_axis, row_axis)  # type: ignore[return-value]


def _unit_axis(vector: np.ndarray) -> tuple[int, int] | None:
    """``(axis, sign)`` when ``vector`` is within tolerance of a signed unit index step."""
    axis = int(np.argmax(np.abs(vector)))
    sign = 1 if vector[axis] > 0 else -1
    return (axis, sign) if abs(abs(vector[axis]) - 1.0) < 1e-2 else None


def _axis_error(axes: np.ndarray) -> float:
    """Largest deviation of the frame's per-pixel index steps from signed unit steps."""
    return float(np.max(np.abs(axes - np.round(axes))))


def _check_frame_fits(
    seg: pydicom.Dataset, placement: tuple, shape: tuple[int, int, int], path: Path, number: int
) -> None:
    """Refuse a frame whose pixels would fall outside the reference grid."""
    origin, (col_axis, col_sign), (row_axis, row_sign) = placement
    rows, cols = int(seg.Rows), int(seg.Columns)
    corner = list(origin)
    corner[col_axis] += col_sign * (cols - 1)
    corner[row_axis] += row_sign * (rows - 1)
    if any(not (0 <= v < n and 0 <= c < n) for v, c, n in zip(origin, corner, shape)):
        raise GeometryError(
            f"{path}: frame {number} ({rows}x{cols} pixels) falls outside the reference grid "
            f"{shape}; pass the image series the SEG was made on"
        )


def _paint_masks(
    seg: hd.seg.Segmentation, frames: list[_Frame], shape: tuple[int, int, int], numbers: list[int]
) -> np.ndarray:
    """Decode frames into one mask per segment: ``(I, J, K, len(numbers))`` uint8, 1 = in the segment."""
    channel = {number: n for n, number in enumerate(numbers)}
    # Fortran order makes a slice masks[:, :, k, n] contiguous, like a transposed frame
    masks = np.zeros((*shape, len(numbers)), dtype=np.uint8, order="F")
    threshold = _foreground_threshold(seg)
    for frame in frames:
        stored = seg.get_stored_frame(frame.number).T  # (columns, rows) like the view
        if frame.segment == 0:  # LABELMAP: pixel values are segment numbers
            for number, n in channel.items():
                _frame_view(masks[..., n], frame, stored.shape)[stored == number] = 1
        elif frame.segment in channel:
            _frame_view(masks[..., channel[frame.segment]], frame, stored.shape)[stored >= threshold] = 1
    return masks


def _foreground_threshold(seg: pydicom.Dataset) -> float:
    """Stored value at and above which a pixel is foreground (0.5 of the maximum for FRACTIONAL)."""
    if str(seg.get("SegmentationType", "")) == "FRACTIONAL":
        return 0.5 * float(seg.get("MaximumFractionalValue", 255))
    return 1


def _frame_view(labels: np.ndarray, frame: _Frame, shape: tuple[int, int]) -> np.ndarray:
    """A writable view of ``labels`` shaped ``(columns, rows)`` where a frame's pixels go."""
    cols, rows = shape
    index: list[Any] = list(frame.origin)
    (col_axis, col_sign), (row_axis, row_sign) = frame.col_axis, frame.row_axis
    index[col_axis] = _span(frame.origin[col_axis], col_sign, cols)
    index[row_axis] = _span(frame.origin[row_axis], row_sign, rows)
    view = labels[tuple(index)]
    return view.T if col_axis > row_axis else view


def _span(start: int, sign: int, length: int) -> slice:
    """Basic slice of ``length`` indices from ``start`` stepping by ``sign`` (+1 or -1)."""
    if sign > 0:
        return slice(start, start + length)
    stop = start - length
    return slice(start, stop if stop >= 0 else None, -1)


# ---------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class CodedTerm:
    """One coded concept in DICOM's vocabulary: code value, coding scheme (``SCT`` = SNOMED CT) and meaning."""

    code: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name, value, limit in (("code", self.code, 16), ("scheme", self.scheme, 16), ("meaning", self.meaning, 64)):
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise ConfigError(
                    f"a code's {name} must be a non-empty text of at most {limit} characters, got {value!r}"
                )

    @classmethod
    def from_dict(cls, data: object, where: str) -> CodedTerm:
        """A term from ``{"code": ..., "scheme": ..., "meaning": ...}``; ConfigError naming ``where``."""
        if not isinstance(data, Mapping) or set(data) != {"code", "scheme", "meaning"}:
            raise ConfigError(f"{where} must be an object with exactly the keys code, scheme and meaning, got {data!r}")
        try:
            return cls(data["code"], data["scheme"], data["meaning"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def of(cls, code: Code) -> CodedTerm:
        """The term of a pydicom code (``pydicom.sr.codedict.codes``)."""
        return cls(str(code.value), str(code.scheme_designator), str(code.meaning))

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "scheme": self.scheme, "meaning": self.meaning}

    def concept(self) -> hd.sr.CodedConcept:
        import highdicom as hd

        return hd.sr.CodedConcept(self.code, self.scheme, self.meaning)


@dataclass(frozen=True)
class SegmentCoding:
    """What a segment is, in a SEG's own terms: segmented property category and type (DICOM CID 7150 /
    7151, SNOMED CT), and an optional type modifier (e.g. laterality or "Anterior")."""

    category: CodedTerm
    type: CodedTerm
    modifier: CodedTerm | None = None

    @classmethod
    def from_dict(cls, data: object, where: str) -> SegmentCoding:
        """Coding from ``{"category": TERM, "type": TERM[, "modifier": TERM]}`` (TERM as in
        :meth:`CodedTerm.from_dict`); ConfigError naming ``where`` and what is wrong."""
        if not isinstance(data, Mapping) or not {"category", "type"} <= set(data) <= {"category", "type", "modifier"}:
            raise ConfigError(
                f"{where} must be an object with the keys category, type and optionally modifier, got {data!r}"
            )
        modifier = data.get("modifier")
        return cls(
            CodedTerm.from_dict(data["category"], f"{where}.category"),
            CodedTerm.from_dict(data["type"], f"{where}.type"),
            None if modifier is None else CodedTerm.from_dict(modifier, f"{where}.modifier"),
        )

    def to_dict(self) -> dict[str, dict[str, str]]:
        data = {"category": self.category.to_dict(), "type": self.type.to_dict()}
        if self.modifier is not None:
            data["modifier"] = self.modifier.to_dict()
        return data


def write_seg(
    labels: Volume,
    source: DicomSeries,
    path: str | Path,
    label_names: Mapping[int, str] | None = None,
    model_name: str | None = None,
    codes: Mapping[int, SegmentCoding] | None = None,
) -> Path:
    """Write ``labels`` as a BINARY DICOM SEG that references the ``source`` series.

    Needs a label Volume on exactly the grid of ``source.volume`` (else :class:`GeometryError`)
    with at least one voxel > 0, and a source loaded without resampling (its slices must be the
    source instances) whose first header has a StudyInstanceUID. Promises one segment per label
    value 1..max (DICOM numbers segments without gaps, so a value absent from the volume becomes
    an empty segment and every segment number equals its label value), named from ``label_names``
    (else ``labels.meta.label_names``), coded from ``codes`` (else :func:`segment_codes` of the
    name), frames tied to their source instances with the source slice positions; algorithm
    "medseg <model_name>" with medseg's version, a series description naming the model. Patient
    and study attributes are copied from the source; type-2 ones that are absent or invalid
    (anonymised exports) are written empty, a lost FrameOfReferenceUID is derived from the series
    UID; text is written in UTF-8. The source datasets are not changed. Written atomically.
    """
    path = Path(path)
    labels = _checked_labels(labels, source)
    descriptions = _segment_descriptions(labels, label_names, model_name, codes)
    images, frames = _source_images_and_frames(labels, source)
    datasets = _writable_sources(images, float(labels.spacing[2]))
    seg = _segmentation(datasets, frames, descriptions, model_name, source.info.uid)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def write_seg_image2d(
    labels: Volume,
    source: str | Path,
    path: str | Path,
    label_names: Mapping[int, str] | None = None,
    model_name: str | None = None,
    codes: Mapping[int, SegmentCoding] | None = None,
) -> Path:
    """Write the labels of a single-frame 2D DICOM image (DX, CR, XA, SM...) as a one-frame BINARY
    DICOM SEG that references it: the 2D counterpart of :func:`write_seg`.

    Needs ``labels`` on the image's pixel grid as :func:`medseg.io.dicom.image2d.read_dicom_image2d`
    reads it (shape ``(Columns, Rows, 1)``), some foreground, values up to 65535, and ``source``
    the image file (its header gives the study, patient and referenced instance). Promises the
    segments of :func:`write_seg` (numbered by label value, named, coded). An image without
    patient position (most radiographs, slide images) gets a SEG without plane positions, tied to
    its source by the referenced instance alone, as DICOM allows for images outside a frame of
    reference; one with ImagePositionPatient keeps the patient coordinates. Written atomically;
    the source file is not changed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        dataset = pydicom.dcmread(source, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise DicomError(f"cannot read the DICOM header of {source} ({type(exc).__name__}); check the file") from None
    labels = labels.as_label() if labels.kind != "label" else labels
    grid = (int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0), 1)
    if labels.spatial_shape != grid:
        raise GeometryError(
            f"the labels (shape {labels.spatial_shape}) are not on the pixel grid of {Path(source).name} "
            f"(columns x rows {grid[:2]}); predict on the image itself"
        )
    array = np.asarray(labels.array)
    if array.min() < 0 or array.max() > 65535:
        raise InputError("label values must lie between 0 and 65535 to be written as DICOM SEG")
    if not array.any():
        raise InputError("the label image is empty (all zeros); there is nothing to write as DICOM SEG")
    if not _text(dataset, "StudyInstanceUID"):
        raise DicomError(
            f"{Path(source).name} has no StudyInstanceUID, so a DICOM SEG cannot join its study; "
            "write the labels without a SEG (--no-seg) or restore the UID in the export"
        )
    descriptions = _segment_descriptions(labels, label_names, model_name, codes)
    frames = np.ascontiguousarray(array[:, :, 0].T[None]).astype(np.uint8 if array.max() < 256 else np.uint16)
    datasets = (  # without a position the image lies in no frame of reference: only the header fixes
        _writable_sources([dataset], float(labels.spacing[2]))
        if "ImagePositionPatient" in dataset
        else [_patched_copy(dataset, _header_fixes(dataset))]
    )
    seg = _segmentation(datasets, frames, descriptions, model_name, _text(dataset, "SeriesInstanceUID"))
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _segment_descriptions(
    labels: Volume,
    label_names: Mapping[int, str] | None,
    model_name: str | None,
    codes: Mapping[int, SegmentCoding] | None,
) -> list[hd.seg.SegmentDescription]:
    """One segment description per label value 1..max (absent values become empty segments, so
    every segment number equals its label value), named and coded as :func:`write_seg` says."""
    from medseg.version import __version__

    names = dict(label_names or labels.meta.label_names or {})
    top = int(np.asarray(labels.array).max())
    algorithm = algorithm_name(model_name)
    absent = sorted(set(range(1, top + 1)) - set(np.unique(labels.array).tolist()))
    if absent:
        log.info("label value(s) %s are absent; written as empty segments to keep numbering", absent)
    return [
        _segment_description(n, names.get(n, f"label {n}"), (codes or {}).get(n), algorithm, __version__)
        for n in range(1, top + 1)
    ]


def algorithm_name(model_name: str | None) -> str:
    """The SEG's algorithm name: ``"medseg MODEL"``, or ``"medseg"`` without a model name."""
    return f"medseg {model_name}" if model_name else "medseg"


def _segmentation(
    datasets: list[pydicom.Dataset],
    frames: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    model_name: str | None,
    series_uid: str,
) -> hd.seg.Segmentation:
    """The highdicom Segmentation of ``frames`` on the (writable) source ``datasets``; a header
    highdicom still cannot take is a :class:`DicomError` naming the series and highdicom's reason."""
    import highdicom as hd

    from medseg.version import __version__

    algorithm = algorithm_name(model_name)
    try:
        with _quiet_highdicom():
            return hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=frames,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=min(int(datasets[0].get("SeriesNumber", 0) or 0) + 1000, 2**31 - 1),
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="medseg",
                manufacturer_model_name=(model_name or "medseg")[:64],
                software_versions=__version__,
                device_serial_number="none",
                series_description=f"{algorithm} segmentation"[:64],
                specific_character_set=SEG_CHARACTER_SET,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom's checks of the source headers
        raise DicomError(
            f"series {series_uid}: a DICOM SEG cannot be built from its headers ({type(exc).__name__}: {exc}); "
            "write the labels without a SEG (--no-seg)"
        ) from None


#: Type-2 patient and study attributes highdicom reads from the first source image: they must be
#: present there, but may be empty (anonymised exports drop them), and a present value must be valid.
TYPE2_SOURCE_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)
#: The SEG's character set: UTF-8 holds every text the source headers decode to, whatever theirs was.
SEG_CHARACTER_SET = "ISO_IR 192"


def _writable_sources(datasets: Sequence[pydicom.Dataset], slice_spacing: float) -> list[pydicom.Dataset]:
    """The source headers, each replaced by a patched copy where highdicom could not take it.

    The first gets the type-2 attributes of :data:`TYPE2_SOURCE_ATTRIBUTES` that are absent or
    invalid as empty values; a single-frame image without a valid SliceThickness gets
    ``slice_spacing`` (mm) as its thickness (the SEG's pixel measures need one); for an enhanced multi-frame
    image that keeps pixel measures and orientation per frame, a shared functional group holding
    them. Headers without a FrameOfReferenceUID (anonymisers remove it) get the series' own one
    where some header has it, else one derived from the SeriesInstanceUID
    (:func:`derived_frame_of_reference`). Elements are shared, never modified: the caller's
    datasets (and the user's files) stay as they were. Raises :class:`DicomError` when the first
    header has no StudyInstanceUID (the SEG's study).
    """
    if not _text(datasets[0], "StudyInstanceUID"):
        raise DicomError(
            "the source series has no StudyInstanceUID, so a DICOM SEG cannot join its study; "
            "write the labels without a SEG (--no-seg) or restore the UID in the export"
        )
    frame_of_reference = _missing_frame_of_reference(datasets)
    out = []
    for index, ds in enumerate(datasets):
        fixes: dict[str, Any] = {}
        if index == 0:  # highdicom reads these from the first source only
            fixes = {**_header_fixes(ds), **_thickness_fix(ds, slice_spacing), **_shared_group_fixes(ds)}
        if frame_of_reference and not _text(ds, "FrameOfReferenceUID"):
            fixes["FrameOfReferenceUID"] = frame_of_reference
        out.append(_patched_copy(ds, fixes) if fixes else ds)
    return out


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """The value of ``keyword`` as stripped text ("" when absent or empty)."""
    return str(ds.get(keyword, "") or "").strip()


def derived_frame_of_reference(series_uid: str) -> str:
    """A FrameOfReferenceUID for a series whose headers lost theirs: derived from its
    SeriesInstanceUID, so every SEG written on that series shares one."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["medseg frame of reference", series_uid]))


def _missing_frame_of_reference(datasets: Sequence[pydicom.Dataset]) -> str | None:
    """The FrameOfReferenceUID to give headers that lack one (None when none lacks it)."""
    present = [_text(ds, "FrameOfReferenceUID") for ds in datasets]
    if all(present):
        return None
    found = next((uid for uid in present if uid), None)
    if found:
        return found
    series_uid = _text(datasets[0], "SeriesInstanceUID")
    log.info(
        "the source series has no FrameOfReferenceUID (removed by anonymisation?); the SEG uses one "
        "derived from its SeriesInstanceUID"
    )
    return derived_frame_of_reference(series_uid)


def _header_fixes(ds: pydicom.Dataset) -> dict[str, Any]:
    """``keyword -> None`` (write empty) for each attribute of :data:`TYPE2_SOURCE_ATTRIBUTES`
    that is absent from ``ds`` or holds an invalid value."""
    from pydicom.valuerep import DA, TM

    fixes: dict[str, Any] = {}
    for keyword in TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in ds:
            fixes[keyword] = None
            continue
        value = ds[keyword].value
        if value in (None, ""):
            continue
        try:
            if keyword == "PatientSex" and str(value) not in ("M", "F", "O"):
                raise ValueError(value)
            if keyword in ("PatientBirthDate", "StudyDate"):
                DA(value)
            elif keyword == "StudyTime":
                TM(value)
        except (ValueError, TypeError):
            fixes[keyword] = None
    if fixes:
        log.debug("the source header lacks valid %s; written empty in the SEG", ", ".join(sorted(fixes)))
    return fixes


def _thickness_fix(ds: pydicom.Dataset, slice_spacing: float) -> dict[str, Any]:
    """``{"SliceThickness": spacing}`` for a single-frame image without a positive SliceThickness
    (highdicom copies it into the SEG's pixel measures, where it is required)."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        return {}
    try:
        if float(ds.get("SliceThickness") or 0) > 0:
            return {}
    except (TypeError, ValueError):
        pass
    log.debug("the source has no valid SliceThickness; the SEG's pixel measures use the slice spacing")
    return {"SliceThickness": f"{slice_spacing:.6g}"}


#: functional groups highdicom reads from the shared group of an enhanced multi-frame source
_SHARED_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence")


def _shared_group_fixes(ds: pydicom.Dataset) -> dict[str, Any]:
    """A SharedFunctionalGroupsSequence for an enhanced image that keeps pixel measures or the
    orientation per frame (Philips, Siemens XA): the shared item plus the first frame's groups
    (the loader checked that all frames lie on one regular grid). Empty when nothing is missing."""
    import pydicom

    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return {}
    shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
    missing = [k for k in _SHARED_GROUPS if k not in shared and k in per_frame[0]]
    if not missing:
        return {}
    item = pydicom.Dataset()
    for element in shared:
        item.add(element)
    for keyword in missing:
        item[keyword] = per_frame[0][keyword]
    return {"SharedFunctionalGroupsSequence": pydicom.Sequence([item])}


def _patched_copy(ds: pydicom.Dataset, fixes: Mapping[str, Any]) -> pydicom.Dataset:
    """A new dataset holding the elements of ``ds`` (shared, not copied) with ``fixes`` set as new
    elements (None: an empty value)."""
    import pydicom
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import DataElement

    out = pydicom.Dataset()
    for element in ds:
        out.add(element)
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    for keyword, value in fixes.items():
        out[keyword] = DataElement(keyword, dictionary_VR(keyword), value)
    return out


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """Keep highdicom's per-module INFO logs and person-name style warnings out of user output."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            yield
    finally:
        logger.setLevel(level)


def _checked_labels(labels: Volume, source: DicomSeries) -> Volume:
    """The labels as 3D integers on the source grid with some foreground, else a clear error."""
    labels = labels.require_3d()
    if labels.kind != "label":
        labels = labels.as_label()
    if not labels.same_grid(source.volume):
        raise GeometryError(
            f"the labels (shape {labels.spatial_shape}) are not on the grid of series "
            f"{source.info.uid} (shape {source.volume.spatial_shape}); resample them onto the "
            "series first (nearest neighbour)"
        )
    if labels.array.min() < 0 or labels.array.max() > 65535:
        raise InputError("label values must lie between 0 and 65535 to be written as DICOM SEG")
    if not labels.array.any():
        raise InputError("the label volume is empty (all zeros); there is nothing to write as DICOM SEG")
    _check_source_slices(source)
    return labels


def _check_source_slices(source: DicomSeries) -> None:
    """Refuse a series whose voxels are not its source frames' pixels (resampled or reoriented)."""
    lps = LPS_TO_RAS @ source.volume.affine
    iop = _dataset_orientation(source.datasets[0])
    axes = lps[:3, :2] / np.linalg.norm(lps[:3, :2], axis=0)
    if source.resampled or not np.allclose(axes.T, iop.reshape(2, 3), atol=1e-3):
        raise GeometryError(
            f"series {source.info.uid} was resampled or reoriented when loaded, so its voxels are not "
            "its DICOM slices; load it without resampling to write a DICOM SEG"
        )


def _dataset_orientation(ds: pydicom.Dataset) -> np.ndarray:
    """ImageOrientationPatient of a classic instance or the shared one of an enhanced image."""
    if "ImageOrientationPatient" in ds:
        return np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    item = _functional_item(ds, (ds.get("PerFrameFunctionalGroupsSequence") or [None])[0], "PlaneOrientationSequence")
    return np.asarray(item.ImageOrientationPatient, dtype=np.float64)


def _source_slices(source: DicomSeries) -> list[tuple[int, int]]:
    """``(dataset index, 1-based frame number)`` of the source frame of every slice k."""
    if source.source_frames:
        return [tuple(frames[0]) for frames in source.source_frames]  # type: ignore[misc]
    if len(source.datasets) == source.volume.spatial_shape[2]:
        return [(k, 1) for k in range(len(source.datasets))]
    raise GeometryError(
        f"series {source.info.uid} does not say which DICOM frame each slice came from; "
        "load it with medseg.io.dicom.load_series to write a DICOM SEG"
    )


def _source_images_and_frames(labels: Volume, source: DicomSeries) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """The source datasets and label frames ``(frames, rows, columns)`` in matching order.

    Classic series: one dataset per slice, in k order. Enhanced multi-frame: the one
    multi-frame dataset and one label frame per source frame (frames of other volumes stay empty).
    """
    frames = np.transpose(labels.array, (2, 1, 0))  # (k, rows, columns)
    frames = frames.astype(np.uint8 if int(labels.array.max()) < 256 else np.uint16, copy=False)
    slices = _source_slices(source)
    used = sorted({index for index, _ in slices})
    multiframe = [int(source.datasets[i].get("NumberOfFrames", 1) or 1) > 1 for i in used]
    if not any(multiframe):
        return [source.datasets[index] for index, _ in slices], np.ascontiguousarray(frames)
    if len(used) > 1:
        raise DicomError(
            f"series {source.info.uid} is spread over {len(used)} multi-frame files; DICOM SEG "
            "can reference only one multi-frame image, so convert the series to single frames first"
        )
    dataset = source.datasets[used[0]]
    out = np.zeros((int(dataset.NumberOfFrames), *frames.shape[1:]), dtype=frames.dtype)
    for k, (_, number) in enumerate(slices):
        out[number - 1] = frames[k]
    return [dataset], out


def _segment_description(
    number: int, name: str, coding: SegmentCoding | None, algorithm: str, version: str
) -> hd.seg.SegmentDescription:
    """A SegmentDescription coded by ``coding`` (else chosen from the label name by :func:`segment_codes`),
    with the label's palette colour as its recommended display colour."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    coding = coding or segment_codes(name)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=coding.category.concept(),
        segmented_property_type=coding.type.concept(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm[:64], version=version, family=codes.cid7162.ArtificialIntelligence
        ),
        display_color=dicom_display_colour(label_colour(number)),
    )
    if coding.modifier is not None:  # highdicom has no argument for it; it sits inside the type item
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            coding.modifier.concept()
        ]
    return description


def segment_codes(name: str) -> SegmentCoding:
    """The default SNOMED CT coding of a segment from its label name (no codes given by the model).

    A name whose CamelCase keyword is an anatomic region of DICOM CID 4 (``"liver"`` -> ``Liver``,
    ``"adrenal gland"`` -> ``AdrenalGland``) gets category "Anatomical Structure" and that code;
    a tissue of CID 7166 gets category "Tissue" and that code; anything else "Tissue"/"Tissue".
    """
    from pydicom.sr.codedict import codes

    keyword = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)
    if keyword and keyword in codes.cid4.dir():
        return SegmentCoding(
            CodedTerm.of(codes.cid7150.AnatomicalStructure), CodedTerm.of(getattr(codes.cid4, keyword))
        )
    if keyword and keyword in codes.cid7166.dir():
        return SegmentCoding(CodedTerm.of(codes.cid7150.Tissue), CodedTerm.of(getattr(codes.cid7166, keyword)))
    return SegmentCoding(CodedTerm.of(codes.cid7150.Tissue), CodedTerm.of(codes.cid7150.Tissue))
