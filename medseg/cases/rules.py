"""Which series of an input are run: the ``[select]`` rules of a recipe and the ``--series`` choice.

Both ``medseg predict`` and ``medseg batch`` select series here. Without ``--series`` every image
series that passes the :class:`SelectionRules` runs (defaults: not localizers/scouts, at least 3
slices). ``--series SEL`` names the series to run instead (:func:`series_reasons`): an index or UID
from ``medseg series`` names one series; a description pattern names one series per study. A
named series runs whatever the rules say (the user chose it); every other series is skipped with
the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError, DicomError, did_you_mean

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo

#: Description patterns skipped unless a recipe says otherwise (planning images, not diagnostic).
DEFAULT_EXCLUDE = ("localizer", "localiser", "scout", "survey", "topogram", "aahead_scout")
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}


@dataclass(frozen=True)
class SelectionRules:
    """Which DICOM series of an export are run (a ``[select]`` table in a TOML recipe).

    ``modality``: DICOM Modality values (any when empty). ``include``: description regexes, one
    must match (case-insensitive search; all when empty). ``exclude``: description regexes, none may
    match. ``min_slices``: fewer slices are skipped. ``orientation``: slice planes
    (``axial``/``coronal``/``sagittal``) or axis codes such as ``LPS`` (any when empty).
    ``files``: also run NIfTI/NRRD/MHA files found in the export.
    """

    modality: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    min_slices: int = 3
    orientation: tuple[str, ...] = ()
    files: bool = True

    def __post_init__(self) -> None:
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"select: invalid description regex {pattern!r} ({exc}); fix the pattern") from None
        for value in self.orientation:
            if value.lower() not in ("axial", "coronal", "sagittal") and not re.fullmatch(
                r"[LRAPSI]{3}", value.upper()
            ):
                raise ConfigError(
                    f"select.orientation: unknown value {value!r}; use axial, coronal, sagittal or axis codes like LPS"
                )
        if self.min_slices < 1:
            raise ConfigError(f"select.min_slices must be at least 1, got {self.min_slices}")

    def reason_to_skip(self, info: SeriesInfo) -> str | None:
        """Why the series ``info`` (a ``SeriesInfo``) is not run, or None when it is selected."""
        description = info.description or ""
        if not info.is_image:
            return f"not an image series (modality {info.modality or '?'})"
        if self.modality and (info.modality or "").upper() not in {m.upper() for m in self.modality}:
            return f"modality {info.modality or '?'} not in {', '.join(self.modality)}"
        if self.include and not any(re.search(p, description, re.I) for p in self.include):
            return f"description {description!r} matches no include pattern"
        for pattern in self.exclude:
            if re.search(pattern, description, re.I):
                return f"description {description!r} matches exclude pattern {pattern!r}"
        if info.n_slices < self.min_slices and not _image2d(info):  # localizers, not radiographs or slides
            return f"{info.n_slices} slice(s), fewer than min_slices={self.min_slices}"
        if self.orientation and not _orientation_matches(info.orientation, self.orientation):
            return (
                f"orientation {info.orientation} ({slice_plane(info.orientation)}) not in {', '.join(self.orientation)}"
            )
        return None


def _image2d(info: SeriesInfo) -> bool:
    """True when the series is one 2D DICOM image (a radiograph, slide, photograph), read as a 2D image."""
    from medseg.io.dicom.image2d import image2d_file

    return image2d_file(info) is not None


def slice_plane(orientation: str) -> str:
    """The plane of the slices for axis codes like ``LPS``: the third (slice normal) axis decides."""
    code = (orientation or "")[-1:].upper()
    return PLANES.get(code, "unknown")


def _orientation_matches(orientation: str, wanted: Sequence[str]) -> bool:
    plane = slice_plane(orientation)
    return any(w.lower() == plane or w.upper() == (orientation or "").upper() for w in wanted)


def load_rules(path: Path | None) -> SelectionRules:
    """Read the ``[select]`` table of a TOML recipe; defaults when ``path`` is None.

    Unknown keys fail with a ConfigError naming the closest valid key.
    """
    if path is None:
        return SelectionRules()
    data = _read_toml(path)
    unknown = set(data) - {"select"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; a batch recipe has one [select] table"
        )
    table = data.get("select", {})
    names = [f.name for f in fields(SelectionRules)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(
                f"{path}: unknown key select.{key}; {did_you_mean(key, names)}valid keys: {', '.join(names)}"
            )
        values[key] = _coerce(path, key, value)
    return SelectionRules(**values)


def _coerce(path: Path, key: str, value: Any) -> Any:
    if key in ("modality", "include", "exclude", "orientation"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{path}: select.{key} must be a string or a list of strings")
        return tuple(items)
    if key == "min_slices":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: select.min_slices must be an integer, got {value!r}")
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: select.{key} must be true or false, got {value!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def series_reasons(infos: Sequence[SeriesInfo], rules: SelectionRules, select: str | None = None) -> list[str | None]:
    """Per series of ``infos`` (same order): None when it runs, else why not (one line).

    Without ``select`` the ``rules`` decide. With ``select`` (``--series``) the named series run
    and the others are skipped; raises DicomError (one line, listing the candidates) when it names
    no image series at all.
    """
    if select is None or not str(select).strip() or not infos:  # no series: nothing for --series to name
        return [rules.reason_to_skip(info) for info in infos]
    text = str(select).strip()
    chosen, errors = _chosen(infos, text)
    reasons: list[str | None] = []
    for info in infos:
        if info.index in chosen:
            reasons.append(None)
        elif not info.is_image:
            reasons.append(rules.reason_to_skip(info))
        else:
            error = errors.get(info.study_uid)
            reasons.append(f"--series {text}: {error}" if error else f"not chosen by --series {text}")
    return reasons


def _chosen(infos: Sequence[SeriesInfo], text: str) -> tuple[set[int], dict[str, DicomError]]:
    """Indexes of the series ``text`` names, and the error of each study where a pattern named none
    (raised when no study has one)."""
    from medseg.io.dicom import select_series

    if text.isdigit() or any(text in (info.uid, info.series_instance_uid) for info in infos):
        return {select_series(infos, text).index}, {}
    chosen: set[int] = set()
    errors: dict[str, DicomError] = {}
    for study in _by_study(infos):
        try:
            chosen.add(select_series(study, text).index)
        except DicomError as exc:
            errors[study[0].study_uid] = exc
    if not chosen:
        raise next(iter(errors.values()))
    return chosen, errors


def _by_study(infos: Sequence[SeriesInfo]) -> list[list[SeriesInfo]]:
    studies: dict[str, list[SeriesInfo]] = {}
    for info in infos:
        studies.setdefault(info.study_uid, []).append(info)
    return list(studies.values())
