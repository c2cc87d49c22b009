"""``python -m skelias``: the command line (see :mod:`skelias.cli`)."""

import sys

from .cli import main

sys.exit(main())
