"""A test CA and host certificates signed by it (openssl), laid out as the renderer's cert_dir expects.

``CertificateAuthority(directory).issue("api.example.org")`` writes
``api.example.org.crt`` / ``.key`` into the cert directory; ``issue("*.example.org")``
writes the wildcard pair ``_.example.org.crt`` / ``.key``. Clients verify
nginx with :attr:`CertificateAuthority.ca`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class CertificateAuthority:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.cert_dir = self.directory / "certs"
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self.directory / "ca.crt", self.directory / "ca.key"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=renderer test CA",
                 "-keyout", str(self.ca_key), "-out", str(self.ca), cwd=self.directory)

    def issue(self, name: str, directory: Path | None = None, client: bool = False) -> tuple[Path, Path]:
        """A certificate for ``name`` (SAN DNS:name, and IP:127.0.0.1), signed by this CA."""
        directory = Path(directory or self.cert_dir)
        base = name.replace("*", "_", 1)
        key, request, cert = directory / f"{base}.key", directory / f"{base}.csr", directory / f"{base}.crt"
        extensions = directory / f"{base}.ext"
        usage = "clientAuth" if client else "serverAuth"
        extensions.write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
                 "-out", str(request), cwd=directory)
        _openssl("x509", "-req", "-in", str(request), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                 "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert), cwd=directory)
        request.unlink()
        extensions.unlink()
        return cert, key
