"""From one input path to cases: what ``medseg predict -i`` and ``medseg batch INPUT`` run.

INPUT is one of

* a NIfTI/NRRD/MHA file: one case;
* a folder, searched recursively to any depth (hidden files and folders ignored; a folder that
  cannot be listed is reported): every volume file is a case (grouped into multi-channel cases by
  the nnU-Net suffixes ``case_0000``, ``case_0001``, ... when the model takes more than one
  channel), and every DICOM image series that the :class:`~medseg.cases.rules.SelectionRules` or
  ``--series`` select is a case. ``--series`` names DICOM series only: with it, volume files are
  skipped with that reason (and a warning);
* one DICOM file: the series holding it;
* a CSV manifest (:func:`~medseg.cases.manifest.read_manifest`).

Every series or file that is not run gets a one-line reason (:class:`~medseg.cases.case.Skipped`),
so ``--dry-run`` and error messages can say why. Case ids come from one
:class:`~medseg.cases.naming.Namer` (readable or pseudonymised), made unique with a stable suffix.
Patient names found in DICOM headers are kept out of case ids, error messages and the log records
made while discovering (:mod:`medseg.cases.privacy`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from medseg.cases.case import Discovery, InputCase, Skipped
from medseg.cases.manifest import read_manifest
from medseg.cases.naming import Namer
from medseg.cases.privacy import held_logs, patient_name_parts, redact
from medseg.cases.rules import SelectionRules, series_reasons
from medseg.errors import ConfigError, DicomError, InputError, MedsegError
from medseg.io.atomic import full_suffix
from medseg.io.files import VOLUME_SUFFIXES, has_volume_suffix, is_volume_file
from medseg.io.image2d import IMAGE2D_SUFFIXES
from medseg.io.walk import Walk, short_path, walk_files

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo
    from medseg.pacs import ArchiveSource

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: The rules for a series the user named by pointing at one of its files: run whatever it is called.
_NAMED = SelectionRules(exclude=(), min_slices=1)
_Item = TypeVar("_Item", InputCase, Skipped)


def discover_cases(
    input_path: str | Path | ArchiveSource,
    rules: SelectionRules | None = None,
    namer: Namer | None = None,
    *,
    series: str | None = None,
    channels: int = 1,
) -> Discovery:
    """The cases in ``input_path`` (a volume file, a folder, one DICOM file, a CSV manifest, or a DICOM
    archive given as an :class:`~medseg.pacs.ArchiveSource`, see :mod:`medseg.cases.archive`).

    ``rules`` select DICOM series (default :class:`SelectionRules`), ``series`` is the
    ``--series`` choice (see :func:`~medseg.cases.rules.series_reasons`), ``namer`` makes the
    case ids (default: readable), ``channels`` is the models' input channel count. Promises
    unique, sanitised case ids, stable between runs, without the patient names found in the
    DICOM headers (also kept out of error messages and of the log records made meanwhile). Raises
    InputError when the input does not exist, holds nothing usable at all, or names channel files
    inconsistently.
    """
    namer = namer or Namer()
    if not isinstance(input_path, (str, Path)):
        from medseg.cases.archive import discover_archive

        return discover_archive(input_path, rules or SelectionRules(), namer, series, channels)
    path = Path(input_path)
    if not path.exists():
        _refuse_archive_text(input_path)
        raise InputError(f"{path} does not exist; give a volume file, a folder (DICOM export) or a CSV manifest")
    names: list[str] = []  # every patient name part seen, filled while the series are found
    with held_logs(lambda: names):
        try:
            cases, skipped = _find(path, rules or SelectionRules(), namer, series, channels, names)
        except MedsegError as exc:
            exc.args = (redact(str(exc), names),)
            raise
    if not cases and not skipped:
        raise InputError(f"{path} holds no DICOM series and no NIfTI/NRRD/MHA files; check the path")
    return unique_ids(*_without_names(cases, skipped, namer, names), namer)


def _refuse_archive_text(text: str | Path) -> None:
    """An archive address given where a path is read: say which commands read archives."""
    from medseg.pacs.address import is_archive_address

    if is_archive_address(str(text)):
        raise InputError(
            f"{text} is an archive address; 'medseg batch' and 'medseg watch' read archives, "
            "this command reads files and folders"
        )


def _find(
    path: Path, rules: SelectionRules, namer: Namer, series: str | None, channels: int, names: list[str]
) -> tuple[list[InputCase], list[Skipped]]:
    """Cases and skipped items of an existing input, by its kind; adds the patient name parts seen to ``names``."""
    if path.is_file() and path.suffix.lower() == ".csv":
        if series is not None and str(series).strip():
            raise ConfigError(
                f"--series does not apply to the CSV manifest {path}; give each row's series in a "
                "'series' column instead"
            )
        return read_manifest(path, namer), []
    if path.is_file() and is_volume_file(path):
        return _select_files(_file_cases([path], path.parent, namer, channels), rules, series)
    if path.is_file():
        return _dicom_file_cases(path, namer, series, channels, names)
    return _scan_folder(path, rules, namer, series, channels, names)


# ----------------------------------------------------------------------------- folders
def _scan_folder(
    root: Path, rules: SelectionRules, namer: Namer, series: str | None, channels: int, names: list[str]
) -> tuple[list[InputCase], list[Skipped]]:
    walk = walk_files(root)
    files = sorted(p for p in walk.files if has_volume_suffix(p))
    cases, skipped = _select_files(_file_cases(files, root, namer, channels), rules, series)
    if files and rules.files and not cases:
        log.warning("--series %s: %d volume file(s) skipped: --series selects DICOM series only", series, len(files))
    if len(walk.files) > len(files):  # anything else may be DICOM (any name, any suffix)
        infos = _discover_dicom(root, have_files=bool(files), names=names)  # its walk warns of folders it cannot list
        more_cases, more_skipped = _series_cases(infos, root, namer, series_reasons(infos, rules, series), channels)
        cases, skipped = cases + more_cases, skipped + more_skipped
    else:
        _report_unlisted(root, walk, found_any=bool(files))
    return cases, skipped


def _select_files(
    file_cases: list[InputCase], rules: SelectionRules, series: str | None
) -> tuple[list[InputCase], list[Skipped]]:
    """The volume-file cases that run, and those skipped with the reason: every one when the rules
    say ``files = false``, or when ``--series`` names DICOM series (volume files are not series)."""
    if not rules.files:
        return [], [Skipped.of(c, "volume files are not selected (files = false)") for c in file_cases]
    if series is not None and str(series).strip():
        reason = f"--series {str(series).strip()} selects DICOM series and this is a volume file; run without --series to segment it"
        return [], [Skipped.of(c, reason) for c in file_cases]
    return file_cases, []


def _report_unlisted(root: Path, walk: Walk, found_any: bool) -> None:
    """Warn about folders that could not be listed; InputError when nothing else was found."""
    if not walk.unlisted:
        return
    folder, reason = walk.unlisted[0]
    more = f" (and {len(walk.unlisted) - 1} more)" if len(walk.unlisted) > 1 else ""
    if not found_any:
        raise InputError(
            f"{short_path(root)}: no NIfTI/NRRD/MHA or DICOM files found; folder {short_path(folder)} "
            f"cannot be listed ({reason}){more}; move the files to a shorter or readable path"
        )
    log.warning("skipping folder %s: cannot be listed (%s)%s", short_path(folder), reason, more)


def _discover_dicom(root: Path, have_files: bool, names: list[str]) -> list[SeriesInfo]:
    """The DICOM series under ``root``; adds their patients' name parts to ``names``."""
    from medseg.io.dicom import discover_series

    try:
        infos = list(discover_series(root))
        for info in infos:
            names.extend(patient_name_parts(info))
        return infos
    except InputError as exc:
        if have_files:  # the other files beside the volume files are not DICOM: say so
            log.info("other files under %s ignored: %s", root, exc)
            return []
        raise


# ----------------------------------------------------------------------------- volume files
def _file_cases(files: Sequence[Path], root: Path, namer: Namer, channels: int) -> list[InputCase]:
    """One case per file, or per group of channel files (``x_0000``, ``x_0001``, ...) when ``channels`` > 1
    (a 2D PNG/TIFF image not named like a channel file is one case: its colour channels are inside)."""
    stems = {f: _relative_stem(f, root) for f in files}
    if channels == 1:
        return [_file_case(stems[f], (f,), root, namer) for f in files]
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    colour: list[InputCase] = []
    for f in files:
        match = _CHANNEL.match(stems[f])
        if not match and full_suffix(f).lower() in IMAGE2D_SUFFIXES:
            colour.append(_file_case(stems[f], (f,), root, namer))
            continue
        if not match:
            raise InputError(
                f"{f.name}: the model takes {channels} channels; name channel files case_0000.nii.gz, "
                "case_0001.nii.gz, ... (one per channel), or list them in a CSV manifest"
            )
        groups[match["case"]][int(match["channel"])] = f
    return colour + [
        _file_case(stem, _channel_files(stem, by_channel, channels, root), root, namer)
        for stem, by_channel in sorted(groups.items())
    ]


def _channel_files(stem: str, by_channel: dict[int, Path], channels: int, root: Path) -> tuple[Path, ...]:
    if sorted(by_channel) != list(range(channels)):
        raise InputError(
            f"case {stem} in {root} has channel files {sorted(by_channel)}; the model needs channels 0..{channels - 1}"
        )
    return tuple(by_channel[c] for c in range(channels))


def _relative_stem(path: Path, root: Path) -> str:
    """``root/sub/x_0000.nii.gz`` -> ``sub/x_0000``."""
    relative = path.relative_to(root).as_posix()
    suffix = full_suffix(path)
    return relative[: -len(suffix)] if suffix and len(relative) > len(suffix) else relative


def _file_case(stem: str, images: tuple[Path, ...], root: Path, namer: Namer) -> InputCase:
    source = ";".join(p.relative_to(root).as_posix() for p in images)
    return InputCase(case_id=namer.file_id(stem), kind="file", source=source, images=images)


# ----------------------------------------------------------------------------- DICOM
def _dicom_file_cases(
    path: Path, namer: Namer, series: str | None, channels: int, names: list[str]
) -> tuple[list[InputCase], list[Skipped]]:
    """The series holding the DICOM file ``path`` (found among its folder's series)."""
    from medseg.io.dicom import discover_series

    try:
        discover_series(path)
    except DicomError:
        raise InputError(
            f"{path} is neither a folder, a volume file ({', '.join(VOLUME_SUFFIXES)}), a .csv manifest nor "
            "a DICOM file (no DICOM files found in it); pass a scan file, a folder of them or a DICOM export"
        ) from None
    resolved = path.resolve()
    holding = [i for i in _discover_dicom(path.parent, False, names) if resolved in {f.resolve() for f in i.files}]
    return _series_cases(holding, path.parent, namer, series_reasons(holding, _NAMED, series), channels)


def _series_cases(
    infos: Sequence[SeriesInfo], root: Path, namer: Namer, reasons: Sequence[str | None], channels: int
) -> tuple[list[InputCase], list[Skipped]]:
    """Each series as a case, or as skipped with its reason."""
    from medseg.io.dicom.image2d import image2d_file

    cases: list[InputCase] = []
    skipped: list[Skipped] = []
    for info, reason in zip(infos, reasons):
        case = series_case(info, root, namer)
        if reason is None and channels != 1 and image2d_file(info) is None:  # a 2D image holds its colours
            reason = (
                f"the model takes {channels} channels and a DICOM series is one; convert the series to "
                "case_0000.nii.gz, case_0001.nii.gz, ... with 'medseg convert' or list them in a manifest"
            )
        if reason is None:
            cases.append(case)
        else:
            skipped.append(Skipped.of(case, reason))
    hidden = sum(namer.hides_patient_id(info.patient_id or "", patient_name_parts(info)) for info in infos)
    if hidden:
        log.warning(
            "the PatientID of %d series holds (a part of) the patient's name; their case ids start with "
            "a hash (H...) instead of the PatientID",
            hidden,
        )
    return cases, skipped


def series_case(info: SeriesInfo, root: Path | None = None, namer: Namer | None = None) -> InputCase:
    """The case of one DICOM series; ``source`` is its folder relative to ``root`` (when inside it)."""
    folder = Path(os.path.commonpath([str(f.parent) for f in info.files])) if info.files else root or Path(".")
    source = str(folder)
    if root is not None:
        with contextlib.suppress(ValueError):  # a series outside root keeps its full path
            source = folder.relative_to(root).as_posix() or "."
    name_parts = patient_name_parts(info)
    case_id = (namer or Namer()).series_id(
        info.patient_id or "", info.study_uid or "", info.series_number, info.description or "", name_parts
    )
    return InputCase(
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
        redact=name_parts,
    )


# ----------------------------------------------------------------------------- unique ids
def _without_names(
    cases: list[InputCase], skipped: list[Skipped], namer: Namer, names: Sequence[str]
) -> tuple[list[InputCase], list[Skipped]]:
    """Volume files found beside DICOM series: the series' patient names redacted from their ids (and
    from what is stored about them), as files carry no name of their own."""
    terms = tuple(sorted(set(names), key=len, reverse=True))
    if not terms:
        return cases, skipped

    def fix(item: _Item) -> _Item:
        is_file = item.kind == "file" if isinstance(item, InputCase) else item.series_uid is None
        if not is_file:
            return item
        case_id = item.case_id if namer.pseudonymised else namer.file_id(item.case_id, terms)
        return replace(item, case_id=case_id, redact=tuple(sorted({*item.redact, *terms}, key=len, reverse=True)))

    return [fix(c) for c in cases], [fix(s) for s in skipped]


def unique_ids(cases: Sequence[InputCase], skipped: Sequence[Skipped], namer: Namer) -> Discovery:
    """Give colliding case ids a stable suffix from their key (series UID or path).

    Ids that differ only in letter case collide too (``X`` and ``x`` are one output name on a
    case-insensitive file system, as on macOS and Windows).
    """
    counts = Counter([c.case_id.casefold() for c in cases] + [s.case_id.casefold() for s in skipped])

    def fix(item: _Item) -> _Item:
        if counts[item.case_id.casefold()] > 1:
            return replace(item, case_id=namer.disambiguate(item.case_id, item.key))
        return item

    return Discovery(tuple(fix(c) for c in cases), tuple(fix(s) for s in skipped))
