"""The part of Consul's KV store that templates read, as plain data."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType


class KvSnapshot:
    """Key/value pairs under the prefixes that were fetched.

    ``covers(path)`` says whether a lookup can be answered from this snapshot;
    a key absent under a covered prefix really is absent in Consul.
    """

    def __init__(self, prefixes: Iterable[str] = (), values: Mapping[str, str] | None = None):
        self.prefixes = frozenset(prefixes)
        self.values = MappingProxyType(dict(values or {}))

    def covers(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.prefixes)

    def get(self, path: str) -> str | None:
        return self.values.get(path)

    def tree(self, prefix: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in self.values.items() if k.startswith(prefix)))

    def merged(self, newer: "KvSnapshot") -> "KvSnapshot":
        """This snapshot with what ``newer`` covers replaced by ``newer`` (one watch per prefix delivers its own)."""
        values = {k: v for k, v in self.values.items() if not newer.covers(k)}
        values.update(newer.values)
        return KvSnapshot({p for p in self.prefixes if not newer.covers(p)} | newer.prefixes, values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KvSnapshot) and self.prefixes == other.prefixes and self.values == other.values

    __hash__ = None


def common_prefix(paths: Iterable[str]) -> str:
    """The one prefix a single recursive read needs to cover every path."""
    paths = list(paths)
    return os.path.commonprefix(paths) if paths else ""


def prefixes(paths: Iterable[str]) -> set[str]:
    """The prefixes recursive reads (and watches) need to cover every path, one per top-level folder.

    One prefix for everything would be the common prefix, which for
    ``config/nginx/x`` and ``consul-nginx-sync/`` is the whole store: every
    key of it read on every change, secrets of other tools included.
    """
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(path.split("/", 1)[0], []).append(path)
    return {common_prefix(group) for group in groups.values()}


def from_consul_entries(prefix: str, entries: list | None) -> KvSnapshot:
    """From ``/v1/kv/PREFIX?recurse`` (values base64; folders have none)."""
    values = {}
    for entry in entries or ():
        raw = entry.get("Value")
        if raw is None:
            continue
        values[entry["Key"]] = base64.b64decode(raw).decode("utf-8", errors="replace")
    return KvSnapshot([prefix], values)
