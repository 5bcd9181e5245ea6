"""The credits view (issue 20 §5): balance, lifetime totals, auto top-up, history and usage.

Everything here reads the ledger, never Redis, so it answers what the worker has applied; each
view carries that lag (``Lag``). ``Credits`` is the Python API; the gRPC servicer
(``transport/credits.py``) only translates it. docs/CREDITS.md says how far behind it can be.
"""

from creditgate.credits.service import Credits
from creditgate.credits.view import (
    CreditsView,
    Lag,
    Movement,
    MovementPage,
    PoolUsage,
    UsageRow,
    UsageView,
    movement_type,
)

__all__ = [
    "Credits",
    "CreditsView",
    "Lag",
    "Movement",
    "MovementPage",
    "PoolUsage",
    "UsageRow",
    "UsageView",
    "movement_type",
]
