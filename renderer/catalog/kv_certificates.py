"""Certificates and ACME challenges kept in Consul KV, as data (pure): where each piece is, how a key is sealed,
when a certificate is due.

Under the prefix (``--kv-prefix``, default ``consul-nginx-sync``):

* ``PREFIX/certs/HOST/chain``: the certificate and its chain, PEM;
* ``PREFIX/certs/HOST/key``: its private key, PEM, or sealed (below);
* ``PREFIX/certs/HOST/source``: ``acme`` (ordered by the fleet's issuer) or
  ``import`` (``renderer certs import``);
* ``PREFIX/acme/account``: the fleet's ACME account, its key sealed like a
  certificate's, JSON;
* ``PREFIX/acme/challenges/TOKEN``: the key authorization every nginx
  answers at ``/.well-known/acme-challenge/TOKEN``, for any host name;
* ``PREFIX/acme/lock``: held by the issuer's Consul session.

**Sealing.** With ``--cert-encryption-key FILE`` (32 random bytes, base64),
every private key is written ``sealed:aes-256-gcm:`` + base64(12-byte nonce
+ ciphertext), with its KV path as the associated data: a sealed key copied
to another host's path does not open. Without it keys are PEM, and the
prefix must be kept readable by the renderers only (docs/routes.md gives
the ACL policy).

**Renewal** is due when a third of the lifetime is left, and at 30 days
left at the latest (a 90-day certificate: 30 days either way).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from pathlib import Path

from .kv import KvSnapshot
from renderer.errors import ConfigError

SOURCES = ("acme", "import")
SEALED = "sealed:aes-256-gcm:"
RENEW_AT_LATEST = 30 * 86400
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")          # RFC 8555 8.3: base64url, at least 128 bits
_KEY_AUTHORIZATION = re.compile(r"^[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{43}$")  # token.thumbprint(SHA-256)
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


class CertificateProblem(ValueError):
    """A certificate, key or challenge in KV that cannot be used; the message names it."""


def certs_path(prefix: str, host: str = "") -> str:
    return f"{prefix}/certs/{host}/" if host else f"{prefix}/certs/"


def challenges_path(prefix: str) -> str:
    return f"{prefix}/acme/challenges/"


def account_path(prefix: str) -> str:
    return f"{prefix}/acme/account"


def lock_path(prefix: str) -> str:
    return f"{prefix}/acme/lock"


class Sealer:
    """AES-256-GCM for private keys in KV; ``Sealer(None)`` leaves them as PEM (and opens only PEM)."""

    def __init__(self, key: bytes | None):
        # cryptography is imported where a key is used: every renderer reads this module, few seal (30 ms)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(key) if key else None

    @classmethod
    def from_file(cls, path: str | None) -> "Sealer":
        if not path:
            return cls(None)
        try:
            key = base64.b64decode(Path(path).read_text().strip(), validate=True)
        except (OSError, binascii.Error, ValueError) as error:
            raise ConfigError(f"--cert-encryption-key {path}: cannot be read as base64 ({error}); make one with "
                              "'head -c 32 /dev/urandom | base64'") from None
        if len(key) != 32:
            raise ConfigError(f"--cert-encryption-key {path}: holds {len(key)} bytes, AES-256 needs 32")
        return cls(key)

    @property
    def sealing(self) -> bool:
        return self._aead is not None

    def seal(self, path: str, pem: str) -> str:
        if self._aead is None:
            return pem
        nonce = os.urandom(12)
        return SEALED + base64.b64encode(nonce + self._aead.encrypt(nonce, pem.encode(), path.encode())).decode()

    def open(self, path: str, value: str) -> str:
        if not value.startswith(SEALED):
            return value
        if self._aead is None:
            raise CertificateProblem(f"{path} is sealed and this renderer has no --cert-encryption-key")
        try:
            raw = base64.b64decode(value[len(SEALED):], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], path.encode()).decode()
        except Exception:  # noqa: BLE001 - a wrong key, a value cut short: the same for the operator
            raise CertificateProblem(f"{path} does not open with this --cert-encryption-key (another fleet key, "
                                     "or the value was changed)") from None


@dataclasses.dataclass(frozen=True)
class StoredCertificate:
    host: str
    chain: str       # PEM
    key: str         # PEM, opened
    source: str      # acme | import
    not_before: float
    not_after: float

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before


def validity(chain_pem: str) -> tuple[float, float]:
    """(not before, not after) of the first certificate of ``chain_pem``, as Unix times."""
    try:
        from cryptography import x509
        leaf = x509.load_pem_x509_certificate(chain_pem.encode())
    except ValueError as error:
        raise CertificateProblem(f"is not a PEM certificate ({error})") from None
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


def stored_certificates(kv: KvSnapshot | None, prefix: str,
                        sealer: Sealer) -> tuple[dict[str, StoredCertificate], dict[str, str]]:
    """The certificates under ``PREFIX/certs/``, and {host: one line} for each that cannot be used."""
    if kv is None:
        return {}, {}
    base = certs_path(prefix)
    parts: dict[str, dict[str, tuple[str, str]]] = {}
    for path, value in kv.tree(base):
        host, _, name = path[len(base):].partition("/")
        parts.setdefault(host, {})[name] = (path, value)
    found, problems = {}, {}
    for host, pieces in sorted(parts.items()):
        try:
            if not _HOST.match(host):
                raise CertificateProblem("is not a host name")
            missing = [name for name in ("chain", "key") if name not in pieces]
            if missing:
                raise CertificateProblem(f"has no {' or '.join(missing)}")
            source = pieces.get("source", ("", "import"))[1].strip() or "import"
            if source not in SOURCES:
                raise CertificateProblem(f"source {source!r} is not one of {', '.join(SOURCES)}")
            chain = pieces["chain"][1]
            key = sealer.open(*pieces["key"])
            if "PRIVATE KEY-----" not in key:
                raise CertificateProblem("key is not a PEM private key")
            not_before, not_after = validity(chain)
        except CertificateProblem as problem:
            problems[host] = f"certificate {base}{host}/ {problem}: not used"
            continue
        found[host] = StoredCertificate(host, chain, key, source, not_before, not_after)
    return found, problems


def challenges(kv: KvSnapshot | None, prefix: str) -> tuple[tuple[str, str], ...]:
    """(token, key authorization) of every pending http-01 challenge; anything else there is left out."""
    if kv is None:
        return ()
    base = challenges_path(prefix)
    return tuple((path[len(base):], value.strip()) for path, value in kv.tree(base)
                 if _TOKEN.match(path[len(base):]) and _KEY_AUTHORIZATION.match(value.strip())
                 and value.strip().startswith(path[len(base):] + "."))


def sources(kv: KvSnapshot | None, prefix: str) -> tuple[tuple[str, str], ...]:
    """(host, acme | import) of every certificate KV holds, read without opening it: what the status shows."""
    if kv is None:
        return ()
    base = certs_path(prefix)
    return tuple((path[len(base):].split("/", 1)[0], value.strip()) for path, value in kv.tree(base)
                 if path.endswith("/source") and value.strip() in SOURCES)


def renewal_due(certificate: StoredCertificate, now: float) -> bool:
    left = certificate.not_after - now
    return left <= min(certificate.lifetime / 3, RENEW_AT_LATEST)
