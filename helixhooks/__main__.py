"""``python -m helixhooks``: the same command as the ``helixhooks`` script."""

import sys

from .cli import main

sys.exit(main())
