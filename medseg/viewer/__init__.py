"""Looking at results: an interactive NiiVue viewer per case, and a local server for output folders.

    assets.py   the NiiVue bundle (built from the npm registry into static/) and the viewer's own
                script and style, copied into an output folder's ``viewer_assets/``
    page.py     ``<case>_viewer.html``: the image and labels embedded in the page, so it opens
                from file:// on a machine without network
    serve.py    ``medseg view OUT``: the folder served on 127.0.0.1

NiiVue (``@niivue/niivue``, BSD-2) draws everything; static/viewer.js only adds the controls.
"""

from medseg.viewer.assets import ASSET_DIR, ViewerUnavailable, bundle_available, install_assets
from medseg.viewer.page import case_viewer_html, write_case_viewer

__all__ = [
    "ASSET_DIR",
    "ViewerUnavailable",
    "bundle_available",
    "case_viewer_html",
    "install_assets",
    "write_case_viewer",
]
