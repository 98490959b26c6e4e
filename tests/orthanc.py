"""A real Orthanc archive for the tests: Debian's ``orthanc`` + ``orthanc-dicomweb`` packages, started
on 127.0.0.1 with free ports, a temporary storage folder and its own config (the system service is
never used). Checks go through Orthanc's own REST API, independent of the medseg code under test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

ORTHANC_BINARIES = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
AET = "ORTHANC"


def missing_reason() -> str | None:
    """Why an Orthanc archive with DICOMweb cannot be started here, or None when it can."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


def orthanc_binary() -> str | None:
    """Path of the Orthanc executable, or None."""
    for name in ORTHANC_BINARIES:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def dicomweb_plugin() -> str | None:
    """Path of the DICOMweb plugin library, or None."""
    return next((p for p in DICOMWEB_PLUGINS if Path(p).is_file()), None)


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """One Orthanc process with its storage in ``root``; ``stop()`` and ``start()`` keep the data."""

    def __init__(
        self,
        root: Path,
        username: str | None = None,
        password: str | None = None,
        env: dict[str, str] | None = None,
        **settings: object,
    ) -> None:
        """``settings`` replace entries of the test configuration (e.g. ``DicomAlwaysAllowFind=False``);
        ``env`` is added to Orthanc's environment (e.g. ``TCP_NODELAY=1`` for its DICOM stack, DCMTK)."""
        self.root = Path(root)
        self.env = dict(env or {})
        self.http_port, self.dicom_port = free_port(), free_port()
        self.username, self.password = username, password
        self.process: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps({**self._config(), **settings}, indent=2))

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse_url(self) -> str:
        """The DIMSE address for medseg."""
        return f"dimse://{AET}@127.0.0.1:{self.dicom_port}"

    def _config(self) -> dict:
        users = {self.username: self.password} if self.username else {}
        return {
            "Name": "medseg-tests",
            "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": users,
            "HttpCompressionEnabled": False,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "StableAge": 1,
            "ConcurrentJobs": 1,
        }

    # ------------------------------------------------------------------ process
    def start(self, timeout: float = 30.0) -> Orthanc:
        """Start Orthanc and wait until its REST API answers."""
        with open(self.root / "orthanc.log", "ab") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                [orthanc_binary(), str(self.root / "config.json")],
                stdout=log,
                stderr=log,
                cwd=self.root,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.root / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s; see {self.root / 'orthanc.log'}")

    def stop(self, graceful: bool = True) -> None:
        """Stop Orthanc (SIGTERM, or SIGKILL when not ``graceful``) and wait until it has exited."""
        if self.process is None:
            return
        self.process.terminate() if graceful else self.process.kill()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    # ------------------------------------------------------------------ REST
    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def get(self, path: str) -> object:
        """GET a JSON resource."""
        return json.loads(self._request("GET", path))

    def upload(self, files: Iterable[Path]) -> int:
        """Store DICOM files through the REST API; returns how many."""
        count = 0
        for path in files:
            self._request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
            count += 1
        return count

    def find(self, level: str, query: dict) -> list[dict]:
        """``/tools/find`` with expanded answers (MainDicomTags, parent ids)."""
        body = json.dumps({"Level": level, "Query": query, "Expand": True}).encode()
        return json.loads(self._request("POST", "/tools/find", body, "application/json"))

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file of one instance."""
        return self._request("GET", f"/instances/{orthanc_id}/file")

    def segs(self) -> list[dict]:
        """Every SEG series in the archive (expanded)."""
        return self.find("Series", {"Modality": "SEG"})

    def seg_files(self, folder: Path) -> list[tuple[str, Path]]:
        """Every SEG instance in the archive, downloaded into ``folder``: (its study's StudyInstanceUID, file)."""
        found = []
        for series in self.segs():
            study = self.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
            for instance in series["Instances"]:
                path = Path(folder) / f"{instance}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.instance_file(instance))
                found.append((study, path))
        return found
