"""The client commands' TLS options: flags with ``CREDITGATE_CLIENT_TLS_*`` defaults.

``creditgate.wiring.cli`` adds them to its top-level parser; ``client_tls(args)`` is the
``ClientTLS`` the SDK (``creditgate.client``) connects with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from creditgate.client.channel import ClientTLS

if TYPE_CHECKING:
    import argparse


def add_arguments(root: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = root.add_argument_group("TLS to the sidecar (any of these turns it on)")
    g.add_argument(
        "--tls",
        action="store_true",
        default=env("CREDITGATE_CLIENT_TLS", "").lower() in ("1", "true", "yes"),
        help="TLS trusting the system CAs (CREDITGATE_CLIENT_TLS=1)",
    )
    g.add_argument("--tls-ca", default=env("CREDITGATE_CLIENT_TLS_CA"), help="CA bundle (PEM)")
    g.add_argument(
        "--tls-cert", default=env("CREDITGATE_CLIENT_TLS_CERT"), help="client certificate: mTLS"
    )
    g.add_argument("--tls-key", default=env("CREDITGATE_CLIENT_TLS_KEY"), help="its key (PEM)")
    g.add_argument(
        "--tls-server-name",
        default=env("CREDITGATE_CLIENT_TLS_SERVER_NAME", ""),
        help="name to check the server certificate against, if not the target's host",
    )


def client_tls(args: argparse.Namespace) -> ClientTLS | None:
    """The TLS the options ask for; None (plaintext) when none is set."""
    paths = (args.tls_ca, args.tls_cert, args.tls_key)
    if not (args.tls or args.tls_server_name or any(paths)):
        return None
    ca, cert, key = (Path(p) if p else None for p in paths)
    return ClientTLS(ca, cert, key, args.tls_server_name)
