"""Selection rules, recipes, manifests and discovery of batch cases."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from test_batch_fakes import write_cases

from medseg.cases import Namer, SelectionRules, discover_cases, load_rules, read_manifest, slice_plane
from medseg.errors import ConfigError, InputError


def series(**kw) -> SimpleNamespace:
    base = dict(is_image=True, modality="MR", description="T1 MPRAGE", n_slices=40, orientation="LPS")
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize(
    "info, reason",
    [
        (series(), None),
        (series(is_image=False, modality="SR"), "not an image series"),
        (series(modality="CT"), "modality CT not in mr"),
        (series(description="FLAIR"), "matches no include pattern"),
        (series(description="t1 localizer"), "matches exclude pattern"),
        (series(n_slices=3), "fewer than min_slices=10"),
        (series(orientation="LSP"), "orientation LSP (coronal) not in axial"),
    ],
)
def test_rules_select_or_say_why(info: SimpleNamespace, reason: str | None) -> None:
    rules = SelectionRules(modality=("mr",), include=("t1",), min_slices=10, orientation=("axial",))
    got = rules.reason_to_skip(info)
    assert got is None if reason is None else reason in got


def test_default_rules_skip_localizers_but_keep_other_series() -> None:
    rules = SelectionRules()
    assert "exclude" in rules.reason_to_skip(series(description="AAHead_Scout_32ch"))
    assert rules.reason_to_skip(series(description="anything", modality="CT")) is None


def test_slice_plane_from_axis_codes() -> None:
    assert [slice_plane(c) for c in ("LPS", "RAI", "LSA", "PSR", "")] == [
        "axial",
        "axial",
        "coronal",
        "sagittal",
        "unknown",
    ]


def test_recipe_loads_and_rejects_typos(tmp_path: Path) -> None:
    good = tmp_path / "select.toml"
    good.write_text('[select]\nmodality = "CT"\ninclude = ["abdomen"]\nmin_slices = 20\norientation = ["LPS"]\n')
    rules = load_rules(good)
    assert rules.modality == ("CT",) and rules.include == ("abdomen",) and rules.min_slices == 20
    assert rules.reason_to_skip(series(modality="CT", description="ABDOMEN 5mm")) is None
    typo = tmp_path / "typo.toml"
    typo.write_text("[select]\nmin_slice = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'min_slices'"):
        load_rules(typo)
    bad = tmp_path / "bad.toml"
    bad.write_text('[select]\ninclude = ["("]\n')
    with pytest.raises(ConfigError, match="invalid description regex"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="unknown value 'oblique'"):
        SelectionRules(orientation=("oblique",))


def test_manifest_cases_channels_and_missing_files(tmp_path: Path) -> None:
    paths = write_cases(tmp_path / "img", 2)
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "case,image,image_t2,age\nA/1,img/case_000.nii.gz,img/case_001.nii.gz,50\nB,img/missing.nii.gz,,60\n"
    )
    cases = read_manifest(manifest, Namer())
    assert [c.case_id for c in cases] == ["A_1", "B"]
    assert cases[0].images == (paths[0], paths[1]) and cases[0].problem is None
    assert "missing.nii.gz" in cases[1].problem


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,file\nx,y\n", "needs the columns 'case' and 'image'"),
        ("case,image\nx,a.nii\nx,b.nii\n", "appears twice"),
        ("case,image\n,a.nii\n", "empty 'case' cell"),
        ("case,image\n", "lists no cases"),
    ],
)
def test_bad_manifests_are_user_errors(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(manifest, Namer())


def test_folder_of_volume_files_and_collisions(tmp_path: Path) -> None:
    write_cases(tmp_path / "a", 2)
    (tmp_path / "a_case_000.nrrd").write_bytes(b"")  # same id as a/case_000 once flattened
    (tmp_path / ".hidden.nii.gz").write_bytes(b"")
    found = discover_cases(tmp_path, SelectionRules(), Namer())
    ids = sorted(c.case_id for c in found.cases)
    assert len(ids) == 3 and len(set(ids)) == 3 and "a_case_001" in ids
    assert sum(i.startswith("a_case_000-") for i in ids) == 2
    assert discover_cases(tmp_path, SelectionRules(), Namer()).cases == found.cases  # stable
    skipped = discover_cases(tmp_path, SelectionRules(files=False), Namer())
    assert not skipped.cases and all("files = false" in s.reason for s in skipped.skipped)


def test_missing_or_empty_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "nope", SelectionRules(), Namer())
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="neither a folder, a volume file"):
        discover_cases(tmp_path / "notes.txt", SelectionRules(), Namer())


def study_series(index: int, study: str, description: str, n_slices: int = 30):
    """A real SeriesInfo (headers only) for selection tests."""
    from medseg.io.dicom import SeriesInfo

    return SeriesInfo(
        index=index,
        uid=f"1.2.{index}",
        study_uid=study,
        patient_id="P",
        modality="MR",
        description=description,
        series_number=index,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        n_slices=n_slices,
        matrix=(8, 8),
        spacing=(1.0, 1.0, 1.0),
        orientation="LPS",
        files=(),
        is_image=True,
        multiframe=False,
        series_instance_uid=f"1.2.{index}",
    )


def test_series_choice_names_one_series_per_study_and_overrides_the_rules() -> None:
    from medseg.cases import series_reasons
    from medseg.errors import DicomError

    infos = [
        study_series(1, "A", "T1 mprage"),
        study_series(2, "A", "FLAIR"),
        study_series(3, "B", "t1 localizer", 2),
        study_series(4, "B", "FLAIR"),
        study_series(5, "C", "T1 pre"),
        study_series(6, "C", "T1 post"),
    ]
    rules = SelectionRules()
    assert series_reasons(infos, rules)[:4] == [None, None, rules.reason_to_skip(infos[2]), None]
    reasons = series_reasons(infos, rules, "t1*")
    assert reasons[0] is None and reasons[2] is None  # named, so the localizer/slice rules do not apply
    assert reasons[1] == reasons[3] == "not chosen by --series t1*"
    assert all("matches 2 series" in r for r in reasons[4:])  # ambiguous in study C: neither runs
    assert [r is None for r in series_reasons(infos, rules, "4")] == [False, False, False, True, False, False]
    assert series_reasons(infos, rules, "1.2.6")[5] is None
    with pytest.raises(DicomError, match="no series matches 'dwi'"):
        series_reasons(infos, rules, "dwi")
