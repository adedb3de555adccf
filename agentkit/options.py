"""Click options both daemons take, so their names and help never drift apart."""

from __future__ import annotations

import click

from .logs import LEVELS


def consul_options(command):
    command = click.option("--consul-token-file", default=None, metavar="FILE",
                           help="File holding the ACL token (default: CONSUL_HTTP_TOKEN_FILE).")(command)
    command = click.option("--consul-token", default=None, metavar="TOKEN",
                           help="ACL token (default: CONSUL_HTTP_TOKEN). Daemons move it out of their "
                                "process arguments at start; a token file is still preferred.")(command)
    command = click.option("--consul-addr", default=None, metavar="HOST:PORT",
                           help="Consul HTTP address, HOST:PORT or http(s)://HOST:PORT "
                                "(default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500).")(command)
    return command


def log_level_option(command):
    return click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
                        help="Logging threshold (default: info).")(command)
