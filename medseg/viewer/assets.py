"""The viewer's static files and where they come from.

``static/niivue.umd.js`` is NiiVue's prebuilt UMD bundle, put there by the build step
``npm ci --prefix js`` (a pinned ``@niivue/niivue`` from the npm registry, checked against the
lockfile's hash); it is gitignored and shipped in the wheel as package data. The UMD build is a
classic script, so a page opened from file:// can load it (browsers refuse ES modules there).
``viewer.js``, ``viewer.css`` and NiiVue's licence are medseg's own files.

Every output folder with viewer pages gets a copy in ``viewer_assets/`` (about 2.3 MB), so the
folder can be copied to a machine without network and opened there.
"""

from __future__ import annotations

import json
from pathlib import Path

from medseg.errors import ConfigError
from medseg.io.atomic import atomic_write_bytes, ensure_writable_dir

STATIC = Path(__file__).resolve().parent / "static"
BUNDLE_NAME = "niivue.umd.js"
ASSET_NAMES = (BUNDLE_NAME, "viewer.js", "viewer.css", "NIIVUE_LICENSE.txt")
#: The folder, beside the viewer pages, that holds the assets.
ASSET_DIR = "viewer_assets"
BUILD_HINT = "run 'npm ci --prefix js' in the medseg source folder (README: set up), then reinstall medseg"


class ViewerUnavailable(ConfigError):
    """The NiiVue bundle was not built into this installation."""


def bundle_available() -> bool:
    """True when the NiiVue bundle is installed beside medseg's viewer files."""
    return (STATIC / BUNDLE_NAME).is_file()


def niivue_version() -> str | None:
    """The installed NiiVue version (from the build step's ``niivue.json``), or None."""
    try:
        return str(json.loads((STATIC / "niivue.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def require_bundle() -> Path:
    """The NiiVue bundle's path; :class:`ViewerUnavailable` saying how to build it when missing."""
    path = STATIC / BUNDLE_NAME
    if not path.is_file():
        raise ViewerUnavailable(f"the NiiVue viewer bundle is not installed ({path} is missing); {BUILD_HINT}")
    return path


def install_assets(folder: Path) -> Path:
    """Copy the viewer assets into ``folder/viewer_assets`` (only files that differ); returns that folder.

    Needs the bundle (:func:`require_bundle`). Each file is written atomically, so workers that
    install into one folder at once leave complete files.
    """
    require_bundle()
    target = Path(folder) / ASSET_DIR
    ensure_writable_dir(target)
    for name in ASSET_NAMES:
        data = (STATIC / name).read_bytes()
        existing = target / name
        if not existing.is_file() or existing.stat().st_size != len(data) or existing.read_bytes() != data:
            atomic_write_bytes(existing, data)
    return target
