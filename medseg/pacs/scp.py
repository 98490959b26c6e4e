"""medseg as a DICOM node: a C-STORE SCP (``medseg listen``) that files every instance it receives
under ``spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

An instance is acknowledged only after it is on disk (written to a temporary name and renamed), so
a sender that got "success" never loses an image, even if medseg is killed right after. Folder
and file names are UIDs only (never patient data). C-ECHO is answered too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import ConfigError
from medseg.pacs.archive import instance_file_name, save_instance

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES = 0x0000, 0xA700


class StorageServer:
    """A threaded C-STORE SCP writing into ``spool``. ``allowed`` limits the calling AE titles (any when empty)."""

    def __init__(self, spool: Path, ae_title: str, host: str, port: int, allowed: Sequence[str] = ()) -> None:
        self.spool = Path(spool)
        self.ae_title, self.host, self.port, self.allowed = ae_title, host, port, tuple(allowed)
        self.received = 0
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Start listening in background threads; ConfigError when the port cannot be bound."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        from medseg.pacs.dimse import VERIFICATION

        self.spool.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(VERIFICATION)
        if self.allowed:
            ae.require_calling_aet = list(self.allowed)
        try:
            self._server = ae.start_server(
                (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror}); choose another --port"
            ) from None
        log.info("listening as %s on %s:%d, filing instances under %s", self.ae_title, self.host, self.port, self.spool)

    def stop(self) -> None:
        """Stop listening (associations in progress are aborted)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            folder = (
                self.spool
                / _uid_name(ds.get("StudyInstanceUID"), "study")
                / _uid_name(ds.get("SeriesInstanceUID"), "series")
            )
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self.received += 1
                number = self.received
            save_instance(ds, folder, f"instance-{number}")
        except Exception as exc:  # tell the sender, keep serving
            log.warning("could not file a received instance (%s); the sender was told to retry", type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS


def _uid_name(value: object, fallback: str) -> str:
    """A folder name from a UID (only digits and dots), else ``fallback``."""
    return instance_file_name(str(value or ""), fallback)[: -len(".dcm")]
