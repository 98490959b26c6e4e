"""Explicit series selection: index, UID, glob or regex on the description; never a guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import DicomError
from medseg.io.dicom import SeriesInfo, discover_series, select_series

TCIA = "dicom_tcia_brain_tumor_progression/dicom/PGBM-003"


@pytest.fixture(scope="module")
def tcia(shared_data: Path) -> list[SeriesInfo]:
    """Four MR series of one study: T1post, T1pre_reg, FLAIR_reg, T2_reg."""
    return discover_series(shared_data / TCIA)


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("2", "T1pre_reg"),  # index from `medseg series`
        ("t1post", "T1post"),  # glob, whole description, case-insensitive
        ("T2*", "T2_reg"),  # glob
        ("flair", "FLAIR_reg"),  # regex search (no glob matched the whole description)
        (r"pre_?reg$", "T1pre_reg"),  # regex
    ],
)
def test_select_by_index_or_description(tcia: list[SeriesInfo], select: str, expected: str) -> None:
    assert select_series(tcia, select).description == expected


def test_select_by_uid(tcia: list[SeriesInfo]) -> None:
    assert select_series(tcia, tcia[2].uid) is tcia[2]


def test_no_choice_among_several_series_lists_them(tcia: list[SeriesInfo]) -> None:
    with pytest.raises(DicomError) as error:
        select_series(tcia, None)
    message = str(error.value)
    assert "\n" not in message and "found 4 image series" in message and "--series" in message
    assert all(f"#{info.index} '{info.description}' ({info.uid})" in message for info in tcia)


def test_ambiguous_pattern_names_the_matches(tcia: list[SeriesInfo]) -> None:
    with pytest.raises(DicomError, match=r"pattern 't1\*' matches 2 series.*T1post.*T1pre_reg"):
        select_series(tcia, "t1*")


@pytest.mark.parametrize(("select", "message"), [("99", "no series #99"), ("dwi", "no series matches 'dwi'")])
def test_selection_matching_nothing_is_refused(tcia: list[SeriesInfo], select: str, message: str) -> None:
    with pytest.raises(DicomError, match=message):
        select_series(tcia, select)


def test_one_image_series_needs_no_choice(shared_data: Path) -> None:
    infos = discover_series(shared_data / "dicom_seg_rtstruct_examples/rt-utils/mock_data")
    assert len(infos) == 3 and sum(info.is_image for info in infos) == 1  # CT + 2 RTSTRUCTs
    assert select_series(infos, None).modality == "CT"


def test_selecting_a_non_image_object_is_refused(shared_data: Path) -> None:
    infos = discover_series(shared_data / "dicom_seg_rtstruct_examples/rt-utils/mock_data")
    rtstruct = next(info for info in infos if not info.is_image)
    with pytest.raises(DicomError, match="RTSTRUCT object, not an image series"):
        select_series(infos, str(rtstruct.index))
