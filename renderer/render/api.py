"""The functions templates call, over plain catalog and KV data.

Each call records a *dependency* (what was asked) and the *value* it returned.
After new data arrives, a template needs rendering again only if one of its
dependencies now yields a different value: that is how the renderer renders
only what changed, and how it knows what to watch at all (a template that
never calls ``services()``/``service()``/``nodes()`` never causes a catalog
watch).

Data not fetched yet (the first render, or a KV path outside what is watched)
is recorded as *missing* and answered with an empty value; the caller fetches
it and renders again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from renderer.catalog.certificates import CertificateSet
from renderer.catalog.kv import KvSnapshot
from renderer.catalog.model import Catalog, Instance, Node
from renderer.routes.builder import RouteBuilder
from renderer.routes.model import RouteOptions, RouteTable

# Dependency keys (hashable tuples); the first element says which kind.
CATALOG_KINDS = frozenset({"services", "service", "nodes", "routes"})
KV_KINDS = frozenset({"key", "tree"})


def kv_reads(dependencies) -> set[str]:
    """The KV paths these dependencies read: keys and trees, and the route settings of route tables."""
    return ({d[1] for d in dependencies if d[0] in KV_KINDS}
            | {f"{d[1].kv_prefix}/" for d in dependencies if d[0] == "routes" and d[1].kv_prefix})


class TemplateData:
    """What a render may read: the catalog, KV and certificate-directory snapshots (catalog and KV may be absent).

    Immutable, so each dependency's value is computed once per snapshot: the
    pass that decides what changed, the render, and the record of what the
    render used all ask for the same values. The route builder is carried
    from one snapshot to the next (``with_*``): it builds each snapshot's
    route table reusing what did not change since the last one.
    """

    def __init__(self, catalog: Catalog | None = None, kv: KvSnapshot | None = None,
                 certificates: CertificateSet = CertificateSet(), routes: RouteBuilder | None = None):
        self.catalog = catalog
        self.kv = kv
        self.certificates = certificates
        self.routes = routes or RouteBuilder()
        self._values: dict[tuple, object] = {}

    def with_catalog(self, catalog: Catalog | None) -> "TemplateData":
        return TemplateData(catalog, self.kv, self.certificates, self.routes)

    def with_kv(self, kv: KvSnapshot | None) -> "TemplateData":
        """With ``kv`` in place of what the current KV data holds under its prefixes (each KV watch sends its own)."""
        merged = kv if self.kv is None or kv is None else self.kv.merged(kv)
        return TemplateData(self.catalog, merged, self.certificates, self.routes)

    def with_certificates(self, certificates: CertificateSet) -> "TemplateData":
        return TemplateData(self.catalog, self.kv, certificates, self.routes)

    def evaluate(self, dependency: tuple):
        """The value ``dependency`` has in this data; ``MISSING`` when not fetched."""
        try:
            return self._values[dependency]
        except KeyError:
            value = self._values[dependency] = self._evaluate(dependency)
            return value

    def evaluated(self, dependency: tuple):
        """The value ``dependency`` has if it was computed already (in this process); else None."""
        return self._values.get(dependency)

    def values(self, dependencies) -> dict[tuple, object]:
        """``{dependency: value}`` for a render's recorded dependencies."""
        return {dependency: self.evaluate(dependency) for dependency in dependencies}

    def _evaluate(self, dependency: tuple):
        kind = dependency[0]
        if kind in CATALOG_KINDS:
            if self.catalog is None:
                return MISSING
            if kind == "services":
                return _services(self.catalog, dependency[1])
            if kind == "service":
                return _service(self.catalog, *dependency[1:])
            if kind == "routes":
                options = dependency[1]
                if options.kv_prefix and (self.kv is None or not self.kv.covers(f"{options.kv_prefix}/")):
                    return MISSING  # the operator's route settings are not read yet
                return self.routes.build(self.catalog, options, self.certificates, self.kv)
            return self.catalog.nodes
        path = dependency[1]
        if self.kv is None or not self.kv.covers(path):
            return MISSING
        return self.kv.get(path) if kind == "key" else self.kv.tree(path)


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


def _services(catalog: Catalog, tag: str | None):
    return tuple(entry for entry in catalog.services() if tag is None or tag in entry[1])


def _service(catalog: Catalog, name: str, tag: str | None, passing: bool) -> tuple[Instance, ...]:
    instances = catalog.instances_of(name, passing)
    return instances if tag is None else tuple(i for i in instances if tag in i.tags)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One entry of ``services()``: ``svc.name`` and ``svc["name"]`` both work.

    An object rather than a dict because Jinja's sandbox reads ``svc.name``
    on a dict by failing the attribute first, which made a quarter of the
    default http template's time at 5,000 services (see ``templates.PLAIN_DATA``).
    """

    name: str
    tags: list[str]
    kind: str

    def __getitem__(self, key: str):
        if key not in ("name", "tags", "kind"):
            raise KeyError(key)
        return getattr(self, key)

    def __eq__(self, other) -> bool:
        if isinstance(other, dict):
            return other == {"name": self.name, "tags": self.tags, "kind": self.kind}
        return isinstance(other, ServiceSummary) and (self.name, self.tags, self.kind) == (
            other.name, other.tags, other.kind)


class Recorder:
    """The template functions for one render, recording what they were asked."""

    def __init__(self, data: TemplateData, route_options: RouteOptions = RouteOptions()):
        self.data = data
        self.route_options = route_options
        self.used: dict[tuple, object] = {}
        self.missing: set[tuple] = set()
        self.warnings: list[str] = []

    def _ask(self, dependency: tuple):
        if dependency not in self.used:
            value = self.data.evaluate(dependency)
            if value is MISSING:
                self.missing.add(dependency)
            self.used[dependency] = value
        return self.used[dependency]

    def functions(self) -> Mapping[str, object]:
        return {"services": self.services, "service": self.service, "nodes": self.nodes, "routes": self.routes,
                "key": self.key, "key_or_default": self.key_or_default, "tree": self.tree,
                "warn": self.warn}

    def warn(self, message: str) -> str:
        """Let a template report a skipped item; the renderer logs it when it first appears."""
        self.warnings.append(str(message))
        return ""

    def services(self, tag: str | None = None) -> list["ServiceSummary"]:
        """Every service (with a tag, only those carrying it): ``[{name, tags, kind}]`` by name."""
        value = self._ask(("services", tag))
        return [] if value is MISSING else [ServiceSummary(name, list(tags), kind) for name, tags, kind in value]

    def service(self, name: str, tag: str | None = None, passing: bool = True) -> list[Instance]:
        """Instances of ``name`` (with ``tag``); only passing ones unless ``passing=False``."""
        value = self._ask(("service", name, tag, bool(passing)))
        return [] if value is MISSING else list(value)

    def routes(self) -> RouteTable:
        """The route table services declare with meta (see ``renderer.routes``), for this template's variables."""
        value = self._ask(("routes", self.route_options))
        return RouteTable() if value is MISSING else value

    def nodes(self) -> list[Node]:
        value = self._ask(("nodes",))
        return [] if value is MISSING else list(value)

    def key(self, path: str) -> str:
        """The value at ``path``; an absent key is an error (use ``key_or_default``)."""
        value = self._ask(("key", path))
        if value is MISSING:
            return ""
        if value is None:
            raise KeyError(f"Consul key {path!r} does not exist")
        return value

    def key_or_default(self, path: str, default: str = "") -> str:
        value = self._ask(("key", path))
        return default if value is MISSING or value is None else value

    def tree(self, prefix: str) -> list[dict]:
        """Every key under ``prefix``: ``[{key, value}]`` with ``key`` relative to the prefix."""
        value = self._ask(("tree", prefix))
        if value is MISSING:
            return []
        return [{"key": k[len(prefix):].lstrip("/"), "value": v} for k, v in value]


def changed(used: Mapping[tuple, object], data: TemplateData) -> bool:
    """Does any recorded dependency have a different value in ``data``?"""
    for dependency, value in used.items():
        new = data.evaluate(dependency)
        if new is not value and new != value:
            return True
    return False
