"""Bearer tokens: a file of hashed tokens, written by the CLI and reloaded by the server.

The file (``CREDITGATE_TOKENS_FILE``, JSON; YAML is read too) holds, per token, its name, role,
the accounts it is limited to (empty: all) and the sha256 of the token, never the token itself:
a token is 32 random bytes, so its hash cannot be searched back. The server checks the file's
identity (inode, size, mtime) at most once a second while calls arrive and reloads it when it
changed, so a revocation takes effect within about a second without a restart. A file that no
longer parses keeps the tokens loaded before it, with an error in the log each time it is checked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from creditgate.auth.roles import ROLES, Role
from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger("creditgate.auth")
RELOAD_CHECK_S = 1.0
_PREFIX = "cg_"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    accounts: tuple[str, ...] = ()
    created: str = ""

    def allows(self, account: str) -> bool:
        return not self.accounts or account in self.accounts


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _entry(raw: object, where: str) -> TokenEntry:
    if not isinstance(raw, dict):
        msg = f"{where}: each token is a mapping of name, role, sha256, accounts, created"
        raise ConfigError(msg)
    role, name, sha = raw.get("role"), raw.get("name"), raw.get("sha256")
    if role not in ROLES:
        msg = f"{where}: token {name!r} has role {role!r}; use one of {', '.join(ROLES)}"
        raise ConfigError(msg)
    if not isinstance(name, str) or not isinstance(sha, str) or len(sha) != 64:  # noqa: PLR2004 - hex sha256
        msg = f"{where}: a token needs a name and the 64-hex-digit sha256 of the token"
        raise ConfigError(msg)
    accounts = raw.get("accounts") or ()
    if not isinstance(accounts, list | tuple) or not all(
        isinstance(a, str) and a for a in accounts
    ):
        msg = f"{where}: token {name!r}: accounts must be a list of account ids (empty: all)"
        raise ConfigError(msg)
    return TokenEntry(
        name, role, sha.lower(), tuple(str(a) for a in accounts), str(raw.get("created", ""))
    )


def read_tokens(path: Path) -> list[TokenEntry]:
    """The entries of a tokens file; a missing file is no tokens. ConfigError if it is bad."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        msg = f"cannot read tokens file {path}: {exc}"
        raise ConfigError(msg) from exc
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        msg = f"tokens file {path} is not valid JSON/YAML: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
        msg = f"tokens file {path}: expected a mapping with a 'tokens' list"
        raise ConfigError(msg)
    entries = [_entry(raw, str(path)) for raw in data.get("tokens", [])]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        msg = f"tokens file {path}: token names must be unique"
        raise ConfigError(msg)
    return entries


def write_tokens(path: Path, entries: list[TokenEntry]) -> None:
    """Replace the file atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"tokens": [{**asdict(e), "accounts": list(e.accounts)} for e in entries]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(body, out, indent=2)
        out.write("\n")
    Path(tmp).replace(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One read-modify-write of the tokens file at a time (a lock file beside it).

    Without it a revoke racing a create could write the revoked token back, and two creates
    could each drop the other's token.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_token(path: Path, name: str, role: str, accounts: tuple[str, ...] = ()) -> str:
    """Add a token to the file and return it: the only time it is ever shown."""
    if not name or not set(name) <= _NAME_CHARS:
        msg = f"token name {name!r}: use lowercase letters, digits, '-', '_' and '.'"
        raise ConfigError(msg)
    if role not in ROLES:
        msg = f"role {role!r}: use one of {', '.join(ROLES)}"
        raise ConfigError(msg)
    token = _PREFIX + secrets.token_urlsafe(32)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with _locked(path):
        entries = read_tokens(path)
        if any(e.name == name for e in entries):
            msg = f"a token named {name!r} exists already; revoke it first or pick another name"
            raise ConfigError(msg)
        entries.append(TokenEntry(name, role, digest(token), accounts, created))
        write_tokens(path, entries)
    return token


def revoke_token(path: Path, name: str) -> None:
    with _locked(path):
        entries = read_tokens(path)
        kept = [e for e in entries if e.name != name]
        if len(kept) == len(entries):
            msg = f"no token named {name!r} in {path} (see `creditgate token list`)"
            raise ConfigError(msg)
        write_tokens(path, kept)


@dataclass
class TokenStore:
    """The server's view of the tokens file, reloaded when the file changes."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    _entries: list[TokenEntry] = field(default_factory=list)
    _identity: tuple[int, int, int] | None = None
    _checked: float = float("-inf")

    def __post_init__(self) -> None:
        self._entries = read_tokens(self.path)  # a bad file at start-up stops the start
        self._identity = self._stat()
        self._checked = self.clock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self) -> None:
        """Reload the file if it changed since the last check."""
        self._checked = self.clock()
        identity = self._stat()
        if identity == self._identity:
            return
        try:
            self._entries = read_tokens(self.path)
        except ConfigError as exc:
            log.error("keeping the tokens loaded before: %s", exc)  # noqa: TRY400 - one line
            return
        self._identity = identity
        log.info("tokens file %s reloaded: %d tokens", self.path, len(self._entries))

    def entries(self) -> list[TokenEntry]:
        return list(self._entries)

    def lookup(self, token: str) -> TokenEntry | None:
        if self.clock() - self._checked >= RELOAD_CHECK_S:
            self.refresh()
        presented = digest(token)
        found = None
        for entry in self._entries:  # every entry, so the time taken does not depend on which
            if hmac.compare_digest(entry.sha256, presented):
                found = entry
        return found
