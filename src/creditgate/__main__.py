"""``python -m creditgate``: the ``creditgate`` command."""

import sys

from creditgate.wiring.cli import main

sys.exit(main())
