"""Test certificates for TLS migration: a CA and server/client certificates in QEMU's layout.

Used by the TLS tests and the migration benchmark. The ``openssl`` command line makes
them (a few hundred ms per directory); nothing here is imported by the daemon.

A directory made by :func:`make_creds_dir` holds what a ``tls-creds-x509`` object with
``dir=`` reads: ``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``,
``client-cert.pem``, ``client-key.pem``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def openssl_available() -> bool:
    """True if the ``openssl`` command is installed."""
    return shutil.which("openssl") is not None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass(frozen=True)
class CertAuthority:
    """A self-signed CA: ``cert`` and ``key`` PEM files."""

    cert: Path
    key: Path


def make_ca(where: Path, name: str = "qmpd test CA") -> CertAuthority:
    """A new CA (EC P-256 key) in ``where`` (created)."""
    where.mkdir(parents=True, exist_ok=True)
    key, cert = where / "ca-key.pem", where / "ca-cert.pem"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key),
             cwd=where)
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "30",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    return CertAuthority(cert, key)


def _issue(ca: CertAuthority, where: Path, stem: str, cn: str, hosts: list[str],
           usage: str) -> None:
    key, csr, cert = where / f"{stem}-key.pem", where / f"{stem}.csr", where / f"{stem}-cert.pem"
    ext = where / f"{stem}.ext"
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
    if sans:
        lines.append(f"subjectAltName={sans}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key),
             cwd=where)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
             cwd=where)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(ext),
             cwd=where)
    csr.unlink()
    ext.unlink()


def make_creds_dir(where: Path, ca: CertAuthority, hosts: tuple[str, ...] = (
        "localhost", "127.0.0.1")) -> Path:
    """``where`` (created) with QEMU's file names: the CA's certificate, a server
    certificate for ``hosts`` and a client certificate, both signed by ``ca``."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert, where / "ca-cert.pem")
    _issue(ca, where, "server", hosts[0] if hosts else "server", list(hosts), "serverAuth")
    _issue(ca, where, "client", "qmpd client", [], "clientAuth")
    return where
