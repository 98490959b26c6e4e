"""Case names from untrusted DICOM tags stay inside OUTDIR; pseudonyms are stable and secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.batch.engine import case_dir
from medseg.cases import Namer, safe_join, sanitize
from medseg.errors import OutputError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../etc", "etc"),
        ("..", "unnamed"),
        ("/etc/passwd", "etc_passwd"),
        ("a/../../b", "a_.._.._b"),
        ("Müller^Jörg", "Muller_Jorg"),
        ("  .hidden ", "hidden"),
        ("CON", "_CON"),
        ("x" * 200, "x" * 80),
        ("T1 MPRAGE (sag)", "T1_MPRAGE_sag"),
        ("", "unnamed"),
    ],
)
def test_sanitize_gives_one_harmless_component(text: str, expected: str) -> None:
    assert sanitize(text) == expected


def test_safe_join_refuses_escaping_names(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "abc") == tmp_path / "abc"
    for bad in ("..", "../x", "a/b", "/etc", ""):
        with pytest.raises(OutputError):
            safe_join(tmp_path, bad)


def test_hostile_patient_id_stays_inside_outdir(tmp_path: Path) -> None:
    case_id = Namer().series_id("../../etc", "1.2.3", 5, "../../../root/.ssh")
    folder = case_dir(tmp_path, case_id)
    assert tmp_path.resolve() in folder.resolve().parents
    assert "/" not in case_id and not case_id.startswith(".")
    assert case_id.startswith("etc_") and case_id.endswith("_S5_root_.ssh")


def test_pseudonyms_are_stable_per_secret_and_hide_the_patient() -> None:
    a, b = Namer(b"k" * 32), Namer(b"j" * 32)
    name = a.series_id("PAT-0042", "1.2.840.1", 3, "T1 Smith")
    assert name == a.series_id("PAT-0042", "1.2.840.1", 3, "other description")
    assert name != b.series_id("PAT-0042", "1.2.840.1", 3, "T1 Smith")
    assert "0042" not in name and "Smith" not in name and "PAT" not in name
    assert a.series_id("PAT-0042", "1.2.840.2", 3, "") != name  # another study
    assert a.file_id("sub/x") != Namer().file_id("sub/x") and a.manifest_id("x").startswith("C")


def test_disambiguation_is_stable_and_key_dependent() -> None:
    namer = Namer()
    one, two = namer.disambiguate("case", "1.2.3.1"), namer.disambiguate("case", "1.2.3.2")
    assert one != two and one == namer.disambiguate("case", "1.2.3.1") and one.startswith("case-")
