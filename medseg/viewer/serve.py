"""``medseg view OUT``: serve an output folder on 127.0.0.1 so a browser can open its pages.

The pages also open straight from the folder (file://); serving helps where a browser refuses
local files or the folder lies on another machine (``ssh -L`` to the printed port). Only
127.0.0.1 is bound, only files inside the folder are served (Python's ``http.server``), and the
server runs until it is interrupted.
"""

from __future__ import annotations

import functools
import http.server
import logging
from pathlib import Path
from urllib.parse import quote

from medseg.errors import InputError, OutputError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
REPORT_NAME = "report.html"
PAGE_SUFFIX = "_viewer.html"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves one folder; request lines go to the debug log instead of stderr."""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def viewer_pages(folder: Path) -> list[Path]:
    """Every ``*_viewer.html`` below ``folder``, sorted by path."""
    return sorted(Path(folder).rglob(f"*{PAGE_SUFFIX}"))


def entry_pages(folder: Path) -> list[str]:
    """URL paths (relative to the folder) worth opening: the batch report, else each viewer page.

    Raises :class:`InputError` when the folder holds neither.
    """
    folder = Path(folder)
    if (folder / REPORT_NAME).is_file():
        return [REPORT_NAME]
    pages = [quote(p.relative_to(folder).as_posix()) for p in viewer_pages(folder)]
    if not pages:
        raise InputError(
            f"{folder} holds no report.html and no *_viewer.html page; pass the output folder of 'medseg predict' "
            "or 'medseg batch' (run without --no-viewer, with the NiiVue bundle installed)"
        )
    return pages


def make_server(folder: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``folder`` bound to 127.0.0.1:``port`` (0: any free port), not yet serving.

    Raises :class:`OutputError` when the port cannot be bound.
    """
    handler = functools.partial(_Handler, directory=str(Path(folder).resolve()))
    try:
        return http.server.ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        raise OutputError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}); pass another --port (0 picks a free one)"
        ) from None


def address(server: http.server.ThreadingHTTPServer, path: str = "") -> str:
    """``http://127.0.0.1:PORT/path`` of a bound server."""
    return f"http://{HOST}:{server.server_address[1]}/{path}"
