"""Throwaway certificates for TLS tests, made with the ``openssl`` command.

``CertKit(dir)`` makes a CA; ``kit.issue("server", serial=2)`` a key and certificate it signs,
valid for ``localhost`` and ``127.0.0.1``, for both server and client authentication.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_EXTENSIONS = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "no openssl command on PATH"
        raise LookupError(msg)
    subprocess.run([openssl, *args], check=True, capture_output=True)  # noqa: S603 - our args


class CertKit:
    """A CA in ``directory`` and the certificates it issues there."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = Issued(directory / f"{name}.pem", directory / f"{name}.key")
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN=creditgate test {name}",
            "-keyout", str(self.ca.key), "-out", str(self.ca.cert),
        )  # fmt: skip

    def issue(self, name: str, serial: int, common_name: str = "") -> Issued:
        """A key and certificate ``name.pem``/``name.key`` (overwritten if present)."""
        out = Issued(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        csr, ext = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
        ext.write_text(_EXTENSIONS)
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={common_name or name}",
            "-keyout", str(out.key), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
            "-set_serial", str(serial), "-days", "2", "-extfile", str(ext), "-out", str(out.cert),
        )  # fmt: skip
        return out
