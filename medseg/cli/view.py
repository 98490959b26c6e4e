"""``medseg view OUT``: look at results in a browser (the batch report or the cases' NiiVue viewers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``view`` parser."""
    p = subparsers.add_parser(
        "view",
        help="serve an output folder on 127.0.0.1 and print the address of its report or viewer pages",
        description="Serve OUT (from 'medseg predict' or 'medseg batch') on 127.0.0.1 and print the address to "
        "open: the batch report, else each case's interactive NiiVue viewer. Everything is local: the viewer "
        "needs no network. Stop with Ctrl-C. The pages also open straight from the folder (file://).",
    )
    p.add_argument("folder", type=Path, metavar="OUT", help="output folder of 'medseg predict' or 'medseg batch'")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="also open the address in the default browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the folder until interrupted; returns 0."""
    from medseg.errors import InputError
    from medseg.viewer.serve import address, entry_pages, make_server

    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the output folder of 'medseg predict' or 'medseg batch'")
    pages = entry_pages(folder)
    server = make_server(folder, args.port)
    urls = [address(server, page) for page in pages]
    print(f"serving {folder} on {address(server)} (Ctrl-C to stop); open:", flush=True)
    for url in urls[:20]:
        print(f"  {url}", flush=True)
    if len(urls) > 20:
        print(f"  ... and {len(urls) - 20} more viewer pages", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(urls[0])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
