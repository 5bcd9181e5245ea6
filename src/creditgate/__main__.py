"""``python -m creditgate``: the ``creditgate`` command."""

import sys

from creditgate.cli import main

sys.exit(main())
