"""Rendering until templates have their data: render, fetch what they found missing, render again.

A template says what it reads only by reading it: the first render of
``{{ key('cfg/size') }}`` finds the key missing, and only then is it
fetched (non-blocking) and the template rendered again. A key's value may
name the next key to read, so this repeats, at most ``MAX_FILL_ROUNDS``
times; what is still missing after that is the caller's to report. The
daemon's watches then keep every dependency current, so this is needed
only for data no watch covers yet.

KV is fetched under the common prefix of every path in use plus the new
ones, so one recursive read (and later one watch) answers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agentkit.consul import Consul
from renderer.catalog import kv as kv_module
from renderer.catalog.fetch import Fetched, fetch_catalog, fetch_kv

from . import bounded
from .api import CATALOG_KINDS, TemplateData, kv_reads
from .loader import Rendered, TemplateLoader
from .render_pass import PassOutcome, RenderPass

MAX_FILL_ROUNDS = 4


def fill_missing(client: Consul, data: TemplateData, missing: set, kv_paths: set[str], fetched: Fetched,
                 consistency: str = "default") -> TemplateData:
    """``data`` completed with what ``missing`` asks for; ``fetched`` records what was fetched, at which index."""
    catalog, kv = data.catalog, data.kv
    if catalog is None and any(d[0] in CATALOG_KINDS for d in missing):
        fetched.catalog_index, catalog = fetch_catalog(client, consistency=consistency)
        fetched.catalog = catalog
    missing_paths = kv_reads(missing)
    for prefix in sorted(kv_module.prefixes(kv_paths | missing_paths)):
        if any(path.startswith(prefix) for path in missing_paths):
            fetched.kv_indexes[prefix], snapshot = fetch_kv(client, prefix, consistency=consistency)
            kv = snapshot if kv is None else kv.merged(snapshot)
    return TemplateData(catalog, kv, data.certificates, data.routes)



def _until_complete(attempt: Callable[[TemplateData], object], missing: Callable[[object], set],
                    kv_paths: Callable[[object], set[str]], data: TemplateData, client: Consul, fetched: Fetched,
                    consistency: str):
    result = attempt(data)
    for _ in range(MAX_FILL_ROUNDS):
        if not missing(result):
            break
        data = fill_missing(client, data, missing(result), kv_paths(result), fetched, consistency)
        result = attempt(data)
    return data, result


def complete_pass(render_pass: RenderPass, data: TemplateData, client: Consul, fetched: Fetched,
                  force: bool = False, consistency: str = "default") -> tuple[TemplateData, PassOutcome]:
    """Run passes, fetching what templates found missing, until every template rendered."""
    return _until_complete(lambda d: render_pass.run(d, force), lambda outcome: outcome.missing,
                           lambda _: render_pass.kv_paths(), data, client, fetched, consistency)


def complete_render(loader: TemplateLoader, source: Path, data: TemplateData, limits: bounded.Limits,
                    client: Consul, consistency: str = "default") -> tuple[TemplateData, Rendered]:
    """One template rendered with its data, nothing applied (``renderer render``)."""
    def missing(rendered: Rendered) -> set:
        return set() if rendered.error else set(rendered.missing)

    return _until_complete(lambda d: bounded.render_all(loader, [source], d, limits)[source], missing,
                           lambda rendered: kv_reads(rendered.used),
                           data, client, Fetched(), consistency)
