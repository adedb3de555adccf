"""What every ``renderer`` command shares: its settings, or one line naming the mistake and an exit code."""

from __future__ import annotations

import sys

import click

from agentkit import logs
from agentkit.errors import AgentError, ConfigError

from . import settings as settings_module

kv_prefix_option = click.option(
    "--kv-prefix", "kv_prefix", default=None, metavar="PREFIX",
    help="Where the operator's route settings are in Consul KV: PREFIX/routes/SERVICE/KEY overrides, "
         "PREFIX/defaults/KEY defaults (default: consul-nginx-sync; \"\": none). See docs/routes.md.")


def fail(message: str, code: int = 1):
    click.echo(f"renderer: {message}", err=True)
    sys.exit(code)


def load_settings(flags: dict, need_templates: bool = False) -> settings_module.Settings:
    """Settings from flags, files and environment, or exit 2 with the one line naming the mistake."""
    try:
        settings = settings_module.build(flags)
        if need_templates and not settings.template_specs() and not settings.template_dirs:
            raise ConfigError("no templates: give --template SRC:DEST or --template-dir SRCDIR:DESTDIR")
    except AgentError as error:
        fail(str(error), 2)
    logs.configure(settings.log_level, "renderer", settings.log_format)
    return settings
