"""``python -m extraction``: see :mod:`extraction.cli`."""

import sys

from .cli import main

sys.exit(main())
