"""Write one benchmark's section into docs/benchmarks.md between its own markers."""

from __future__ import annotations

import datetime as _dt
import platform
import re
from pathlib import Path

from medseg.io.atomic import atomic_write_text

DEFAULT_DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


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


def read_section(name: str, doc: Path = DEFAULT_DOC) -> str:
    """The text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` ("" when absent)."""
    text = doc.read_text() if doc.exists() else ""
    match = re.search(re.escape(f"<!-- bench:{name} -->") + r"(.*?)" + re.escape(f"<!-- /bench:{name} -->"), text, re.S)
    return match.group(1) if match else ""


def update_section(name: str, markdown: str, doc: Path = DEFAULT_DOC) -> None:
    """Replace (or append) the block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nFigures written by `python -m medseg.benchmarks.*`.\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
