"""The records the DICOM layer passes around: files, frames, series and loaded series.

A *frame* is one 2D image: a whole classic single-frame file, or one frame of an enhanced
multi-frame file. Discovery turns every DICOM file into frames and groups the frames into
series (:class:`SeriesInfo`); loading turns the frames of one series into a
:class:`DicomSeries` whose ``volume`` is a :class:`medseg.volume.Volume` in RAS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import DicomError
from medseg.io.walk import short_path
from medseg.volume import Volume

if TYPE_CHECKING:
    from pydicom import Dataset

    from medseg.io.dicom.values import PixelFormat


@dataclass(frozen=True, eq=False)
class FileHeader:
    """One DICOM file read without its pixel data.

    ``pixel_offset`` is the byte offset of the Pixel Data element (7FE0,0010) when the file is
    stored uncompressed in a little-endian transfer syntax, so loading can read the pixel bytes
    directly instead of parsing the header a second time; ``None`` otherwise.
    """

    path: Path
    dataset: Dataset
    pixel_offset: int | None = None
    pixels: PixelFormat | None = None


@dataclass(frozen=True)
class FileProblem:
    """A file that looks like (or is named like) DICOM but cannot be used, and what happened.

    ``reason`` is a short phrase: ``truncated at 5000 of 9464 bytes``, ``permission denied``,
    ``not DICOM``, ``has no pixel data (a MR Image Storage object)``, ``NumberOfFrames '1A' is
    not a number``... ``series_uid`` is the SeriesInstanceUID from the file's header when that
    much could be read (else None: the file may belong to any series in its folder); ``header``
    the part of the header that could be read.
    """

    path: Path
    reason: str
    series_uid: str | None = None
    header: FileHeader | None = None

    def describe(self) -> str:
        """``FILE (reason)``, cleaned for a terminal; a very long path keeps its last characters."""
        return f"{short_path(self.path)} ({self.reason})"


class UnusableFile(DicomError):
    """Raised for one file that cannot be used; ``problem`` says which file and why."""

    def __init__(self, problem: FileProblem) -> None:
        super().__init__(f"{short_path(problem.path)}: {problem.reason}")
        self.problem = problem


@dataclass(frozen=True, eq=False)
class Frame:
    """Geometry and value scaling of one 2D frame, read from its headers.

    ``position`` is ImagePositionPatient (LPS, mm), ``orientation`` ImageOrientationPatient
    (row direction then column direction), ``pixel_spacing`` PixelSpacing (row spacing, column
    spacing) in mm; each is ``None`` when the header lacks it. ``index`` is the 0-based frame
    number inside the file. ``order`` sorts frames that share a position (time points, echoes,
    stacks of a multi-frame series) into the 4th dimension; it is never used to order slices.
    ``rescale`` is (RescaleSlope, RescaleIntercept); ``real_world`` the (slope, intercept) that
    gives real-world values from stored ones (Philips private scale slope, else the
    RealWorldValueMappingSequence), ``None`` when the header gives none.
    """

    header: FileHeader
    index: int
    rows: int
    cols: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rescale: tuple[float, float]
    stack: str
    order: tuple
    frame_type: str = ""
    real_world: tuple[float, float] | None = None

    @property
    def multiframe(self) -> bool:
        """True when the frame comes from a file holding several frames."""
        pixels = self.header.pixels
        return pixels is not None and pixels.frames > 1


@dataclass(frozen=True)
class SeriesInfo:
    """One series found by :func:`medseg.io.dicom.discover_series` (headers only).

    ``index`` is 1-based in a stable order (study UID, series number, series UID). ``uid`` is
    the SeriesInstanceUID, suffixed ``.1``, ``.2``... when one UID was split because it mixed
    orientations, matrix sizes or stacks at different positions (``notes`` says why).
    ``spacing`` is (column, row, slice) spacing in mm, i.e. along the volume's i, j, k axes;
    ``orientation`` the axis codes the loaded volume will have (e.g. "LPS"). ``n_frames`` is the
    length of the 4th dimension (time points/echoes of a multi-frame series), 1 for a 3D volume.
    ``frames`` keeps the parsed headers so loading does not read them again. ``unreadable``
    lists files discovery could not use that belong (by SeriesInstanceUID; these are in
    ``files`` too) or may belong (an unreadable file in the same folder) to this series; loading
    refuses the series while it has any, unless told to load the readable files
    (``allow_missing_slices``).
    """

    index: int
    uid: str
    study_uid: str
    patient_id: str
    modality: str
    description: str
    series_number: int | None
    sop_class_uid: str
    n_slices: int
    matrix: tuple[int, int]
    spacing: tuple[float, float, float]
    orientation: str
    files: tuple[Path, ...]
    is_image: bool
    multiframe: bool
    n_frames: int = 1
    notes: tuple[str, ...] = ()
    series_instance_uid: str = ""
    frames: tuple[Frame, ...] = field(default=(), repr=False, compare=False)
    unreadable: tuple[FileProblem, ...] = ()

    @property
    def readable_files(self) -> tuple[Path, ...]:
        """``files`` without the ones listed in ``unreadable``."""
        unreadable = {problem.path for problem in self.unreadable}
        return tuple(path for path in self.files if path not in unreadable)

    @property
    def label(self) -> str:
        """``#index 'description' (UID)``: how messages name this series."""
        described = f" '{self.description}'" if self.description else ""
        return f"#{self.index}{described} ({self.uid})"


@dataclass(frozen=True)
class DicomSeries:
    """One loaded series: the volume and the DICOM instances it was built from.

    ``datasets`` are header-only pydicom datasets: for a classic series one per slice in the
    volume's ``k`` order; for an enhanced multi-frame series the multi-frame file(s) (one per
    file, usually one). ``frame_positions`` is the K x 3 LPS ImagePositionPatient of slice k.
    ``source_frames[k][t]`` is ``(dataset index, 1-based frame number)`` of the source frame at
    slice k, volume t. When ``resampled`` is True the volume lies on a new regular grid (see
    :mod:`medseg.io.dicom.resample`): ``frame_positions`` are the new slice positions and
    ``source_frames`` is empty, because no single source frame matches a resampled slice.
    """

    info: SeriesInfo
    volume: Volume
    datasets: tuple[Dataset, ...]
    frame_positions: np.ndarray
    source_frames: tuple[tuple[tuple[int, int], ...], ...] = ()
    resampled: bool = False
