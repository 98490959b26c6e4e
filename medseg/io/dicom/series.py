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

from medseg.volume import Volume

if TYPE_CHECKING:
    from pydicom import Dataset


@dataclass(frozen=True, eq=False)
class FileHeader:
    """One DICOM file read without its pixel data.

    ``pixel_offset`` is the byte offset of the Pixel Data element (7FE0,0010) when the file is
    stored uncompressed in a little-endian transfer syntax, so loading can read the pixel bytes
    directly instead of parsing the header a second time; ``None`` otherwise.
    """

    path: Path
    dataset: "Dataset"
    pixel_offset: int | None = None


@dataclass(frozen=True, eq=False)
class Frame:
    """Geometry and value scaling of one 2D frame, read from its headers.

    ``position`` is ImagePositionPatient (LPS, mm), ``orientation`` ImageOrientationPatient
    (row direction then column direction), ``pixel_spacing`` PixelSpacing (row spacing, column
    spacing) in mm; each is ``None`` when the header lacks it. ``index`` is the 0-based frame
    number inside the file. ``order`` sorts frames that share a position (time points, echoes,
    stacks of a multi-frame series) into the 4th dimension; it is never used to order slices.
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

    @property
    def multiframe(self) -> bool:
        """True when the frame comes from a file holding several frames."""
        return int(self.header.dataset.get("NumberOfFrames", 1) or 1) > 1


@dataclass(frozen=True)
class SeriesInfo:
    """One series found by :func:`medseg.io.dicom.discover_series` (headers only).

    ``index`` is 1-based in a stable order (study UID, series number, series UID). ``uid`` is
    the SeriesInstanceUID, suffixed ``.1``, ``.2``... when one UID was split because it mixed
    orientations, matrix sizes or stacks at different positions (``notes`` says why).
    ``spacing`` is (column, row, slice) spacing in mm, i.e. along the volume's i, j, k axes;
    ``orientation`` the axis codes the loaded volume will have (e.g. "LPS"). ``n_frames`` is the
    length of the 4th dimension (time points/echoes of a multi-frame series), 1 for a 3D volume.
    ``frames`` keeps the parsed headers so loading does not read them again.
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
    datasets: tuple["Dataset", ...]
    frame_positions: np.ndarray
    source_frames: tuple[tuple[tuple[int, int], ...], ...] = ()
    resampled: bool = False
