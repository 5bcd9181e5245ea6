"""``creditgate token create|list|revoke``: manage the tokens file the server reads.

The file is ``--file``, else CREDITGATE_TOKENS_FILE, else ``<data dir>/tokens.json``, which the
server reloads within about a second of a change. ``create`` prints the token once; only its
sha256 is stored, so a lost token is revoked and created again, never recovered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from creditgate.auth.roles import ROLES
from creditgate.auth.tokens import create_token, read_tokens, revoke_token
from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    import argparse


def _path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    from creditgate.wiring.settings import Settings  # noqa: PLC0415 - keep the CLI start light

    from_env: dict[str, Any] = {}  # every field from the environment
    return Settings(**from_env).tokens_path()


def _create(args: argparse.Namespace) -> int:
    accounts = tuple(a.strip() for a in (args.accounts or "").split(",") if a.strip())
    if args.accounts is not None and not accounts:
        # An empty list means "every account": never let an unset shell variable grant that.
        msg = "--accounts names no account; leave it out for a token valid for every account"
        raise ConfigError(msg)
    token = create_token(_path(args), args.name, args.role, accounts)
    print(token)  # noqa: T201 - the command's output, shown this once
    print(f"creditgate: token {args.name!r} ({args.role}) added to {_path(args)}", file=sys.stderr)  # noqa: T201
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = [
        {"name": e.name, "role": e.role, "accounts": list(e.accounts), "created": e.created}
        for e in read_tokens(_path(args))
    ]
    print(json.dumps(rows, indent=2))  # noqa: T201 - the command's output
    return 0


def _revoke(args: argparse.Namespace) -> int:
    revoke_token(_path(args), args.name)
    print(f"creditgate: token {args.name!r} revoked in {_path(args)}", file=sys.stderr)  # noqa: T201
    return 0


def _run(command: argparse.Namespace) -> int:
    try:
        result: int = command.token_func(command)
    except ConfigError as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return result


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="create, list or revoke bearer tokens")
    token.add_argument("--file", help="tokens file (default CREDITGATE_TOKENS_FILE)")
    ops = token.add_subparsers(dest="op", required=True)
    p = ops.add_parser("create", help="add a token and print it (once)")
    p.add_argument("--name", required=True, help="a name for the token's holder, e.g. gateway-eu")
    p.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    p.add_argument("--accounts", default=None, help="comma-separated accounts (default: all)")
    p.set_defaults(func=_run, token_func=_create)
    p = ops.add_parser("list", help="names, roles, accounts and creation times (no secrets)")
    p.set_defaults(func=_run, token_func=_list)
    p = ops.add_parser("revoke", help="remove a token (servers drop it within about a second)")
    p.add_argument("name", help="the token's name, as token list shows it")
    p.set_defaults(func=_run, token_func=_revoke)
