"""``renderer``: run / once / render / snapshot. One clear line on failure, never a traceback.

Exit status: 0 success; 1 a failure while working (Consul unreachable, a
template or nginx refused something, a reload nginx did not take); 2 a
configuration mistake (a flag, the config file, a template directory),
which systemd does not restart (``RestartPreventExitStatus=2``).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click
import tenacity

from agentkit.argv import hide_token_from_ps
from agentkit.consul import Consul
from agentkit.errors import AgentError, ConfigError, ConsulUnavailable
from agentkit.lifecycle import Lifecycle, Stopping
from agentkit.options import consul_options, log_level_option, status_address_option, version_option

from . import settings as settings_module
from . import cert_commands, route_commands, wiring
from .catalog import fetch, snapshot
from .catalog.fetch import Fetched
from .catalog.kv import KvSnapshot
from .command_line import fail, kv_prefix_option, load_settings
from .daemon import RELOAD_SETTINGS, Daemon
from .peers.coordinator import push_once
from .peers.sync import PeerSync
from .peers.table import PeerTable
from .render import bounded
from .render.api import TemplateData
from .render.fill import complete_pass, complete_render
from .render.loader import TemplateLoader

log = logging.getLogger("renderer")

ONCE_ATTEMPTS = 5


def template_options(command):
    for decorator in reversed([
        click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                     help="TOML file with the same settings (flags win)."),
        click.option("--template", "template", multiple=True, metavar="SRC:DEST",
                     help="Render template SRC to file DEST (repeatable)."),
        click.option("--template-dir", "template_dir", multiple=True, metavar="SRCDIR:DESTDIR",
                     help="Render every *.j2 in SRCDIR to DESTDIR/<name without .j2> (repeatable)."),
        click.option("--var", "var", multiple=True, metavar="KEY=VALUE",
                     help="A variable visible to templates (repeatable)."),
        click.option("--check-command", default=None,
                     help="Validates the whole rendered set (default: nginx -t)."),
        click.option("--reload-command", default=None,
                     help="Applies it (default: SIGHUP to the master in --nginx-pid-file, as nginx -s reload "
                          "does without parsing the configuration again; nginx -s reload when that is empty)."),
        click.option("--check-before-reload", "check_before_reload", is_flag=True, default=None,
                     help="Run the check command before every reload; by default it runs only once nginx refused "
                          "a reload, to name the file (nginx's reload parses everything itself)."),
        click.option("--nginx-pid-file", default=None, metavar="FILE",
                     help="nginx's pid file, to confirm a reload took (default: /run/nginx.pid; \"\": do not "
                          "confirm)."),
        click.option("--nginx-error-log", default=None, metavar="FILE",
                     help="nginx's error log, where a refused reload says why (default: /var/log/nginx/error.log)."),
        click.option("--reload-timeout", default=None, metavar="DURATION",
                     help="How long nginx may take to start the new workers (default: 30s)."),
        click.option("--render-timeout", default=None, metavar="DURATION",
                     help="Time limit of one template's render (default: 10s)."),
        click.option("--render-max-output", default=None, metavar="SIZE",
                     help="Largest output one template may render, e.g. 64m (default: 64m)."),
        click.option("--dynamic-peers", "dynamic_peers", is_flag=True, default=None,
                     help="Instance changes reach nginx through its Lua balancer, without a reload (needs nginx's "
                          "Lua module; see docs/renderer.md)."),
        click.option("--peers-dir", default=None, metavar="DIR",
                     help="Where the peer table nginx loads at start and its Lua module are written "
                          "(default: /var/lib/renderer)."),
        click.option("--consistency", type=click.Choice(settings_module.CONSISTENCY_MODES), default=None,
                     help="Consul read consistency: stale lets any server answer (default: default)."),
        kv_prefix_option,
        click.option("--cert-encryption-key", default=None, metavar="FILE",
                     help="Private keys of the certificates in KV are sealed with this fleet key (32 random bytes, "
                          "base64; AES-256-GCM)."),
    ]):
        command = decorator(command)
    return consul_options(log_level_option(command))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option("renderer")
def main():
    """Render nginx configuration from the Consul catalog, validate it, reload nginx."""


@main.command()
@template_options
@status_address_option
@click.option("--wait", default=None, metavar="MIN[:MAX]",
              help="Quiescence: render once changes are quiet for MIN, at the latest MAX after the first "
                   "(e.g. 500ms:5s; default off).")
@click.option("--register/--no-register", "register", default=None,
              help="With --status-address: register this renderer in the local Consul agent (service "
                   "consul-nginx-sync-renderer, checked on /ready), removed on a clean stop (default: on).")
@click.option("--traffic-log", "traffic_log", default=None, metavar="FILE",
              help="With --status-address: the default templates have nginx log each request there (buffered) and "
                   "the renderer counts them: /metrics, the status page (default /var/lib/renderer/traffic.log; "
                   "\"\": off).")
@click.option("--acme-directory", default=None, metavar="URL",
              help="The ACME server that issues the fleet's certificates for hosts with tls_acme (off by default; "
                   "Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory). One renderer of the fleet "
                   "orders, elected with a Consul lock; docs/routes.md.")
@click.option("--acme-email", default=None, metavar="ADDRESS", help="The ACME account's contact address.")
@click.option("--acme-ca-bundle", default=None, metavar="FILE",
              help="The CA that signed a private ACME server's HTTPS certificate.")
@click.option("--grace", default=None, metavar="DURATION",
              help="How long a catalog that looks like Consul lost its state (index went backwards, or most "
                   "instances gone at once) is held back while the last good config stays (default 30s; 0: off).")
def run(**flags):
    """Watch Consul and keep the rendered files and nginx current (daemon)."""
    hide_token_from_ps()
    settings = load_settings(flags, need_templates=True)
    daemon = Daemon(settings, rebuild_settings=lambda: settings_module.build(flags))
    daemon.lifecycle.stop_on(signal.SIGTERM, signal.SIGINT)
    signal.signal(signal.SIGHUP, lambda *_: daemon.post(RELOAD_SETTINGS))
    try:
        daemon.run()
    except AgentError as error:
        fail(str(error), 2 if isinstance(error, ConfigError) else 1)


@main.command()
@template_options
def once(**flags):
    """Render, validate, apply, reload if anything changed and confirm nginx took it; then exit."""
    settings = load_settings(flags, need_templates=True)
    wiring.tune_garbage_collector()
    lifecycle = Lifecycle()
    lifecycle.stop_on(signal.SIGTERM)
    client = None
    try:
        with wiring.bytecode_cache() as bytecode:
            wiring.recover_destinations(settings)
            render_pass = wiring.make_pass(settings, lifecycle, bytecode, retrying=False)
            peers = PeerSync.installed(settings)
            if peers is not None:  # the table a reload makes nginx load is written before files are applied
                render_pass.before_apply = lambda data: _write_peers(peers, data, render_pass)
            client = wiring.connect(settings, timeout=10)
            wiring.certificates_once(settings, client)
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(ONCE_ATTEMPTS),
                wait=tenacity.wait_exponential(multiplier=0.2, max=2),
                retry=tenacity.retry_if_exception_type(ConsulUnavailable), reraise=True,
                before_sleep=lambda state: log.warning("%s; retrying", state.outcome.exception()))
            data, outcome = retrying(complete_pass, render_pass, wiring.certificate_data(settings), client,
                                     Fetched(), True, settings.consistency)
            if peers is not None and outcome.ok and not outcome.missing:
                push_once(peers, PeerTable.of_data(data, render_pass.loader.route_options))
    except AgentError as error:
        fail(str(error))
    except Stopping:
        fail("stopped by SIGTERM; files not yet confirmed by nginx are put back by the next run")
    finally:
        if client is not None:
            client.close()
    if outcome.missing:
        fail("templates still miss data after fetching it: " + ", ".join(sorted(map(str, outcome.missing))))
    if not outcome.ok:
        fail(outcome.failed[0] if len(outcome.failed) == 1
              else f"{outcome.failed[0]} (and {len(outcome.failed) - 1} more problem(s), logged above)")


def _write_peers(peers: PeerSync, data: TemplateData, render_pass) -> None:
    table = PeerTable.of_data(data, render_pass.loader.route_options)
    if table is not None:
        peers.write(table)


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), default=None,
              help="Read this snapshot (from `renderer snapshot`) instead of Consul.")
@click.option("--var", "var", multiple=True, metavar="KEY=VALUE", help="A variable (repeatable).")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="TOML config; only its Consul settings, render limits and [var] are used.")
@click.option("--render-timeout", default=None, metavar="DURATION", help="Time limit of the render (default: 10s).")
@click.option("--render-max-output", default=None, metavar="SIZE", help="Largest output (default: 64m).")
@consul_options
@log_level_option
def render(source, catalog_file, **flags):
    """Print what SOURCE renders to; write nothing."""
    settings = load_settings(flags)
    path = Path(source)
    try:
        with wiring.bytecode_cache() as bytecode:
            loader = TemplateLoader(settings.variables, bytecode)
            if catalog_file:
                catalog, kv = snapshot.load(Path(catalog_file))
                data = TemplateData(catalog, kv, wiring.certificate_data(settings).certificates)
                rendered = bounded.render_all(loader, [path], data, settings.limits)[path]
            else:
                client = wiring.connect(settings, timeout=10)
                try:
                    data, rendered = complete_render(loader, path, wiring.certificate_data(settings),
                                                     settings.limits, client, settings.consistency)
                finally:
                    client.close()
            for refusal in data.catalog.refused if data.catalog is not None else ():
                log.warning("%s", refusal.line)
    except AgentError as error:
        fail(str(error))
    if rendered.error:
        fail(str(rendered.error))
    if rendered.missing:
        fail("the template still misses data after fetching it: " + ", ".join(sorted(map(str, rendered.missing))))
    for warning in rendered.warnings:
        log.warning("template %s: %s", source, warning)
    click.echo(rendered.text, nl=False)


@main.command(name="snapshot")
@click.option("--kv-prefix", "kv_prefixes", multiple=True, metavar="PREFIX",
              help="Also include the KV pairs under PREFIX (repeatable; KV may hold secrets). The route "
                   "settings (consul-nginx-sync/, or the config's kv_prefix) are always included.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="TOML config; only its Consul settings and kv_prefix are used.")
@consul_options
@log_level_option
def snapshot_command(kv_prefixes, **flags):
    """Print the current catalog as JSON, in the format --catalog reads."""
    settings = load_settings(flags)
    client: Consul = wiring.connect(settings, timeout=10)
    try:
        _, catalog = fetch.fetch_catalog(client, consistency=settings.consistency)
        values = {}
        route_settings = settings.variables.get("kv_prefix")
        for prefix in (*kv_prefixes, *([f"{route_settings}/"] if route_settings else [])):
            values.update(fetch.fetch_kv(client, prefix, consistency=settings.consistency)[1].values)
    except AgentError as error:
        fail(str(error))
    finally:
        client.close()
    for refusal in catalog.refused:
        log.warning("%s", refusal.line)
    click.echo(snapshot.dump(catalog, KvSnapshot([""], values)), nl=False)


main.add_command(route_commands.routes)
main.add_command(cert_commands.certs)
