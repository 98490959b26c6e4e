"""What ``pip install .`` installs: the wheel built from this checkout holds the package and its
shipped model, and no benchmark code (benchmarks/ runs from the checkout only)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
#: checkout folders that are not sources (virtual environments, build outputs, run folders)
NOT_SOURCES = (
    ".git",
    ".venv",
    "build",
    "dist",
    "runs",
    "out",
    ".whl",
    ".gl",
    ".pytest_cache",
    "__pycache__",
    "*.egg-info",
    "node_modules",
)


def build_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the checkout (so no build/ or *.egg-info lands in the checkout),
    offline and without build isolation. Needs setuptools >= 77 installed; returns the wheel's path."""
    source = work / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        str(work / "dist"),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (work / "dist").glob("medseg-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    pytest.importorskip(
        "setuptools", minversion="77", reason="building the wheel needs setuptools>=77 (pip install -e '.[test]')"
    )
    with zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel"))) as wheel:
        return set(wheel.namelist())


def test_wheel_holds_no_benchmark_code(wheel_names: set[str]) -> None:
    benchmark_files = sorted(n for n in wheel_names if "benchmarks" in PurePosixPath(n).parts)
    assert benchmark_files == []
    assert not any(n.startswith("benchmarks") for n in wheel_names)


def test_wheel_holds_the_package_and_the_shipped_model(wheel_names: set[str]) -> None:
    shipped = REPO / "medseg" / "pretrained" / "hippocampus"
    expected = {f"medseg/pretrained/hippocampus/{p.name}" for p in shipped.iterdir() if p.is_file()}
    assert {"medseg/pretrained/hippocampus/model.json", "medseg/pretrained/hippocampus/weights.safetensors"} <= expected
    assert expected <= wheel_names, sorted(expected - wheel_names)
    assert {"medseg/cli/export.py", "medseg/inference/export.py", "medseg/inference/export_nnunet.py"} <= wheel_names


def test_wheel_holds_the_viewer_files(wheel_names: set[str]) -> None:
    from medseg.viewer import bundle_available

    static = "medseg/viewer/static/"
    expected = {static + name for name in ("viewer.js", "viewer.css", "NIIVUE_LICENSE.txt")}
    if bundle_available():  # built by 'npm ci --prefix js' (README: set up), shipped as package data
        expected |= {static + "niivue.umd.js", static + "niivue.json"}
    assert expected <= wheel_names, sorted(expected - wheel_names)
