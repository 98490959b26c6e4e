"""``python -m medseg`` is the same as the ``medseg`` command."""

import sys

from medseg.cli import main

sys.exit(main())
