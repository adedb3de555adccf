"""Certificates from KV written into this node's certificate directory (I/O): ``HOST.crt``, ``HOST.key`` (0600).

The route table finds certificates in ``cert_dir``
(:mod:`renderer.catalog.certificates`); a certificate kept in KV is written
there, and from then on it is a pair like any other: its version changes
when it is renewed, and nginx is reloaded to load it. An operator's own
pair in ``cert_dir`` wins: the renderer writes a host's files only when
they are absent or were written by it (named, with their digest, in
``.renderer-kv-certs``), and a certificate removed from KV takes the files
it wrote with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from agentkit.files import remove, write_atomically

from renderer.catalog.kv_certificates import StoredCertificate

log = logging.getLogger("renderer")
MANIFEST = ".renderer-kv-certs"


def _digest(chain: str, key: str) -> str:
    return hashlib.sha256(f"{chain}\0{key}".encode()).hexdigest()


class CertificateFiles:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _manifest(self) -> dict[str, str]:
        try:
            data = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def apply(self, stored: dict[str, StoredCertificate], unreadable: frozenset[str] = frozenset()) -> bool:
        """Bring the directory to ``stored`` (host -> certificate); True when a file changed. The files of
        the ``unreadable`` hosts (in KV, but not usable now: sealed with another key, cut short) are kept:
        nginx keeps serving what it had."""
        if not stored and not (self.directory / MANIFEST).exists():
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        written = self._manifest()
        changed = False
        for host, certificate in sorted(stored.items()):
            digest = _digest(certificate.chain, certificate.key)
            crt, key = self.directory / f"{host}.crt", self.directory / f"{host}.key"
            if written.get(host) == digest and crt.exists() and key.exists():
                continue
            if host not in written and (crt.exists() or key.exists()):
                log.warning("certificate for %s in KV not written: %s is the operator's own, which wins",
                            host, crt if crt.exists() else key)
                continue
            write_atomically(key, certificate.key.encode(), mode=0o600)
            write_atomically(crt, certificate.chain.encode())
            written[host] = digest
            changed = True
            log.info("certificate for %s from KV (%s) written to %s", host, certificate.source, crt)
        for host in [h for h in written if h not in stored and h not in unreadable]:
            remove(self.directory / f"{host}.crt")
            remove(self.directory / f"{host}.key")
            del written[host]
            changed = True
            log.info("certificate for %s removed from KV: its files in %s removed", host, self.directory)
        if changed:
            write_atomically(self.directory / MANIFEST, json.dumps(written, sort_keys=True).encode(), mode=0o600)
        return changed
