"""``renderer routes``: the route table for people, and the operator's route settings in Consul KV.

    renderer routes [--url URL]                       the table, where each value comes from, what is refused
    renderer routes set SERVICE KEY=VALUE ...         override SERVICE's KEY on every nginx node
    renderer routes set --default KEY=VALUE ...       the default of KEY for every service that does not set it
    renderer routes unset SERVICE KEY ...             back to the labels (or the default)
    renderer routes unset --default KEY ...

``set`` and ``unset`` check every value with the parser the labels go
through, and print what will take effect on which hosts, before anything
is written (``--dry-run``: only that). The renderers apply a change from
their KV watch as fast as any catalog change, with no container touched.
"""

from __future__ import annotations

from pathlib import Path

import click

from agentkit.consul import translate_errors
from agentkit.errors import AgentError
from agentkit.options import consul_options, log_level_option

from . import wiring
from .catalog import certificates, fetch, snapshot
from .catalog.kv import KvSnapshot
from .command_line import fail, kv_prefix_option, load_settings
from .routes import report
from .routes.builder import build
from .routes.model import RouteOptions, RouteTable
from .routes.voting import ROUTE_KEYS


def common_options(command):
    for decorator in reversed([
        click.option("--var", "var", multiple=True, metavar="KEY=VALUE",
                     help="A variable: domain, http_port, https_port, stream_ports, cert_dir (repeatable)."),
        click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                     help="TOML config; only its Consul settings, kv_prefix and [var] are used."),
        kv_prefix_option,
    ]):
        command = decorator(command)
    return consul_options(log_level_option(command))


def _read(settings, catalog_file: str | None = None):
    """The catalog and the route settings' KV, from a snapshot file or from Consul."""
    options = RouteOptions.from_variables(settings.variables)
    if catalog_file:
        catalog, kv = snapshot.load(Path(catalog_file))
        return options, catalog, kv
    client = wiring.connect(settings, timeout=10)
    try:
        _, catalog = fetch.fetch_catalog(client, consistency=settings.consistency)
        kv = fetch.fetch_kv(client, f"{options.kv_prefix}/", consistency=settings.consistency)[1] \
            if options.kv_prefix else None
    finally:
        client.close()
    return options, catalog, kv


def _table(settings, options, catalog, kv) -> RouteTable:
    return build(catalog, options, certificates.scan(settings.variables.get("cert_dir")), kv)


@click.group(name="routes", invoke_without_command=True)
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), default=None,
              help="Read this snapshot (from `renderer snapshot`) instead of Consul.")
@click.option("--url", "urls", multiple=True, metavar="URL", help="Say which route answers URL, and why (repeatable).")
@common_options
@click.pass_context
def routes(context, catalog_file, urls, **flags):
    """Print the route table (or, with --url, which route answers a URL); `set` and `unset` change it in KV."""
    if context.invoked_subcommand is not None:
        return
    settings = load_settings(flags)
    try:
        table = _table(settings, *_read(settings, catalog_file))
    except AgentError as error:
        fail(str(error))
    if urls:
        for url in urls:
            click.echo(report.explain(table, url), nl=False)
    else:
        click.echo(report.format_table(table), nl=False)


def _paths(prefix: str, service: str | None, keys: list[str]) -> list[str]:
    base = f"{prefix}/defaults" if service is None else f"{prefix}/routes/{service}"
    return [f"{base}/{key}" for key in keys]


def _change(flags: dict, service: str | None, changes: dict[str, str | None], dry_run: bool) -> None:
    settings = load_settings(flags)
    unknown = sorted(set(changes) - set(ROUTE_KEYS))
    if unknown:
        fail(f"{unknown[0]} is not a route key KV may set ({', '.join(sorted(ROUTE_KEYS))})", 2)
    for key, value in changes.items():
        if value is not None:
            try:
                ROUTE_KEYS[key](value)
            except ValueError as error:
                fail(f"{key}={value!r} {error}; nothing written", 2)
    try:
        options, catalog, kv = _read(settings)
        if not options.kv_prefix:
            fail("no --kv-prefix: route settings in KV are off", 2)
        paths = dict(zip(_paths(options.kv_prefix, service, list(changes)), changes.values()))
        values = {k: v for k, v in (kv.values.items() if kv else ()) if k not in paths}
        values.update({path: value for path, value in paths.items() if value is not None})
        after = _table(settings, options, catalog, KvSnapshot([f"{options.kv_prefix}/"], values))
        for path, value in paths.items():
            click.echo(f"{path} = {value!r}" if value is not None else f"{path}: removed")
        click.echo(report.effect(after, service, list(changes)), nl=False)
        if dry_run:
            click.echo("(--dry-run: nothing written)")
            return
        client = wiring.connect(settings, timeout=10)
        try:
            with translate_errors(client.address):
                for path, value in paths.items():
                    response = client.send("DELETE" if value is None else "PUT", f"/v1/kv/{path}",
                                           data=None if value is None else value.encode())
                    if response.status_code == 403:
                        raise AgentError(f"Consul at {client.address} denied writing {path}: the token lacks "
                                         f"key:write on it")
                    response.raise_for_status()
        finally:
            client.close()
    except AgentError as error:
        fail(str(error))
    click.echo("written: every renderer applies it from its KV watch")


@routes.command(name="set")
@click.argument("target", required=False)
@click.argument("assignments", nargs=-1)
@click.option("--default", "default", is_flag=True, help="Set defaults for every service (no SERVICE).")
@click.option("--dry-run", is_flag=True, help="Check and show the effect; write nothing.")
@common_options
def set_command(target, assignments, default, dry_run, **flags):
    """SERVICE KEY=VALUE ... (or --default KEY=VALUE ...): route settings in KV, checked first."""
    service, items = (None, (target, *assignments)) if default else (target, assignments)
    if not items or items[0] is None or (not default and not service):
        fail("give SERVICE KEY=VALUE ... or --default KEY=VALUE ...", 2)
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"{item!r}: expected KEY=VALUE", 2)
        changes[key.strip()] = value
    _change(flags, service, changes, dry_run)


@routes.command(name="unset")
@click.argument("target", required=False)
@click.argument("keys", nargs=-1)
@click.option("--default", "default", is_flag=True, help="Remove defaults (no SERVICE).")
@click.option("--dry-run", is_flag=True, help="Show the effect; write nothing.")
@common_options
def unset_command(target, keys, default, dry_run, **flags):
    """SERVICE KEY ... (or --default KEY ...): back to the labels, or the default."""
    service, names = (None, (target, *keys)) if default else (target, keys)
    if not names or names[0] is None or (not default and not service):
        fail("give SERVICE KEY ... or --default KEY ...", 2)
    _change(flags, service, dict.fromkeys(names), dry_run)
