"""``registrar run`` and ``registrar sync``: the operator's edge.

Every expected failure is an :class:`agentkit.errors.AgentError` and becomes
one line on stderr and exit status 1 (2 for a configuration mistake, which
systemd does not restart); the token never appears in it.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys

import click

from agentkit import logs, nginx_safe
from agentkit.argv import hide_token_from_ps
from agentkit.consul import Consul
from agentkit.errors import AgentError, ConfigError
from agentkit.options import consul_options, log_level_option, status_address_option, version_option

from . import config as config_module
from .consul_sink import ConsulSink, wait_for_consul
from .daemon import Daemon
from .desired import DEREGISTER_POLICIES
from .docker_source import DockerSource
from .model import MappingSettings
from .service_settings import split_tags
from .sync import Registrar

log = logging.getLogger("registrar")


def registrar_options(command):
    options = [
        click.option("--docker-url", default=None, metavar="URL",
                     help="Docker engine (default: DOCKER_HOST, else unix:///var/run/docker.sock)."),
        click.option("--ip", default=None, metavar="ADDRESS",
                     help="Address registered for published ports (default: the binding's host IP when "
                          "specific, else the Consul agent's address)."),
        click.option("--use-ip-from-label", default=None, metavar="LABEL",
                     help="Register the address in this container label when it has one (registrator's "
                          "-useIpFromLabel; a /prefix is dropped)."),
        click.option("--internal", is_flag=True, default=False,
                     help="Register the container's own IP and exposed port instead of published ports."),
        click.option("--explicit", is_flag=True, default=False,
                     help="Only containers or ports that have SERVICE_NAME / SERVICE_<port>_NAME."),
        click.option("--tags", default=None, metavar="A,B",
                     help="Tags added to every service; registrator's Go-template placeholders work "
                          "({{.Config.Hostname}}), '\\,' is a comma inside a tag."),
        click.option("--resync", type=float, default=None, metavar="SECONDS",
                     help="Full reconciliation period; 0 turns it off (default: 60)."),
        click.option("--cleanup", is_flag=True, default=False,
                     help="Remove this host's registrar-made services whose container is gone, "
                          "at start and at every resync."),
        click.option("--drain", type=click.Choice(("on", "off")), default="on",
                     help="Take a container's services out of routing when it is sent its stop signal, "
                          "before it exits (default: on); off: registrator's timing, deregister on exit."),
        click.option("--deregister", type=click.Choice(DEREGISTER_POLICIES), default="always",
                     help="When a container dies: always deregister, or only if it exited 0 (default: always)."),
        click.option("--hostname", default=None, metavar="NAME",
                     help="First part of service IDs and owner mark (default: this machine's hostname)."),
        click.option("--retry-attempts", type=int, default=0, metavar="N",
                     help="Retries for reaching Consul at start; -1 retries forever (default: 0)."),
        click.option("--retry-interval", type=int, default=2000, metavar="MS",
                     help="Milliseconds between those retries (default: 2000)."),
    ]
    for option in reversed(options):
        command = option(command)
    return status_address_option(log_level_option(consul_options(command)), envvar="REGISTRAR_STATUS_ADDRESS")


def operator_errors(command):
    @functools.wraps(command)
    def wrapper(**kwargs):
        try:
            return command(**kwargs)
        except AgentError as error:
            click.echo(f"registrar: {error}", err=True)
            sys.exit(2 if isinstance(error, ConfigError) else 1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option("registrar")
def main():
    """Register Docker containers as Consul services, registrator-compatible."""


@main.command()
@registrar_options
@operator_errors
def run(**options):
    """Keep Consul in step with Docker until SIGTERM or SIGINT."""
    hide_token_from_ps()
    # --retry-attempts -1: never give up on Consul, and start following Docker at once (under
    # systemd, a host whose Consul agent is down at boot must start, not block or restart-loop).
    registrar, config = _build(options, reach_consul=options.get("retry_attempts") != -1)
    daemon = Daemon(registrar, config)
    daemon.lifecycle.stop_on(signal.SIGTERM, signal.SIGINT)
    log.info("started for host %s: Docker %s -> Consul %s", config.hostname, config.docker_url,
             config.consul_address)
    try:
        daemon.run()
    finally:
        registrar.docker.close()
        registrar.consul.client.close()


@main.command()
@registrar_options
@operator_errors
def sync(**options):
    """One full reconciliation, then exit (0 when every change was accepted)."""
    registrar, config = _build(options)
    try:
        failures = registrar.full_sync(cleanup=config.cleanup)
    finally:
        registrar.docker.close()
        registrar.consul.client.close()
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise AgentError(f"{failures[0]}{more}")


def _build(options: dict, reach_consul: bool = True) -> tuple[Registrar, config_module.Config]:
    config = config_module.build(**options)
    logs.configure(config.log_level, "registrar", config.log_format)
    sink = ConsulSink(Consul(config.consul_address, config.consul_token, tls=config.consul_tls), config.hostname)
    if reach_consul:
        wait_for_consul(sink, config.retry_attempts, config.retry_interval)
    docker = DockerSource(config.docker_url)
    # Without --ip, the agent's own address, asked now or at the first contact with Consul.
    host_address = config.ip or (sink.host_address() if reach_consul else "")
    mapping = MappingSettings(hostname=config.hostname, host_address=host_address, ip=config.ip,
                              internal=config.internal, explicit=config.explicit, tags=config.tags,
                              ip_label=config.use_ip_from_label)
    if config.ip and nginx_safe.routable_address_problem(config.ip):
        log.warning("--ip %s is not an IP address: its services are registered, but the renderer routes only IP "
                    "addresses (nginx would resolve a name when loading its configuration)", config.ip)
    if config.tags is not None and config.tags.is_plain:
        for tag in split_tags(config.tags.source):
            problem = nginx_safe.value_problem("tag", tag)
            if problem:
                log.warning("--tags: %s; registered, but the renderer will not show it to nginx", problem)
    return Registrar(config, docker, sink, mapping), config
