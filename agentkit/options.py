"""Click options both daemons take, so their names and help never drift apart."""

from __future__ import annotations

import click

from .logs import FORMATS, LEVELS

# (flag, destination, metavar, help); each defaults to Consul's own environment variable.
_CONSUL_OPTIONS = (
    ("--consul-addr", "consul_addr", "HOST:PORT",
     "Consul HTTP address, HOST:PORT or http(s)://HOST:PORT (default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500; "
     "CONSUL_HTTP_SSL=true makes HOST:PORT https)."),
    ("--consul-token", "consul_token", "TOKEN",
     "ACL token (default: CONSUL_HTTP_TOKEN). Daemons move it out of their process arguments at start; "
     "a token file is still preferred."),
    ("--consul-token-file", "consul_token_file", "FILE", "File holding the ACL token (default: CONSUL_HTTP_TOKEN_FILE)."),
    ("--consul-cacert", "consul_cacert", "FILE", "CA certificate to verify Consul's HTTPS with (default: CONSUL_CACERT)."),
    ("--consul-capath", "consul_capath", "DIR", "Directory of CA certificates (default: CONSUL_CAPATH)."),
    ("--consul-client-cert", "consul_client_cert", "FILE",
     "Client certificate, for agents with verify_incoming (default: CONSUL_CLIENT_CERT)."),
    ("--consul-client-key", "consul_client_key", "FILE", "Its key (default: CONSUL_CLIENT_KEY)."),
    ("--consul-tls-server-name", "consul_tls_server_name", "NAME",
     "Name to verify in Consul's certificate and send as SNI, e.g. server.dc1.consul "
     "(default: CONSUL_TLS_SERVER_NAME, else the address's host)."),
)


def consul_options(command):
    command = click.option("--consul-tls-skip-verify", "consul_tls_skip_verify", is_flag=True, default=None,
                           help="Do not verify Consul's certificate (default: CONSUL_HTTP_SSL_VERIFY=false "
                                "does the same); for testing only.")(command)
    for flag, destination, metavar, text in reversed(_CONSUL_OPTIONS):
        command = click.option(flag, destination, default=None, metavar=metavar, help=text)(command)
    return command


def tls_values(values: dict) -> dict:
    """The TLS part of ``consul_options``' values, keyed as ``agentkit.consul.resolve_tls`` takes them."""
    return {"ca_file": values.get("consul_cacert"), "ca_path": values.get("consul_capath"),
            "cert_file": values.get("consul_client_cert"), "key_file": values.get("consul_client_key"),
            "server_name": values.get("consul_tls_server_name"), "skip_verify": values.get("consul_tls_skip_verify")}


def log_level_option(command):
    command = click.option("--log-format", type=click.Choice(FORMATS, case_sensitive=False), default=None,
                           help="text, or json: one object per line with the decision's fields "
                                "(default: text).")(command)
    return click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
                        help="Logging threshold (default: info).")(command)


def status_address_option(command, envvar: str | None = None):
    return click.option("--status-address", default=None, metavar="HOST:PORT", envvar=envvar,
                        help="Serve /metrics (Prometheus), /health, /ready and a status page here "
                             "(default: off; the systemd units use loopback"
                             + (f"; the environment's {envvar}" if envvar else "") + ").")(command)


def version_option(program: str):
    """``--version``: the installed package's version."""
    return click.version_option(package_name="consul-nginx-sync", prog_name=program,
                                message="%(prog)s %(version)s")
