"""The NiiVue viewer pages and the batch report in a real browser (headless Chromium).

Each test opens a page from file:// (as a user opens a copied output folder) or from
``medseg view``'s 127.0.0.1 server, waits until NiiVue has drawn, takes a screenshot and checks
that each label's palette colour is drawn exactly where the label map holds that label (and no
label colour at all for an empty map). Every request the page makes is recorded: none may leave
the machine. Skipped with the reason where Chromium or the NiiVue bundle is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.io.files import read_volume_file
from medseg.viewer import bundle_available, write_case_viewer
from tests.browser import Browser, find_chromium
from tests.viewer_checks import classify, screenshot_rgb, show_axial_opaque, shown_and_expected

HIPPO = "sample_data/hippocampus"
CASE = "hippocampus_020"
NAMES = {1: "anterior", 2: "posterior"}
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "viewer.png"


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    if not bundle_available():
        pytest.skip("the NiiVue bundle is not built (npm ci --prefix js; .ci/run runs it)")
    with Browser(executable, width=1000, height=760) as instance:
        instance.page("Network.enable")
        yield instance


@pytest.fixture(scope="module")
def hippocampus(sample_data: Path):
    image = read_volume_file(sample_data / "hippocampus" / "imagesTs" / f"{CASE}.nii.gz")
    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / f"{CASE}.nii.gz", kind="label")
    return image, labels


def open_viewer(browser: Browser, url: str) -> None:
    browser.requests.clear()
    browser.open(url)
    state = browser.wait_for("document.body.dataset.viewer !== 'loading' && document.body.dataset.viewer", 60)
    assert state == "ready", f"viewer did not start: {browser.console[-5:]}"


def assert_local_requests(browser: Browser, scheme: str = "file://") -> None:
    """Nothing was fetched from the network (no CDN): every request stayed on this machine."""
    assert browser.requests, "no requests were recorded"
    outside = [u for u in browser.requests if not u.startswith((scheme, "data:", "blob:"))]
    assert not outside, f"the page fetched from outside: {outside[:3]}"


def test_viewer_draws_each_label_where_the_label_map_has_it(browser: Browser, hippocampus, tmp_path: Path) -> None:
    image, labels = hippocampus
    page = write_case_viewer(CASE, image, labels, NAMES, tmp_path / f"{CASE}_viewer.html")
    open_viewer(browser, page.as_uri())
    assert_local_requests(browser)
    legend = browser.evaluate("Array.from(document.querySelectorAll('.legend .label')).map(e => e.textContent)")
    assert legend == ["1 anterior", "2 posterior"]
    show_axial_opaque(browser)
    shown, expected = shown_and_expected(browser, np.asarray(labels.array), labels.affine, [1, 2])
    assert len(shown) > 2000
    assert set(np.unique(expected)) == {0, 1, 2}  # the slice through the labels' centre shows both
    assert np.mean(shown == expected) >= 0.97
    for value in (1, 2):  # each label's colour covers its voxels and almost nothing else
        assert np.mean(shown[expected == value] == value) >= 0.9
        assert np.mean(expected[shown == value] == value) >= 0.9


def test_hidden_label_disappears_and_readout_names_the_label(browser: Browser, hippocampus, tmp_path: Path) -> None:
    image, labels = hippocampus
    page = write_case_viewer(CASE, image, labels, NAMES, tmp_path / f"{CASE}_viewer.html")
    open_viewer(browser, page.as_uri())
    show_axial_opaque(browser)
    browser.evaluate("document.querySelector('.legend input[data-label=\"2\"]').click()")
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shown, expected = shown_and_expected(browser, np.asarray(labels.array), labels.affine, [1, 2])
    assert np.count_nonzero(shown == 2) == 0 and np.mean(shown[expected == 1] == 1) >= 0.9
    i, j, k = (int(v) for v in np.argwhere(np.asarray(labels.array) == 1)[0])
    text = readout_at(browser, labels.affine, (i, j, k))
    assert f"voxel ({i}, {j}, {k})" in text and "label 1 anterior" in text
    shown_value = float(re.search(r"value (\S+)", text).group(1))
    assert shown_value == pytest.approx(float(np.asarray(image.array)[i, j, k]), rel=1e-3)


def test_empty_label_map_draws_no_label_colour(browser: Browser, hippocampus, tmp_path: Path) -> None:
    image, labels = hippocampus
    empty = labels.with_array(np.zeros(labels.spatial_shape, np.uint8))
    page = write_case_viewer("empty", image, empty, NAMES, tmp_path / "empty_viewer.html")
    open_viewer(browser, page.as_uri())
    rgb = screenshot_rgb(browser)  # every view, the 3D render included
    rect = browser.evaluate(
        "(() => { const r = document.getElementById('medseg-canvas').getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom].map(Math.round); })()"
    )
    canvas = rgb[rect[1] : rect[3], rect[0] : rect[2]].reshape(-1, 3)
    assert np.count_nonzero(classify(canvas, list(range(1, 13)))) == 0
    assert canvas.std() > 10  # the image itself is drawn


def test_oblique_dicom_series_overlay_matches_the_labels(browser: Browser, sample_data: Path, tmp_path: Path) -> None:
    from medseg.io.dicom import discover_series, load_series, select_series

    series = load_series(select_series(discover_series(sample_data / "dicom"), "T1post"))
    shape = series.volume.spatial_shape
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    labels = np.zeros(shape, np.uint8)
    labels[((ii - 110) / 40.0) ** 2 + ((jj - 160) / 60.0) ** 2 + ((kk - 11) / 6.0) ** 2 < 1] = 1
    labels[(np.abs(ii - 190) < 25) & (np.abs(jj - 120) < 15) & (np.abs(kk - 11) < 4)] = 3
    volume = series.volume.with_array(labels, kind="label")
    page = write_case_viewer(
        "t1post", series.volume, volume, {1: "ellipsoid", 3: "box"}, tmp_path / "t1post_viewer.html"
    )
    open_viewer(browser, page.as_uri())
    show_axial_opaque(browser)
    shown, expected = shown_and_expected(browser, labels, volume.affine, [1, 3])
    assert set(np.unique(expected)) == {0, 1, 3}
    assert np.mean(shown == expected) >= 0.97
    assert readout_at(browser, volume.affine, (190, 110, 12)).startswith("test: voxel (190, 110, 12) ")
    assert readout_at(browser, volume.affine, (190, 110, 12)).endswith("label 3 box")


def readout_at(browser: Browser, affine: np.ndarray, voxel: tuple[int, int, int]) -> str:
    """The viewer's readout line for the file voxel ``voxel`` (placed by its world position)."""
    x, y, z = (float(v) for v in (affine @ [*voxel, 1.0])[:3])
    return browser.evaluate(f"""(() => {{ const v = window.medsegViewer.viewer;
        v.show(v.nv.mm2frac([{x}, {y}, {z}], 0, true), 'test'); return v.readout.textContent; }})()""")


@pytest.fixture(scope="module")
def batch_output(tmp_path_factory, sample_data: Path) -> Path:
    """A real batch run (shipped model, sample cases, one unreadable file), copied to another folder."""
    inputs = tmp_path_factory.mktemp("batch_in")
    for case in ("hippocampus_020", "hippocampus_107"):
        shutil.copy(sample_data / "hippocampus" / "imagesTs" / f"{case}.nii.gz", inputs)
    (inputs / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    out = tmp_path_factory.mktemp("batch_run") / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medseg",
            "batch",
            str(inputs),
            "-m",
            "hippocampus",
            "-o",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 3, run.stderr[-2000:]  # one case failed
    copied = tmp_path_factory.mktemp("copied") / "results"
    shutil.copytree(out, copied)  # a copied folder must keep working (relative links only)
    return copied


def test_report_from_a_copied_folder_shows_the_viewer_failures_first(browser: Browser, batch_output: Path) -> None:
    browser.requests.clear()
    browser.open((batch_output / "report.html").as_uri())
    assert browser.wait_for("document.body.dataset.viewer === 'ready'", 90)
    assert_local_requests(browser)
    statuses = browser.evaluate("Array.from(document.querySelectorAll('tbody tr')).map(r => r.dataset.status)")
    assert statuses == ["failed", "done", "done"]
    first = browser.evaluate("document.body.dataset.viewerCase")
    labels = read_volume_file(next(batch_output.rglob(f"{first}.nii.gz")), kind="label")
    time.sleep(0.3)
    rgb = screenshot_rgb(browser)
    rect = browser.evaluate(
        "(() => { const r = document.querySelector('#viewer-panel iframe').getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom].map(Math.round); })()"
    )
    panel = classify(rgb[rect[1] : rect[3], rect[0] : rect[2]].reshape(-1, 3), [1, 2])
    present = {int(v) for v in np.unique(np.asarray(labels.array)) if v}
    assert present and all(np.count_nonzero(panel == v) > 50 for v in present)
    browser.evaluate("(() => { const box = document.querySelector('#filters input[value=\"done\"]'); box.click(); })()")
    visible = browser.evaluate(
        "Array.from(document.querySelectorAll('tbody tr'))"
        ".filter(r => r.style.display !== 'none').map(r => r.dataset.status)"
    )
    assert visible == ["failed"]
    _save_docs_screenshot(browser, batch_output, rgb)


def _save_docs_screenshot(browser: Browser, batch_output: Path, report: np.ndarray) -> None:
    """With MEDSEG_DOCS_SCREENSHOT=1, save the report and a case's viewer as the docs pictures
    (docs/images/report.png, docs/images/viewer.png)."""
    if os.environ.get("MEDSEG_DOCS_SCREENSHOT") != "1":
        return
    from PIL import Image

    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(report).quantize(colors=256).save(DOCS_SCREENSHOT.with_name("report.png"), optimize=True)
    page = next(batch_output.rglob("*_viewer.html"))
    browser.open(page.as_uri())
    browser.wait_for("document.body.dataset.viewer === 'ready'", 60)
    browser.evaluate(
        "(async () => { const v = window.medsegViewer.viewer;"
        " v.show(v.nv.scene.crosshairPos, 'crosshair');"
        " await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); })()"
    )
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(screenshot_rgb(browser)).quantize(colors=256).save(DOCS_SCREENSHOT, optimize=True)


def test_medseg_view_serves_the_folder_on_localhost(browser: Browser, batch_output: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "medseg", "view", str(batch_output), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline()
        assert first.startswith(f"serving {batch_output} on http://127.0.0.1:")
        report_url = server.stdout.readline().strip()
        assert report_url.startswith("http://127.0.0.1:") and report_url.endswith("/report.html")
        base = report_url[: -len("report.html")]
        page = next(batch_output.rglob("*_viewer.html")).relative_to(batch_output).as_posix()
        open_viewer(browser, base + page)
        assert_local_requests(browser, scheme=base)
    finally:
        server.terminate()
        server.wait(timeout=10)
