"""Reading and writing the fleet's certificates, account and challenges in Consul KV (I/O, thin).

The layout and what a value may hold are :mod:`renderer.catalog.kv_certificates`'s;
a certificate is written in one transaction (chain, key, source), so no
renderer ever reads a chain with the key of another.
"""

from __future__ import annotations

import base64
import json

from agentkit.consul import Consul, translate_errors

from renderer.catalog import kv_certificates as layout
from renderer.catalog.kv import from_consul_entries
from renderer.catalog.kv_certificates import Sealer, StoredCertificate


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def read_certificates(consul: Consul, prefix: str,
                      sealer: Sealer) -> tuple[dict[str, StoredCertificate], dict[str, str]]:
    base = layout.certs_path(prefix)
    with translate_errors(consul.address):
        answer = consul.get_json(f"/v1/kv/{base}", params={"recurse": "true"}, absent_ok=True)
    return layout.stored_certificates(from_consul_entries(base, answer.body), prefix, sealer)


def write_certificate(consul: Consul, prefix: str, host: str, chain: str, key: str, source: str,
                      sealer: Sealer) -> None:
    base = layout.certs_path(prefix, host)
    operations = [{"KV": {"Verb": "set", "Key": f"{base}{name}", "Value": _b64(value)}}
                  for name, value in (("chain", chain), ("key", sealer.seal(f"{base}key", key)),
                                      ("source", source))]
    with translate_errors(consul.address):
        consul.txn.put(operations)


def remove_certificate(consul: Consul, prefix: str, host: str) -> None:
    with translate_errors(consul.address):
        consul.kv.delete(layout.certs_path(prefix, host), recurse=True)


def read_account(consul: Consul, prefix: str, sealer: Sealer) -> tuple[str, str] | None:
    """(ACME directory, account key PEM), or None when the fleet has none yet."""
    path = layout.account_path(prefix)
    with translate_errors(consul.address):
        _, entry = consul.kv.get(path)
    if not entry or not entry.get("Value"):
        return None
    try:
        record = json.loads(entry["Value"])
        return record["directory"], sealer.open(path, record["key"])
    except (ValueError, KeyError, TypeError):
        return None  # not ours to read: a new account replaces it


def write_account(consul: Consul, prefix: str, directory: str, key_pem: str, sealer: Sealer) -> None:
    path = layout.account_path(prefix)
    with translate_errors(consul.address):
        consul.kv.put(path, json.dumps({"directory": directory, "key": sealer.seal(path, key_pem)}))


def publish_challenge(consul: Consul, prefix: str, token: str, validation: str) -> None:
    with translate_errors(consul.address):
        consul.kv.put(layout.challenges_path(prefix) + token, validation)


def withdraw_challenge(consul: Consul, prefix: str, token: str) -> None:
    with translate_errors(consul.address):
        consul.kv.delete(layout.challenges_path(prefix) + token)
