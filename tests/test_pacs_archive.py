"""medseg.pacs against a real Orthanc (DICOMweb and DIMSE): queries with filters, retrieval equal to
the uploaded files, push exactly once with verification, back-off while the archive is down,
credentials and TLS. Skips with the reason when Orthanc is not installed."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from datetime import date

import numpy as np
import pydicom
import pytest

from medseg.errors import ArchiveError, ConfigError
from medseg.io.dicom import discover_series, series_of_datasets
from medseg.pacs import SeriesFilter, load_settings, open_archive, push_file
from medseg.pacs.push import give_stable_uids, stable_uid
from medseg.pacs.scp import StorageServer
from medseg.pacs.settle import stable_folders
from tests.dicom_factory import write_mr_series
from tests.orthanc import Orthanc, free_port, missing_reason

PROTOCOLS = ("dicomweb", "dimse")


def _archive(server: Orthanc, protocol: str, **overrides):
    url = server.dicomweb_url if protocol == "dicomweb" else server.dimse_url
    return open_archive(load_settings(url, env={}, **overrides))


@pytest.fixture
def loaded(orthanc, sample_data, tmp_path):
    """Orthanc holding the shipped TCIA export (PGBM-003, 2 series) and one hippocampus crop of another patient."""
    orthanc.upload(sorted((sample_data / "dicom").rglob("*.dcm")))
    folder = tmp_path / "p2"
    write_mr_series(
        sample_data / "hippocampus/imagesTs/hippocampus_020.nii.gz",
        folder,
        patient_name="Roe^Richard",
        patient_id="P2",
        study_date="20240102",
        description="hippo crop",
    )
    orthanc.upload(sorted(folder.iterdir()))
    return orthanc


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_queries_apply_every_filter(loaded, protocol):
    archive = _archive(loaded, protocol)
    everything = archive.find_series(SeriesFilter())
    assert sorted(s.patient_id for s in everything) == ["P2", "PGBM-003", "PGBM-003"]
    assert {s.description for s in archive.find_series(SeriesFilter(patient_id="PGBM-003"))} == {"T1post", "FLAIR_reg"}
    assert [s.description for s in archive.find_series(SeriesFilter(description="^flair"))] == ["FLAIR_reg"]
    assert [s.patient_id for s in archive.find_series(SeriesFilter(date_from=date(2024, 1, 1)))] == ["P2"]
    assert archive.find_series(SeriesFilter(modality=("CT",))) == []
    one = everything[0]
    assert [
        s.series_uid for s in archive.find_series(SeriesFilter(study_uid=one.study_uid, series_uid=one.series_uid))
    ] == [one.series_uid]
    t1 = next(s for s in everything if s.description == "T1post")
    assert (t1.instances, t1.series_number, t1.modality) == (22, 11, "MR")
    assert "Dumbledore" not in repr(t1)  # the name is kept for redaction only


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_describe_the_series_as_the_files_do(loaded, protocol, sample_data):
    archive = _archive(loaded, protocol)
    t1 = archive.find_series(SeriesFilter(description="T1post"))[0]
    remote = series_of_datasets(archive.series_headers(t1))
    local = [i for i in discover_series(sample_data / "dicom") if i.description == "T1post"]
    pick = (
        "uid",
        "study_uid",
        "patient_id",
        "series_number",
        "n_slices",
        "matrix",
        "spacing",
        "orientation",
        "is_image",
    )
    assert [[getattr(i, k) for k in pick] for i in remote] == [[getattr(i, k) for k in pick] for i in local]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retrieved_series_equals_the_uploaded_files(loaded, protocol, sample_data, tmp_path):
    archive = _archive(loaded, protocol)
    t1 = archive.find_series(SeriesFilter(description="T1post"))[0]
    paths = archive.retrieve_series(t1, tmp_path / "cache")
    originals = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p) for p in (sample_data / "dicom/PGBM-003/11-T1post-18670").iterdir())
    }
    assert sorted(p.stem for p in paths) == sorted(originals)
    for path in paths:
        got = pydicom.dcmread(path)
        assert np.array_equal(got.pixel_array, originals[path.stem].pixel_array)
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary files left


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_push_sends_once_and_verifies(loaded, protocol, sample_data, tmp_path):
    archive = _archive(loaded, protocol)
    result = tmp_path / "result.dcm"
    source = pydicom.dcmread(next((sample_data / "dicom/PGBM-003/11-T1post-18670").iterdir()))
    source.SeriesDescription, source.SeriesNumber = "medseg result", 901
    source.save_as(result)
    series_uid, sop_uid = give_stable_uids(result, "source-series|model-v1")
    assert (series_uid, sop_uid) == (
        stable_uid("series", "source-series|model-v1"),
        stable_uid("instance", "source-series|model-v1"),
    )
    first = push_file(archive, result)
    again = push_file(archive, result)
    assert (first.sent, again.sent) == (True, False)
    stored = loaded.find("Instance", {"SOPInstanceUID": sop_uid})
    assert (
        len(stored) == 1
        and loaded.find("Series", {"SeriesInstanceUID": series_uid})[0]["ParentStudy"]
        == loaded.find("Study", {"StudyInstanceUID": str(source.StudyInstanceUID)})[0]["ID"]
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stopped_archive_is_waited_for(loaded, protocol, caplog):
    archive = _archive(loaded, protocol, max_wait=60)
    loaded.stop()
    restart = threading.Timer(3.0, loaded.start)
    restart.start()
    with caplog.at_level(logging.WARNING):
        found = archive.find_series(SeriesFilter(patient_id="P2"))
    restart.join()
    assert [s.patient_id for s in found] == ["P2"]
    assert "archive unreachable" in caplog.text and "retrying in" in caplog.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_archive_that_stays_down_gives_one_line(protocol):
    url = (
        f"http://127.0.0.1:{free_port()}/dicom-web" if protocol == "dicomweb" else f"dimse://X@127.0.0.1:{free_port()}"
    )
    archive = open_archive(load_settings(url, env={}, max_wait=1.5))
    start = time.monotonic()
    with pytest.raises(ArchiveError, match="stayed unreachable for 1 s") as info:
        archive.find_series(SeriesFilter())
    assert time.monotonic() - start < 10 and "\n" not in str(info.value)


def test_credentials_are_sent_and_never_logged(tmp_path, sample_data, caplog, monkeypatch):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = Orthanc(tmp_path / "auth", username="medseg", password="pw-Xy7!").start()
    try:
        url = server.dicomweb_url
        with pytest.raises(ArchiveError, match=r"refused the credentials \(HTTP 401\); set MEDSEG_PACS_USERNAME"):
            open_archive(load_settings(url, env={})).find_series(SeriesFilter())
        monkeypatch.setenv("MEDSEG_PACS_USERNAME", "medseg")
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "pw-Xy7!")
        with caplog.at_level(logging.DEBUG):
            assert open_archive(load_settings(url)).find_series(SeriesFilter()) == []
        assert "pw-Xy7" not in caplog.text
    finally:
        server.stop()


def test_tls_certificates_are_verified_by_default(tmp_path):
    """An HTTPS archive with a self-signed certificate is refused unless its CA bundle is given."""
    import http.server
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )

    class Empty(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Empty)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        with pytest.raises(ArchiveError, match="TLS certificate could not be verified"):
            open_archive(load_settings(url, env={}, max_wait=0)).find_series(SeriesFilter())
        config = tmp_path / "pacs.toml"
        config.write_text(f'[[archive]]\nurl = "{url}"\nca_bundle = "{cert}"\n')
        assert open_archive(load_settings(url, config, env={})).find_series(SeriesFilter()) == []
    finally:
        server.shutdown()


def test_storage_scp_files_instances_by_uid_and_reports_stable_series(tmp_path, sample_data):
    port = free_port()
    server = StorageServer(tmp_path / "spool", "MEDSEG", "127.0.0.1", port)
    server.start()
    try:
        files = sorted((sample_data / "dicom/PGBM-003/11-T1post-18670").iterdir())
        sender = open_archive(load_settings(f"dimse://MEDSEG@127.0.0.1:{port}", env={}))
        sender.store(files)
    finally:
        server.stop()
    ds = pydicom.dcmread(files[0])
    folder = tmp_path / "spool" / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{pydicom.dcmread(f).SOPInstanceUID}.dcm" for f in files)
    assert stable_folders(tmp_path / "spool", settle=3600) == []
    assert stable_folders(tmp_path / "spool", settle=0) == [folder]


def test_storage_scp_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="choose another --port"):
            StorageServer(tmp_path / "spool", "MEDSEG", "127.0.0.1", busy.getsockname()[1]).start()


def test_dimse_says_when_the_archive_refuses_our_ae_title(tmp_path):
    """Orthanc as installed (queries and retrievals only from known modalities) aborts our C-FIND: a
    one-line error naming the AE title at once, not a wait for an archive that is up."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = Orthanc(tmp_path / "strict", DicomAlwaysAllowFind=False, DicomAlwaysAllowGet=False).start()
    try:
        archive = open_archive(load_settings(server.dimse_url, env={}, calling_aet="SEGNODE"))
        start = time.monotonic()
        with pytest.raises(ArchiveError, match="from AE title 'SEGNODE' although it is up; register that AE title"):
            archive.find_series(SeriesFilter())
        assert time.monotonic() - start < 10
    finally:
        server.stop(graceful=False)
