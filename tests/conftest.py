"""Shared fixtures: where the real public test data lives, skipping cleanly when it is absent."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DATA = REPO / "sample_data"


def _claim_tests_package() -> None:
    """Make ``import tests.x`` find this folder even when a site-packages ``tests`` package exists.

    rt-utils (``medseg[rtstruct]``) installs a top-level package named ``tests``; a regular
    package wins over this folder (a namespace package), which would hide ``tests.inference_stubs``.
    """
    here = Path(__file__).resolve().parent
    spec = importlib.util.find_spec("tests")
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent != here:
        package = types.ModuleType("tests")
        package.__path__ = [str(here)]
        sys.modules["tests"] = package


_claim_tests_package()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real public data); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (clone medseg beside ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The small real cases shipped in ``sample_data/``."""
    return SAMPLE_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory) -> None:
    """Keep caches that tests trigger (e.g. ONNX exports of 'predict --backend auto') out of ~/.cache."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: fast and stable on a shared machine (OpenMP threads
    spin-wait when the other cores are busy). Use with ``pytest.mark.usefixtures``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def mixed_input(sample_data: Path, shared_data: Path, tmp_path: Path) -> Path:
    """A folder holding the shipped DICOM export (two oblique MR series, ``export/``) beside two
    real hippocampus volume files: what ``medseg predict`` and ``medseg batch`` both take."""
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(sample_data / "dicom", folder / "export")
    for image in sorted((shared_data / "msd_hippocampus" / "imagesTr").glob("*.nii.gz"))[:2]:
        (folder / image.name).symlink_to(image)
    return folder


@pytest.fixture
def orthanc(tmp_path_factory):
    """A fresh Orthanc archive (DICOMweb + DIMSE) on free ports with temporary storage; skips with the
    reason when Orthanc or its DICOMweb plugin is not installed (see tests/orthanc.py)."""
    from tests.orthanc import Orthanc, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop(graceful=False)  # its storage is thrown away: no need to wait for a clean shutdown
