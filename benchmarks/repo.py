"""Where the benchmarks find files: the repository root of this checkout and the shared data beside it.

Every benchmark path goes through here, so the scripts work from any current folder as long as
they are run from a source checkout (``python -m benchmarks.NAME`` in the repository root).
"""

from __future__ import annotations

from pathlib import Path

#: the repository root (the folder holding ``pyproject.toml``, ``benchmarks/`` and ``docs/``)
ROOT = Path(__file__).resolve().parent.parent
#: the real public data, cloned beside the checkout as ``../shared/data`` (as the tests expect)
SHARED_DATA = ROOT.parent / "shared" / "data"


def repo_path(*parts: str) -> Path:
    """``ROOT / parts``: a file or folder of the checkout (e.g. ``repo_path("pipelines", "x.toml")``).

    Needs nothing; promises an absolute path (not checked for existence)."""
    return ROOT.joinpath(*parts)


def shared_data(*parts: str) -> Path:
    """``../shared/data / parts`` beside the checkout; absolute, not checked for existence."""
    return SHARED_DATA.joinpath(*parts)


#: the page every benchmark writes its section into
BENCHMARKS_DOC = repo_path("docs", "benchmarks.md")
