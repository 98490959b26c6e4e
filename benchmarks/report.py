"""Write one benchmark's section into docs/benchmarks.md between its own markers (the
section-replacing writer every benchmark script uses)."""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import re
from pathlib import Path

from benchmarks.repo import BENCHMARKS_DOC
from medseg.io.atomic import atomic_write_text


def machine_line() -> str:
    """One line naming the machine, date and library versions the figures were measured with."""
    import os

    import numpy
    import torch

    return (
        f"Measured {_dt.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {numpy.__version__}."
    )


def add_no_doc_option(parser: argparse.ArgumentParser) -> None:
    """Give a benchmark script the ``--no-doc`` flag: print the figures only and leave
    docs/benchmarks.md as it is (``args.no_doc``)."""
    parser.add_argument("--no-doc", action="store_true", help="print only; do not update docs/benchmarks.md")


def read_section(name: str, doc: Path = BENCHMARKS_DOC) -> str:
    """The text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` ("" when absent)."""
    text = doc.read_text() if doc.exists() else ""
    match = re.search(re.escape(f"<!-- bench:{name} -->") + r"(.*?)" + re.escape(f"<!-- /bench:{name} -->"), text, re.S)
    return match.group(1) if match else ""


def update_section(name: str, markdown: str, doc: Path = BENCHMARKS_DOC) -> None:
    """Replace (or append) the block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nFigures written by `python -m benchmarks.*`.\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
