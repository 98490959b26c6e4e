"""The viewer's files without a browser: the page carries the exact volumes, the report orders and
links cases, ``medseg view`` serves only 127.0.0.1 and says what it serves."""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.ledger import CaseRow, OutputFile
from medseg.batch.report import report_html, summary_csv
from medseg.cli import main
from medseg.io.files import read_volume_file
from medseg.io.palette import colour_hex, label_colour
from medseg.viewer import bundle_available, case_viewer_html
from medseg.viewer.page import viewer_payload

needs_bundle = pytest.mark.skipif(not bundle_available(), reason="the NiiVue bundle is not built (npm ci --prefix js)")


def decode(text: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text)))


def test_page_embeds_both_volumes_with_their_geometry_and_escapes_names(sample_data: Path) -> None:
    image = read_volume_file(sample_data / "hippocampus" / "imagesTs" / "hippocampus_020.nii.gz")
    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / "hippocampus_020.nii.gz", kind="label")
    page = case_viewer_html(viewer_payload("c1", image, labels, {1: "</script><b>x", 2: "posterior"}), "../assets")
    data = re.search(r'<script id="medseg-data" type="application/json">(.*?)</script>', page, re.S)
    assert data is not None and "</script><b>" not in data.group(1)
    payload = json.loads(data.group(1))
    for key, volume in (("image", image), ("labels", labels)):
        nifti = decode(payload[key])
        assert np.array_equal(np.asarray(nifti.dataobj), np.asarray(volume.array))
        assert np.allclose(nifti.affine, volume.affine)
    assert payload["labelTable"] == [
        {"value": 1, "name": "</script><b>x", "colour": list(label_colour(1))},
        {"value": 2, "name": "posterior", "colour": list(label_colour(2))},
    ]
    assert 'src="../assets/niivue.umd.js"' in page and "http" not in page.split('<script id="medseg-data"')[0]


def row(case_id: str, status: str, outputs: tuple = (), stats: dict | None = None, error: str | None = None) -> CaseRow:
    return CaseRow(
        case_id,
        "file",
        f"/data/{case_id}.nii.gz",
        None,
        "MR",
        None,
        10,
        status,
        error,
        1,
        1,
        "w0",
        1.5,
        {},
        stats or {},
        "m",
        "v1",
        outputs,
    )


def test_report_lists_failures_first_links_viewers_and_colours_labels() -> None:
    stats = {
        "labels": [
            {"label": 1, "name": "anterior", "volume_ml": 2.0, "intensity_mean": 512.25, "intensity_std": 10.5},
            {"label": 2, "name": "posterior", "volume_ml": 1.5},
        ]
    }
    viewer = OutputFile("viewer", "cases/a/a_viewer.html", "0" * 64, 10)
    rows = [row("a", "done", (viewer,), stats), row("b", "failed", error="bad file"), row("c", "skipped")]
    page = report_html(rows, pseudonymised=False)
    body = page.split("<tbody>")[1]
    assert re.findall(r'<tr data-status="(\w+)">', body) == ["failed", "done", "skipped"]
    assert '<iframe name="medseg-viewer" src="cases/a/a_viewer.html"' in page
    assert 'href="cases/a/a_viewer.html" target="medseg-viewer" data-case="a"' in page
    assert f"background:{colour_hex(label_colour(1))}" in page and f"background:{colour_hex(label_colour(2))}" in page
    assert "512.2 ± 10.5" in page
    assert re.findall(r'<input type="checkbox" value="(\w+)" checked> \w+ \((\d)\)', page) == [
        ("failed", "1"),
        ("done", "1"),
        ("skipped", "1"),
    ]
    table = summary_csv(rows, pseudonymised=True)
    assert "intensity_mean_anterior" in table.splitlines()[0] and "512.250" in table


def test_view_refuses_a_folder_without_pages(tmp_path: Path, capsys) -> None:
    assert main(["view", str(tmp_path)]) == 2
    assert "holds no report.html and no *_viewer.html page" in capsys.readouterr().err


@needs_bundle
def test_view_serves_pages_and_assets_on_localhost_only(sample_data: Path, tmp_path: Path) -> None:
    from medseg.viewer import write_case_viewer

    image = read_volume_file(sample_data / "hippocampus" / "imagesTs" / "hippocampus_107.nii.gz")
    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / "hippocampus_107.nii.gz", kind="label")
    write_case_viewer("h107", image, labels, {1: "a", 2: "p"}, tmp_path / "h107_viewer.html")
    server = subprocess.Popen(
        [sys.executable, "-m", "medseg", "view", str(tmp_path), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().startswith(f"serving {tmp_path} on http://127.0.0.1:")
        url = server.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/h107_viewer\.html", url)
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert 'src="viewer_assets/niivue.umd.js"' in page
        with urllib.request.urlopen(
            url.replace("h107_viewer.html", "viewer_assets/niivue.umd.js"), timeout=10
        ) as response:
            assert response.read() == (tmp_path / "viewer_assets" / "niivue.umd.js").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_missing_bundle_skips_viewer_pages_with_one_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    from medseg.inference import writer
    from medseg.inference.options import OutputOptions
    from medseg.viewer import assets

    monkeypatch.setattr(assets, "STATIC", tmp_path / "nowhere")
    monkeypatch.setattr(writer, "_warned", set())
    volume = read_volume_file(
        Path(__file__).resolve().parents[1] / "sample_data/hippocampus/labelsTs/hippocampus_107.nii.gz", kind="label"
    )
    stats: dict = {}
    for _ in range(2):
        assert (
            writer._viewer_output("c", volume, volume, {1: "a"}, tmp_path / "c_viewer.html", OutputOptions(), stats)
            == {}
        )
    assert "npm ci --prefix js" in stats["viewer_skipped"]
    assert caplog.text.count("no viewer pages written") == 1
    assert not (tmp_path / "c_viewer.html").exists()
