"""Model folders shipped inside the package, named on the command line by their folder name.

``medseg predict -m hippocampus`` resolves to ``medseg/pretrained/hippocampus`` unless a path
``hippocampus`` exists in the current folder (a real path always wins).
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped model folders (folders holding a ``model.json``)."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model.json").is_file())


def resolve_model_path(value: str | Path) -> Path:
    """``value`` as a path if it exists or names a folder path; else the shipped model of that name.

    Needs a path or a bare name. Promises a ``Path``; it is not checked for being a model
    folder here (the model loader says what is wrong with it).
    """
    path = Path(value).expanduser()
    if path.exists() or len(path.parts) != 1:
        return path
    shipped = PRETRAINED_DIR / path.name
    return shipped if (shipped / "model.json").is_file() else path
