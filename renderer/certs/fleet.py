"""This renderer's part in the fleet's certificates: KV's certificates written into its ``cert_dir``, and with
``--acme-directory`` its issuer (:mod:`.issuer`), which works while it holds the fleet's lock.

The daemon hands it every KV snapshot of the prefix (:meth:`FleetCertificates.kv_changed`:
a certificate added, renewed or removed in KV changes the files, which the
daemon rescans); the issuer asks for the hosts nginx serves waiting for a
certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agentkit.consul import Consul

from renderer.catalog import kv_certificates
from renderer.catalog.kv import KvSnapshot
from renderer.catalog.kv_certificates import Sealer

from .files import CertificateFiles
from .issuer import Issuer, IssuerSettings, IssuerThread

log = logging.getLogger("renderer")


class FleetCertificates:
    def __init__(self, prefix: str, cert_dir: str | None, sealer: Sealer):
        self.prefix, self.sealer = prefix, sealer
        self.files = CertificateFiles(Path(cert_dir)) if cert_dir else None
        self._problems: tuple[str, ...] = ()
        self._tree: tuple | None = None  # the KV pairs written last: unchanged, nothing to do
        self.thread: IssuerThread | None = None

    def kv_changed(self, kv: KvSnapshot | None) -> bool:
        """Bring ``cert_dir`` to KV's certificates; True when a file changed."""
        base = kv_certificates.certs_path(self.prefix)
        if kv is None or not kv.covers(base):
            return False
        tree = kv.tree(base)
        if tree == self._tree:
            return False
        self._tree = tree
        return self.write(*kv_certificates.stored_certificates(kv, self.prefix, self.sealer))

    def write(self, stored: dict, problems: dict[str, str]) -> bool:
        """``cert_dir`` brought to ``stored``, what cannot be used kept and said; True when a file changed."""
        if tuple(problems.values()) != self._problems:  # said once, not on every KV change
            for problem in problems.values():
                log.warning("%s; its files here, if any, are kept", problem)
            self._problems = tuple(problems.values())
        return self.files.apply(stored, frozenset(problems)) if self.files is not None else False

    def start_issuer(self, consul: Consul, directory: str, email: str | None, ca_bundle: str | None, node: str,
                     renderers: Callable[[], list[str | None]], wanted: Callable[[], tuple[str, ...]]) -> None:
        """Take part in the election of the fleet's issuer (and issue while elected): ``wanted()`` names the
        hosts nginx serves waiting for a certificate, ``renderers()`` the live renderers' status pages."""
        settings = IssuerSettings(directory, email, ca_bundle, self.prefix, node, self.sealer)
        from .acme_server import AcmeServer  # certbot's acme and josepy: imported where ACME is on (60 ms)
        issuer = Issuer(consul, settings, AcmeServer(directory, email, ca_bundle), wanted, renderers)
        self.thread = IssuerThread(issuer).start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
