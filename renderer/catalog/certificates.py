"""The certificate directory as data: which ``HOST.crt``/``HOST.key`` pairs are there, and their versions.

Certificates come from one directory (``--var cert_dir=...``): ``HOST.crt``
and ``HOST.key`` for a host, or ``_.PARENT.crt`` / ``_.PARENT.key`` for every
host directly under PARENT (a wildcard certificate, also what ``*.PARENT``
uses). The daemon scans the directory (:func:`scan`, the only I/O here) when
it starts and whenever a file in it changes, and hands the snapshot to the
route table like the catalog: plain data, compared by value. Each pair's
version (its files' mtimes and sizes) is part of the snapshot, so a renewed
certificate changes the rendered configuration (a comment naming the
version) and nginx is reloaded to load it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType


@dataclasses.dataclass(frozen=True, slots=True)
class Certificate:
    certificate: str  # path of HOST.crt
    key: str          # path of HOST.key
    version: str      # changes when either file does


@dataclasses.dataclass(frozen=True)
class CertificateSet:
    directory: str | None = None
    files: Mapping[str, tuple[int, int] | None] = dataclasses.field(default_factory=dict)  # name -> (mtime_ns,
    # size), or None when present but unreadable

    def find(self, host: str) -> Certificate | str:
        """The pair for ``host``, or why there is none (the files looked for)."""
        if self.directory is None:
            return "no certificate directory (--var cert_dir=...)"
        names = [host.replace("*", "_", 1)] if host.startswith("*.") else [host]
        if not host.startswith("*.") and host.count(".") >= 2:
            names.append("_." + host.split(".", 1)[1])
        problems = []
        for name in names:
            crt, key = self.files.get(f"{name}.crt", False), self.files.get(f"{name}.key", False)
            if crt and key:
                return Certificate(os.path.join(self.directory, f"{name}.crt"),
                                   os.path.join(self.directory, f"{name}.key"),
                                   f"{crt[0]}-{crt[1]}-{key[0]}-{key[1]}")
            for suffix, state in ((".crt", crt), (".key", key)):
                path = os.path.join(self.directory, name + suffix)
                if state is None:
                    problems.append(f"{path} is not readable")
                elif state is False:
                    problems.append(f"{path} not found")
        return "; ".join(problems)


def scan(directory: str | None) -> CertificateSet:
    """The ``*.crt`` and ``*.key`` files of ``directory`` (missing directory: an empty set)."""
    if not directory:
        return CertificateSet()
    files = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return CertificateSet(str(directory), MappingProxyType({}))
    for entry in entries:
        if entry.name.endswith((".crt", ".key")) and not entry.name.startswith("."):
            try:
                stat = entry.stat()
                readable = os.access(entry.path, os.R_OK) and entry.is_file()
            except OSError:
                continue
            files[entry.name] = (stat.st_mtime_ns, stat.st_size) if readable else None
    return CertificateSet(str(Path(directory)), MappingProxyType(files))
