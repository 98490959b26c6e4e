"""Archive addresses, settings (credentials never shown), filters and back-off: no archive needed."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from medseg.errors import ArchiveError, ConfigError
from medseg.pacs import Backoff, RemoteSeries, SeriesFilter, load_settings, parse_address, parse_date_range
from medseg.pacs.retry import Unreachable, call_with_backoff
from medseg.pacs.settle import SettleTracker


@pytest.mark.parametrize(
    ("text", "kind", "url", "port"),
    [
        ("http://127.0.0.1:8042/dicom-web/", "dicomweb", "http://127.0.0.1:8042/dicom-web", 8042),
        ("HTTPS://PACS.example.org/wado", "dicomweb", "https://pacs.example.org/wado", 443),
        ("dimse://ORTHANC@pacs:4242", "dimse", "dimse://ORTHANC@pacs:4242", 4242),
    ],
)
def test_addresses_are_parsed_into_one_canonical_form(text, kind, url, port):
    address = parse_address(text)
    assert (address.kind, address.url, address.port) == (kind, url, port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://user:secret@pacs/dicom-web", "do not put credentials in the archive URL"),
        ("dimse://pacs:4242", "dimse://AET@HOST:PORT"),
        ("dimse://ORTHANC@pacs:99999", "out of range"),
        ("dimse://WAY_TOO_LONG_AE_TITLE_X@pacs:104", "not a valid AE title"),
        ("http://pacs/dicom-web?PatientID=1", "without ?query"),
        ("/data/export", "not an archive address"),
    ],
)
def test_bad_addresses_fail_with_one_line(text, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")) as info:
        parse_address(text)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_credentials_come_from_the_environment_and_are_never_shown():
    settings = load_settings(
        "https://pacs/dicom-web", env={"MEDSEG_PACS_USERNAME": "medseg", "MEDSEG_PACS_PASSWORD": "s3cret!"}
    )
    assert settings.credentials.kind == "basic" and settings.credentials.password == "s3cret!"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.credentials)
    assert settings.verify is True  # TLS verification is on unless the config says otherwise
    token = load_settings("https://pacs/dicom-web", env={"MEDSEG_PACS_TOKEN": "tok-123"})
    assert token.credentials.kind == "bearer" and "tok-123" not in repr(token)


def test_config_file_matches_by_url_prefix_and_reads_secrets_from_named_variables(tmp_path, caplog):
    config = tmp_path / "pacs.toml"
    config.write_text(
        '[[archive]]\nurl = "https://other/"\nusername = "x"\n\n'
        '[[archive]]\nurl = "https://pacs/dicom-web"\nusername = "medseg"\npassword_env = "PACS_PW"\n'
        'timeout = 5\nmax_wait = 12\ncalling_aet = "SEGNODE"\n'
    )
    settings = load_settings("https://pacs/dicom-web", config, env={"PACS_PW": "pw-from-env"})
    assert (settings.credentials.username, settings.credentials.password) == ("medseg", "pw-from-env")
    assert (settings.timeout, settings.backoff.max_wait, settings.calling_aet) == (5.0, 12.0, "SEGNODE")
    assert load_settings("https://pacs/dicom-web", config, env={"PACS_PW": "x"}, max_wait=3).backoff.max_wait == 3
    with pytest.raises(ConfigError, match="PACS_PW, which is not set"):
        load_settings("https://pacs/dicom-web", config, env={})
    config.write_text('[[archive]]\nurl = "https://pacs"\npasword = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'password'"):
        load_settings("https://pacs/dicom-web", config, env={})
    config.write_text('[[archive]]\nurl = "https://pacs"\nusername = "u"\npassword = "literal-pw"\n')
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_settings("https://pacs/dicom-web", config, env={}).credentials.password == "literal-pw"
    assert "chmod 600" in caplog.text and "literal-pw" not in caplog.text


def test_filters_are_checked_locally_whatever_the_archive_matched():
    series = RemoteSeries("1.2", "1.2.3", "P1", "MR", "T1 MPRAGE sag", 3, 176, "20240102")
    assert SeriesFilter(patient_id="P1", modality=("mr",), description="mprage").matches(series)
    assert not SeriesFilter(patient_id="P2").matches(series)
    assert not SeriesFilter(description="^flair").matches(series)
    assert SeriesFilter(date_from=date(2024, 1, 1), date_to=date(2024, 1, 31)).matches(series)
    assert not SeriesFilter(date_from=date(2024, 2, 1)).matches(series)
    assert SeriesFilter(date_from=date(2024, 1, 1)).study_keys() == {"StudyDate": "20240101-"}
    with pytest.raises(ConfigError, match="invalid regex"):
        SeriesFilter(description="(")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240101-20241231", (date(2024, 1, 1), date(2024, 12, 31))),
        ("20240101-", (date(2024, 1, 1), None)),
        ("-20240101", (None, date(2024, 1, 1))),
        ("2024-01-01..2024-03-01", (date(2024, 1, 1), date(2024, 3, 1))),
        ("2024-05-06", (date(2024, 5, 6), date(2024, 5, 6))),
    ],
)
def test_study_date_ranges(text, expected):
    assert parse_date_range(text) == expected


def test_bad_date_range_says_the_accepted_forms():
    with pytest.raises(ConfigError, match="YYYYMMDD-YYYYMMDD"):
        parse_date_range("last week")


def test_backoff_waits_out_an_unreachable_archive_then_gives_up_with_one_line(caplog):
    attempts, sleeps = [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise Unreachable("connection refused")
        return "ok"

    backoff = Backoff(max_wait=10, first=1, factor=2, cap=4)
    with caplog.at_level(logging.WARNING):
        assert call_with_backoff(flaky, backoff, "query at http://pacs", sleep=sleeps.append) == "ok"
    assert sleeps == [1, 2] and "retrying in 2 s" in caplog.text
    assert backoff.delays() == [1, 2, 4]

    def down():
        raise Unreachable("connection refused")

    sleeps.clear()
    with pytest.raises(ArchiveError, match="stayed unreachable for 7 s") as info:
        call_with_backoff(down, backoff, "query at http://pacs", sleep=sleeps.append)
    assert sleeps == [1, 2, 4] and "\n" not in str(info.value)


def test_other_errors_are_not_retried():
    sleeps = []

    def refused():
        raise ArchiveError("the archive refused the credentials (HTTP 401)")

    with pytest.raises(ArchiveError, match="401"):
        call_with_backoff(refused, Backoff(), "query", sleep=sleeps.append)
    assert sleeps == []


def test_a_series_is_ready_once_it_stopped_growing_for_the_settle_time():
    now = [0.0]
    tracker = SettleTracker(settle=10, clock=lambda: now[0])
    growing = RemoteSeries("1", "1.1", instances=5)
    assert tracker.ready([growing]) == []
    now[0] = 8
    grown = RemoteSeries("1", "1.1", instances=9)
    assert tracker.ready([grown]) == []  # it grew: the settle time starts again
    now[0] = 17
    assert tracker.ready([grown]) == []
    now[0] = 18
    assert tracker.ready([grown]) == [grown]
    assert SettleTracker(settle=0).ready([growing]) == [growing]
