"""Where an archive is: a DICOMweb root (``http(s)://HOST[:PORT]/PATH``) or a DIMSE node
(``dimse://AET@HOST:PORT``), parsed once and shown without credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from medseg.errors import ConfigError

ArchiveKind = Literal["dicomweb", "dimse"]
_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash or control chars
_SCHEMES = ("http://", "https://", "dimse://")


def is_archive_address(text: object) -> bool:
    """True when ``text`` names an archive (``http://``, ``https://`` or ``dimse://``), not a local path."""
    return isinstance(text, str) and text.lower().startswith(_SCHEMES)


@dataclass(frozen=True)
class ArchiveAddress:
    """A parsed archive address. ``url`` is the canonical text (DICOMweb root without a trailing
    slash, or ``dimse://AET@HOST:PORT``); it never holds credentials, so it may be logged."""

    kind: ArchiveKind
    url: str
    host: str
    port: int
    called_aet: str = ""

    def __str__(self) -> str:
        return self.url

    def series_location(self, study_uid: str, series_uid: str) -> str:
        """A readable, credential-free name of one series in this archive (for ledgers and reports)."""
        return f"{self.url}/studies/{study_uid}/series/{series_uid}"


def parse_address(text: str) -> ArchiveAddress:
    """Parse ``http(s)://HOST[:PORT]/PATH`` or ``dimse://AET@HOST:PORT``.

    Raises ConfigError for anything else, and for credentials written into the address (they
    would end up in shell history, process lists and ledgers; give them by environment or config).
    """
    if not is_archive_address(text):
        raise ConfigError(f"{text!r} is not an archive address; use http(s)://HOST/dicom-web or dimse://AET@HOST:PORT")
    if text.lower().startswith("dimse://"):
        return _parse_dimse(text)
    return _parse_dicomweb(text)


def _parse_dicomweb(text: str) -> ArchiveAddress:
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise ConfigError(
            "do not put credentials in the archive URL; set MEDSEG_PACS_USERNAME and MEDSEG_PACS_PASSWORD "
            "(or MEDSEG_PACS_TOKEN), or use --pacs-config"
        )
    if not parts.hostname:
        raise ConfigError(f"{text!r} has no host; use http(s)://HOST[:PORT]/dicom-web")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{text!r}: give the DICOMweb root without ?query or #fragment; filters have their own options"
        )
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ConfigError(f"{text!r} has an invalid port") from None
    netloc = parts.netloc.lower()
    url = f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"
    return ArchiveAddress("dicomweb", url, parts.hostname, port)


def _parse_dimse(text: str) -> ArchiveAddress:
    match = re.fullmatch(r"dimse://([^@/]+)@([^:/]+|\[[0-9a-fA-F:]+\]):(\d{1,5})/?", text, flags=re.I)
    if not match:
        raise ConfigError(
            f"{text!r}: a DIMSE archive is written dimse://AET@HOST:PORT (e.g. dimse://ORTHANC@pacs:4242)"
        )
    aet, host, port_text = match.groups()
    if not _AET.fullmatch(aet) or aet.strip() == "":
        raise ConfigError(f"{aet!r} is not a valid AE title (1-16 printable characters, no backslash)")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} in {text!r} is out of range (1-65535)")
    return ArchiveAddress("dimse", f"dimse://{aet}@{host}:{port}", host.strip("[]"), port, aet)


def check_ae_title(value: str, what: str = "--calling-aet") -> str:
    """``value`` when it is a valid AE title (1-16 printable characters, no backslash), else a ConfigError."""
    if not _AET.fullmatch(value) or not value.strip():
        raise ConfigError(f"{what} {value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return value
