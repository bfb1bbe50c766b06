"""``python -m bevdistill ...`` runs the command-line interface (see :mod:`bevdistill.cli`)."""

import sys

from bevdistill.cli import main

sys.exit(main())
