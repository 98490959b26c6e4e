"""What a batch runs: cases found in an export folder or listed in a CSV manifest, and why others are skipped.

* An export folder: every DICOM image series found recursively (:func:`medseg.io.dicom.discover_series`)
  that passes the :class:`SelectionRules`, plus every NIfTI/NRRD/MHA file.
* A CSV manifest with columns ``case,image`` (more ``image*`` columns = more input channels, an
  optional ``series`` column selects a series in a DICOM folder); paths relative to the CSV.

Every series that is not run gets a one-line reason, so ``--dry-run`` can say why.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from medseg.batch.naming import Namer
from medseg.batch.privacy import name_parts
from medseg.errors import ConfigError, InputError, did_you_mean
from medseg.io.atomic import full_suffix
from medseg.io.files import VOLUME_SUFFIXES

log = logging.getLogger(__name__)

CaseKind = Literal["dicom", "file", "manifest"]

#: Description patterns skipped unless a recipe says otherwise (planning images, not diagnostic).
DEFAULT_EXCLUDE = ("localizer", "localiser", "scout", "survey", "topogram", "aahead_scout")
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One unit of work: one series or one volume file (or one manifest row) -> one output folder.

    ``case_id`` is already sanitised (a safe folder name). ``source`` is for display and the
    ledger. ``images`` are the input files (volume files or DICOM folders) of file and manifest
    cases; ``series`` is the ``SeriesInfo`` of a DICOM case. ``problem`` is an error known before
    running (a missing file): such a case is recorded as failed without being run.
    ``redact`` holds the patient's name parts, removed from any error text; never stored or shown.
    """

    case_id: str
    kind: CaseKind
    source: str
    images: tuple[Path, ...] = ()
    series: Any = None
    series_select: str | None = None
    series_uid: str | None = None
    study_uid: str | None = None
    patient_id: str | None = field(default=None, repr=False)
    modality: str | None = None
    description: str | None = None
    n_slices: int | None = None
    problem: str | None = None
    redact: tuple[str, ...] = field(default=(), repr=False)

    @property
    def key(self) -> str:
        """A stable identity independent of naming (series UID or source path)."""
        return self.series_uid or self.source


@dataclass(frozen=True)
class Skipped:
    """A series found in the input but not selected, with the reason in one line."""

    case_id: str
    source: str
    reason: str
    series_uid: str | None = None
    modality: str | None = None
    description: str | None = None
    n_slices: int | None = None
    redact: tuple[str, ...] = field(default=(), repr=False)

    @property
    def key(self) -> str:
        """A stable identity independent of naming."""
        return self.series_uid or self.source


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`discover_cases`: cases to run and series skipped by the rules."""

    cases: tuple[Case, ...]
    skipped: tuple[Skipped, ...]


# ----------------------------------------------------------------------------- selection rules
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
            if value.lower() not in ("axial", "coronal", "sagittal") and not re.fullmatch(r"[LRAPSI]{3}", value.upper()):
                raise ConfigError(
                    f"select.orientation: unknown value {value!r}; use axial, coronal, sagittal or axis codes like LPS"
                )
        if self.min_slices < 1:
            raise ConfigError(f"select.min_slices must be at least 1, got {self.min_slices}")

    def reason_to_skip(self, info: Any) -> str | None:
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
        if info.n_slices < self.min_slices:
            return f"{info.n_slices} slice(s), fewer than min_slices={self.min_slices}"
        if self.orientation and not _orientation_matches(info.orientation, self.orientation):
            return f"orientation {info.orientation} ({slice_plane(info.orientation)}) not in {', '.join(self.orientation)}"
        return None


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
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; a batch recipe has one [select] table")
    table = data.get("select", {})
    names = [f.name for f in fields(SelectionRules)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{path}: unknown key select.{key}; {did_you_mean(key, names)}valid keys: {', '.join(names)}")
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


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


# ----------------------------------------------------------------------------- discovery
def discover_cases(input_path: Path, rules: SelectionRules, namer: Namer) -> Discovery:
    """Cases to run from an export folder, a single volume file, or a CSV manifest.

    Raises InputError when the input does not exist or holds nothing usable at all.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise InputError(f"{input_path} does not exist; give an export folder, a volume file or a CSV manifest")
    if input_path.is_file() and input_path.suffix.lower() == ".csv":
        cases, skipped = read_manifest(input_path, namer), []
    elif input_path.is_file():
        if full_suffix(input_path).lower() not in VOLUME_SUFFIXES:
            raise InputError(f"{input_path} is neither a folder, a volume file nor a .csv manifest")
        cases, skipped = [_file_case(input_path, input_path.name, namer)], []
    else:
        cases, skipped = _scan_folder(input_path, rules, namer)
    if not cases and not skipped:
        raise InputError(f"{input_path} holds no DICOM series and no NIfTI/NRRD/MHA files; check the path")
    return _unique(cases, skipped, namer)


def _scan_folder(root: Path, rules: SelectionRules, namer: Namer) -> tuple[list[Case], list[Skipped]]:
    all_files = list(_walk_files(root))
    files = sorted(p for p in all_files if full_suffix(p).lower() in VOLUME_SUFFIXES)
    others = len(all_files) > len(files)  # anything else may be DICOM (any name, any suffix)
    cases: list[Case] = []
    skipped: list[Skipped] = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        case = _file_case(path, relative, namer)
        if rules.files:
            cases.append(case)
        else:
            skipped.append(Skipped(case.case_id, relative, "volume files are not selected (files = false)"))
    for info in _discover_dicom(root, have_files=bool(files)) if others else ():
        case = _series_case(info, root, namer)
        reason = rules.reason_to_skip(info)
        if reason is None:
            cases.append(case)
        else:
            skipped.append(
                Skipped(case.case_id, case.source, reason, case.series_uid, case.modality, case.description,
                        case.n_slices, case.redact)
            )
    return cases, skipped


def _walk_files(root: Path) -> Iterable[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                yield Path(folder) / name


def _discover_dicom(root: Path, have_files: bool) -> list[Any]:
    from medseg.io.dicom import discover_series

    try:
        return list(discover_series(root))
    except InputError as exc:
        if have_files:  # a folder of volume files only
            log.debug("no DICOM series under %s (%s)", root, exc)
            return []
        raise


def _file_case(path: Path, relative: str, namer: Namer) -> Case:
    stem = relative[: -len(full_suffix(path))] if full_suffix(path) else relative
    return Case(case_id=namer.file_id(stem), kind="file", source=relative, images=(path,))


def _series_case(info: Any, root: Path, namer: Namer) -> Case:
    folder = Path(os.path.commonpath([str(f.parent) for f in info.files])) if info.files else root
    try:
        source = folder.relative_to(root).as_posix() or "."
    except ValueError:
        source = str(folder)
    case_id = namer.series_id(info.patient_id or "", info.study_uid or "", info.series_number, info.description or "")
    return Case(
        case_id=case_id,
        kind="dicom",
        source=source,
        series=info,
        series_uid=info.uid,
        study_uid=info.study_uid,
        patient_id=info.patient_id,
        modality=info.modality,
        description=info.description,
        n_slices=info.n_slices,
        redact=patient_name_parts(info),
    )


def patient_name_parts(info: Any) -> tuple[str, ...]:
    """The PatientName of a series and its parts of 3+ letters, for redaction (empty if none).

    Uses the header datasets discovery kept, else reads the first file's header.
    """
    name = ""
    try:
        frames = getattr(info, "frames", ()) or ()
        if frames:
            name = str(frames[0].header.dataset.get("PatientName", "") or "")
        elif info.files:
            import pydicom

            ds = pydicom.dcmread(info.files[0], stop_before_pixels=True, specific_tags=["PatientName"], force=True)
            name = str(ds.get("PatientName", "") or "")
    except Exception:  # unreadable headers are reported when the case runs
        return ()
    return name_parts(name)


def _unique(cases: list[Case], skipped: list[Skipped], namer: Namer) -> Discovery:
    """Give colliding case ids a stable suffix from their key (series UID or path)."""
    from collections import Counter
    from dataclasses import replace

    counts = Counter([c.case_id for c in cases] + [s.case_id for s in skipped])

    def fix(item: Any) -> Any:
        if counts[item.case_id] > 1:
            return replace(item, case_id=namer.disambiguate(item.case_id, item.key))
        return item

    return Discovery(tuple(fix(c) for c in cases), tuple(fix(s) for s in skipped))


# ----------------------------------------------------------------------------- manifest
def read_manifest(path: Path, namer: Namer) -> list[Case]:
    """Cases from a CSV with columns ``case,image`` (+ ``image*`` channels, optional ``series``).

    Raises InputError for a missing column, an empty ``case`` cell or a duplicate case name; a
    missing image file becomes a case with a ``problem`` (recorded as failed, the batch goes on).
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "case" not in header or "image" not in header:
            raise InputError(f"{path}: a manifest needs the columns 'case' and 'image', found {', '.join(header) or 'none'}")
        image_columns = ["image"] + [h for h in header if h.startswith("image") and h != "image"]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    cases: list[Case] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):
        name = row.get("case", "")
        if not name:
            raise InputError(f"{path} line {number}: empty 'case' cell; give every row a case name")
        if name in seen:
            raise InputError(f"{path} line {number}: case {name!r} appears twice; case names must be unique")
        seen.add(name)
        cells = [row.get(c, "") for c in image_columns]
        if not cells[0]:
            raise InputError(f"{path} line {number}: empty 'image' cell for case {name!r}")
        images = tuple((path.parent / cell) for cell in cells if cell)
        missing = [str(p) for p in images if not p.exists()]
        cases.append(
            Case(
                case_id=namer.manifest_id(name),
                kind="manifest",
                source=";".join(cell for cell in cells if cell),
                images=images,
                series_select=row.get("series") or None,
                problem=f"input not found: {', '.join(missing)}" if missing else None,
            )
        )
    if not cases:
        raise InputError(f"{path} lists no cases; add rows below the header")
    return cases
