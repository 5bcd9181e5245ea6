"""``python -m creditgate.worker [--once|--burst]``: the ledger worker, from the environment."""

from __future__ import annotations

import argparse
import sys

from creditgate.cli_ledger import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m creditgate.worker")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["worker", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
