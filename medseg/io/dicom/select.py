"""Choosing one series explicitly: by index, UID or description pattern. Never by guessing."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from medseg.errors import DicomError
from medseg.io.dicom.series import SeriesInfo

#: how the error messages tell the user to choose
CHOOSE_HINT = "choose one with --series (select=) giving its index, UID or a description pattern"


def select_series(infos: Sequence[SeriesInfo], select: str | int | None) -> SeriesInfo:
    """The one image series ``select`` names.

    ``select`` is an index from ``medseg series`` (``"3"``), a SeriesInstanceUID (a split part
    such as ``"1.2.3.1"`` or the original UID when it has one part), or a description pattern:
    a glob (``"t1*"``) matched against the whole description, else a regular expression searched
    in it, both case-insensitive. ``None`` works only when there is exactly one image series.
    Raises :class:`DicomError` (one line, listing the candidates) when nothing or several
    series match, or when the match is not an image.
    """
    images = [info for info in infos if info.is_image]
    if select is None or str(select).strip() == "":
        return _only_image(infos, images)
    text = str(select).strip()
    if text.isdigit():
        return _by_index(infos, int(text))
    by_uid = [info for info in infos if text in (info.uid, info.series_instance_uid)]
    if by_uid:
        return _one(by_uid, f"UID {text}")
    matches = _by_pattern(infos, text)
    image_matches = [info for info in matches if info.is_image]
    if image_matches:
        return _one(image_matches, f"pattern {text!r}")
    if matches:
        return _require_image(matches[0])
    raise DicomError(f"no series matches {text!r}; {CHOOSE_HINT}: {listing(images or infos)}")


def listing(infos: Sequence[SeriesInfo]) -> str:
    """``#1 'T1post' (1.2.3...), #2 ...``: candidates named on one line."""
    return ", ".join(info.label for info in infos)


def _only_image(infos: Sequence[SeriesInfo], images: Sequence[SeriesInfo]) -> SeriesInfo:
    if len(images) == 1:
        return images[0]
    if not images:
        kinds = sorted({info.modality or "unknown" for info in infos})
        raise DicomError(
            f"no image series found, only non-image objects ({', '.join(kinds)}); "
            "point medseg at the image series (e.g. the CT or MR the segmentation refers to)"
        )
    reasons = sorted({note.split("split for ", 1)[1] for info in images for note in info.notes if "split for " in note})
    why = f" (one series UID was split into parts: {'; '.join(reasons)})" if reasons else ""
    raise DicomError(f"found {len(images)} image series{why}; {CHOOSE_HINT}: {listing(images)}")


def _by_index(infos: Sequence[SeriesInfo], index: int) -> SeriesInfo:
    for info in infos:
        if info.index == index:
            return _require_image(info)
    raise DicomError(f"there is no series #{index} (valid: 1 to {len(infos)}); {CHOOSE_HINT}: {listing(infos)}")


def _by_pattern(infos: Sequence[SeriesInfo], pattern: str) -> list[SeriesInfo]:
    lowered = pattern.lower()
    globbed = [info for info in infos if fnmatch.fnmatchcase(info.description.lower(), lowered)]
    if globbed:
        return globbed
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error:
        return []
    return [info for info in infos if regex.search(info.description)]


def _one(matches: Sequence[SeriesInfo], what: str) -> SeriesInfo:
    if len(matches) > 1:
        raise DicomError(f"{what} matches {len(matches)} series; {CHOOSE_HINT}: {listing(matches)}")
    return _require_image(matches[0])


def _require_image(info: SeriesInfo) -> SeriesInfo:
    if not info.is_image:
        raise DicomError(
            f"series {info.label} is a {info.modality or 'non-image'} object, not an image series; "
            "select the image series it refers to"
        )
    return info
