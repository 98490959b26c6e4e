"""Safe, stable case ids (the output names of ``medseg predict`` and ``medseg batch``), and pseudonyms.

Case names come from untrusted text (DICOM tags such as PatientID, file names, manifest cells).
:func:`sanitize` turns any such text into one harmless path component; :func:`safe_join` refuses a
name that would still leave its root. :class:`Namer` builds the case id of a series or file, either
readable (PatientID, study, series number, description) or pseudonymised (HMAC-SHA256 with a
per-output-folder secret, so a rerun gives the same names while the names reveal nothing). Readable
ids never carry the patient's name: it is redacted from descriptions, file paths and manifest names
(:func:`medseg.cases.privacy.redact`), and a PatientID that holds it is replaced by a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.cases.privacy import mentions_name, redact
from medseg.errors import OutputError

#: Longest case id component we produce (file systems allow 255 bytes; outputs add suffixes).
MAX_COMPONENT = 80

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REPEATS = re.compile(r"_{2,}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def sanitize(text: object, fallback: str = "unnamed", max_length: int = MAX_COMPONENT) -> str:
    """One safe path component made from ``text``.

    Promises: only ASCII letters, digits, ``.``, ``_`` and ``-``; no leading or trailing
    punctuation (so never ``.``, ``..`` or a hidden name); at most ``max_length`` characters; not a
    Windows device name; ``fallback`` when nothing usable is left.
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", ascii_text)
    name = _REPEATS.sub("_", name)
    name = name.strip("._-")[:max_length].strip("._-")
    if not name:
        return fallback
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        name = f"_{name}"
    return name


def safe_join(root: Path, name: str) -> Path:
    """``root / name`` after checking that the result stays inside ``root``.

    Needs ``name`` to be a single component (as :func:`sanitize` makes). Raises OutputError
    otherwise, so a hostile name can never write outside the output folder.
    """
    root_resolved = root.resolve()
    target = (root_resolved / name).resolve()
    if target.parent != root_resolved or name in ("", ".", ".."):
        raise OutputError(f"case name {name!r} would leave the output folder {root}; this is a bug, please report it")
    return root / name


def short_hash(text: str, length: int = 8) -> str:
    """A short hex SHA-256 of ``text`` (for disambiguating names, not for secrecy)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Namer:
    """Makes case ids; readable by default, pseudonymised when ``secret`` is given.

    The same inputs and secret always give the same id, so reruns find their earlier cases.
    """

    secret: bytes | None = None

    @property
    def pseudonymised(self) -> bool:
        """True when ids are pseudonyms."""
        return self.secret is not None

    def _token(self, *parts: str, length: int = 12) -> str:
        if self.secret is None:
            raise RuntimeError("pseudonym requested from a Namer without a secret")
        message = "\x1f".join(parts).encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:length]

    def study_pseudonym(self, patient_id: str, study_uid: str) -> str:
        """The pseudonym of one study of one patient: ``P`` + 12 hex digits of an HMAC."""
        return "P" + self._token("study", patient_id, study_uid)

    def series_id(
        self,
        patient_id: str,
        study_uid: str,
        series_number: int | None,
        description: str,
        name_parts: Sequence[str] = (),
    ) -> str:
        """Case id of a DICOM series; ``name_parts`` are the patient's name terms (to keep out of it).

        Readable: ``<PatientID>_<study hash>_S<number>_<description>``, the description with the
        name redacted, and ``H<hash>`` (of PatientID and study) in place of a PatientID that holds
        the name (:meth:`hides_patient_id`). Pseudonymised: ``<study pseudonym>_S<number>`` (no
        description, no PatientID).
        """
        number = f"S{series_number}" if series_number is not None else "S"
        if self.pseudonymised:
            return f"{self.study_pseudonym(patient_id, study_uid)}_{number}"
        if self.hides_patient_id(patient_id, name_parts):
            pid = "H" + short_hash(f"{patient_id}\x1f{study_uid}", 10)
        else:
            pid = sanitize(patient_id, fallback="nopid", max_length=32)
        desc = sanitize(redact(description, name_parts), fallback="", max_length=32)
        name = f"{pid}_{short_hash(study_uid, 6)}_{number}" + (f"_{desc}" if desc else "")
        return sanitize(name)

    def hides_patient_id(self, patient_id: str, name_parts: Sequence[str]) -> bool:
        """True when a readable id must not show ``patient_id``: it holds (a part of) the patient's name."""
        return not self.pseudonymised and mentions_name(patient_id, name_parts)

    def file_id(self, relative: str, name_parts: Sequence[str] = ()) -> str:
        """Case id of a volume file (its path inside INPUT without the format suffix, ``name_parts`` redacted)."""
        if self.pseudonymised:
            return "F" + self._token("file", relative)
        return sanitize(redact(relative, name_parts).replace("/", "_"), fallback="file")

    def manifest_id(self, case: str, name_parts: Sequence[str] = ()) -> str:
        """Case id of a manifest row (its ``case`` cell, ``name_parts`` redacted)."""
        if self.pseudonymised:
            return "C" + self._token("case", case)
        return sanitize(redact(case, name_parts), fallback="case")

    def disambiguate(self, case_id: str, key: str) -> str:
        """``case_id`` with a stable suffix derived from ``key`` (used only when ids collide)."""
        suffix = self._token("key", key, length=6) if self.pseudonymised else short_hash(key, 6)
        return f"{case_id[: MAX_COMPONENT - 7]}-{suffix}"
