"""What to predict: turn the ``-i INPUT`` argument into cases.

INPUT may be one NIfTI/NRRD/MHA file, a folder of them (multi-channel cases as nnU-Net names them:
``case_0000.nii.gz``, ``case_0001.nii.gz``), a DICOM series folder, or a whole scanner export
(one case per image series, or the series chosen with ``--series``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import full_suffix
from medseg.io.files import VOLUME_SUFFIXES, is_volume_file, read_volume_file
from medseg.volume import Volume

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CaseSource:
    """One case to predict: channel files (in channel order) or one DICOM series (``SeriesInfo``)."""

    case_id: str
    paths: tuple[Path, ...] = ()
    series: Any = None

    def describe(self) -> str:
        """Where the case comes from, for logs and the manifest."""
        if self.series is not None:
            files = self.series.files
            root = Path(files[0]).parent if files else "?"
            return f"DICOM series {self.series.uid} ({self.series.description or 'no description'}) in {root}"
        return ", ".join(str(p) for p in self.paths)


def slug(text: str, fallback: str = "case") -> str:
    """A safe file-name component made from ``text``."""
    name = _UNSAFE.sub("_", str(text)).strip("._-")[:80]
    return name or fallback


def file_case_id(path: Path) -> str:
    """``dir/hippocampus_003.nii.gz`` -> ``hippocampus_003``."""
    return slug(path.name[: -len(full_suffix(path))] or path.name)


def find_sources(input_path: str | Path, series: str | None = None, channels: int = 1) -> list[CaseSource]:
    """Expand INPUT into cases; raises InputError when nothing predictable is found.

    ``channels`` is the models' input channel count: with more than one, files are grouped into
    cases by the ``_0000``/``_0001`` suffix convention.
    """
    path = Path(input_path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    if path.is_file():
        if is_volume_file(path):
            return _file_cases([path], channels, path)
        cases = [c for c in _dicom_cases(path.parent, series, channels) if path.resolve() in _resolved(c.series.files)]
        if not cases:
            raise InputError(
                f"{path} is neither a volume file ({', '.join(VOLUME_SUFFIXES)}) nor part of a DICOM image series; "
                "pass a scan file, a folder of them or a DICOM folder"
            )
        return cases
    files = sorted(p for p in path.iterdir() if is_volume_file(p))
    if files:
        return _file_cases(files, channels, path)
    return _dicom_cases(path, series, channels)


def _file_cases(files: list[Path], channels: int, where: Path) -> list[CaseSource]:
    if channels == 1:
        return [CaseSource(file_case_id(f), (f,)) for f in files]
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for f in files:
        match = _CHANNEL.match(file_case_id(f))
        if not match:
            raise InputError(
                f"{f.name}: the model takes {channels} channels; name channel files case_0000.nii.gz, "
                "case_0001.nii.gz, ... (one per channel)"
            )
        groups[match["case"]][int(match["channel"])] = f
    cases = []
    for case, by_channel in sorted(groups.items()):
        if sorted(by_channel) != list(range(channels)):
            raise InputError(
                f"case {case} in {where} has channel files {sorted(by_channel)}; the model needs "
                f"channels 0..{channels - 1}"
            )
        cases.append(CaseSource(case, tuple(by_channel[c] for c in range(channels))))
    return cases


def _dicom_cases(folder: Path, series: str | None, channels: int) -> list[CaseSource]:
    from medseg.io.dicom import discover_series, select_series

    if channels != 1:
        raise InputError(
            f"the model takes {channels} channels; DICOM input gives one series per case, so convert the "
            "series to case_0000.nii.gz, case_0001.nii.gz, ... with 'medseg convert' first"
        )
    infos = discover_series(folder)
    images = [info for info in infos if info.is_image]
    if not images:
        raise InputError(
            f"{folder} holds no volume files ({', '.join(VOLUME_SUFFIXES)}) and no DICOM image series; "
            "point -i at a scan file or a DICOM export"
        )
    chosen = [select_series(infos, series)] if series else images
    return _unique_ids([(dicom_case_id(info), info) for info in chosen])


def _resolved(files: Any) -> set[Path]:
    return {Path(f).resolve() for f in files}


def dicom_case_id(info: Any) -> str:
    """A readable case id for a DICOM series: patient, series number and description."""
    parts = [info.patient_id or "patient", f"s{info.series_number}" if info.series_number is not None else "",
             info.description or ""]
    return slug("_".join(p for p in parts if p))


def _unique_ids(pairs: list[tuple[str, Any]]) -> list[CaseSource]:
    seen: dict[str, int] = defaultdict(int)
    for name, _ in pairs:
        seen[name] += 1
    cases = []
    for name, info in pairs:
        case_id = name if seen[name] == 1 else f"{name}_{info.index:03d}"
        cases.append(CaseSource(case_id, series=info))
    return cases


def read_source(source: CaseSource, resample: bool = False) -> tuple[list[Volume], Any]:
    """The channel volumes of a case and, for DICOM input, the loaded ``DicomSeries`` (else None).

    A DICOM series with gantry tilt or uneven slices is refused (GeometryError) unless
    ``resample`` is set, which resamples it onto a regular grid.
    """
    if source.series is not None:
        from medseg.io.dicom import load_series

        dicom = load_series(source.series, resample=resample)
        return [dicom.volume.require_3d()], dicom
    return [read_volume_file(p).require_3d() for p in source.paths], None
