"""The certificates nginx serves, with their expiry: the status page's list and
``renderer_certificate_expiry_timestamp_seconds{host,source}`` (alert on it before the day comes).

For every host of the table nginx runs with a certificate: its source
(``acme`` or ``import``, the fleet's from Consul KV; ``file``, the
operator's own in ``cert_dir``) and when it expires. Each certificate file
is read once per version (the table names it), not on every scrape.
"""

from __future__ import annotations

import time

from prometheus_client.core import GaugeMetricFamily

from renderer.catalog.kv_certificates import CertificateProblem, validity
from renderer.routes.model import RouteTable


class ServedCertificates:
    def __init__(self):
        self._expiry: dict[tuple[str, str], float | None] = {}  # (path, version) -> not after

    def rows(self, table: RouteTable | None) -> list[tuple[str, str, float]]:
        """(host, source, not after) of every certificate nginx serves, by host."""
        if table is None:
            return []
        sources = dict(table.certificate_sources)
        rows, seen = [], set()
        for host in table.hosts:
            certificate = host.certificate
            if certificate is None or not host.https:
                continue
            key = (certificate.certificate, certificate.version)
            seen.add(key)
            if key not in self._expiry:
                self._expiry[key] = _not_after(certificate.certificate)
            if self._expiry[key] is not None:
                rows.append((host.name, sources.get(host.name, "file"), self._expiry[key]))
        for gone in set(self._expiry) - seen:
            del self._expiry[gone]
        return rows


def _not_after(path: str) -> float | None:
    try:
        with open(path) as handle:
            return validity(handle.read())[1]
    except (OSError, CertificateProblem):
        return None


class CertificateCollector:
    def __init__(self, certificates: ServedCertificates, table):
        self.certificates, self.table = certificates, table

    def describe(self):
        return []

    def collect(self):
        family = GaugeMetricFamily("renderer_certificate_expiry_timestamp_seconds",
                                   "When each certificate nginx serves expires (Unix time), by host and source: "
                                   "acme or import (the fleet's, from Consul KV), file (cert_dir's own)",
                                   labels=["host", "source"])
        for host, source, not_after in self.certificates.rows(self.table()):
            family.add_metric([host, source], not_after)
        yield family


def days_left(not_after: float, now: float | None = None) -> float:
    return (not_after - (time.time() if now is None else now)) / 86400
