"""Route settings in Consul KV: the operator's overrides per service and defaults for all, on every node at once.

Labels cannot change on a running container, so an operator who must pause
a route, tighten a rate limit during an incident, move a canary from 10 to
50 % or set a company-wide body size writes KV instead, under the prefix
(``--kv-prefix``, default ``consul-nginx-sync``):

* ``PREFIX/routes/SERVICE/KEY``: overrides that service's value of KEY;
* ``PREFIX/defaults/KEY``: the value of KEY for every service that does not
  set it.

Precedence, for each key: KV override > labels > KV default > built-in.
KEY is any route key, spelled as in the meta (``canary_percent``,
``rate_limit``, ``allow``, ``timeout``, ``max_body``, ``https_redirect`` …),
plus ``maintenance`` and ``rate_limit_scope``; each value is held to the
same parser as the label. A bad value is refused with one warning naming
its KV path and value, and the value in force before stays in force
(nothing routed is lost; a renderer started since goes by the labels).
Pure: the KV snapshot and the settings read last time in, the settings out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from renderer.catalog.kv import KvSnapshot

DEFAULT_PREFIX = "consul-nginx-sync"


@dataclasses.dataclass(frozen=True)
class Setting:
    raw: str
    value: object   # parsed
    path: str       # the KV path it came from

    def origin(self, kind: str) -> str:
        return f"KV {kind} {self.path}"


@dataclasses.dataclass(frozen=True)
class KvRefusal:
    path: str
    value: str
    reason: str
    kept: Setting | None  # the value in force before, still in force

    def __str__(self) -> str:
        kept = f"keeping {self.kept.raw!r}, in force before" if self.kept else "the labels' value applies"
        return f"route setting {self.path}={self.value!r} refused: {self.reason}; {kept}"


NONE: Mapping = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class RouteSettings:
    prefix: str = DEFAULT_PREFIX
    overrides: Mapping[str, Mapping[str, Setting]] = dataclasses.field(default_factory=lambda: NONE)  # service -> key -> setting
    defaults: Mapping[str, Setting] = dataclasses.field(default_factory=lambda: NONE)
    refused: tuple[KvRefusal, ...] = ()
    by_path: Mapping[str, Setting] = dataclasses.field(default_factory=lambda: NONE)  # every setting in force, by path: the memory

    def of(self, service: str) -> tuple[Mapping[str, Setting], Mapping[str, Setting]]:
        """(that service's overrides, the defaults)."""
        return self.overrides.get(service, NONE), self.defaults


def read(kv: KvSnapshot | None, prefix: str, parsers: Mapping[str, object],
         previous: RouteSettings | None = None) -> RouteSettings:
    """The settings under ``prefix``; ``parsers`` says which keys there are and what each may hold."""
    if kv is None:
        return RouteSettings(prefix)
    overrides: dict[str, dict[str, Setting]] = {}
    defaults: dict[str, Setting] = {}
    refused: list[KvRefusal] = []
    by_path: dict[str, Setting] = {}
    before = previous.by_path if previous is not None and previous.prefix == prefix else {}
    for path, raw in kv.tree(f"{prefix}/"):
        parts = path[len(prefix) + 1:].split("/")
        if len(parts) == 3 and parts[0] == "routes" and parts[1] and parts[2]:
            service, key = parts[1], parts[2]
        elif len(parts) == 2 and parts[0] == "defaults" and parts[1]:
            service, key = None, parts[1]
        else:
            refused.append(KvRefusal(path, raw, f"is neither {prefix}/routes/SERVICE/KEY nor "
                                                f"{prefix}/defaults/KEY", None))
            continue
        parse = parsers.get(key)
        if parse is None:
            refused.append(KvRefusal(path, raw, f"{key} is not a route key ({', '.join(sorted(parsers))})", None))
            continue
        try:
            setting = Setting(raw, parse(raw), path)
        except ValueError as error:
            setting = before.get(path)
            refused.append(KvRefusal(path, raw, str(error), setting))
            if setting is None:
                continue
        by_path[path] = setting
        if service is None:
            defaults[key] = setting
        else:
            overrides.setdefault(service, {})[key] = setting
    return RouteSettings(prefix, MappingProxyType({name: MappingProxyType(keys) for name, keys in overrides.items()}),
                         MappingProxyType(defaults), tuple(refused), MappingProxyType(by_path))
