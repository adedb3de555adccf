"""``renderer certs``: the fleet's certificates in Consul KV, and importing one for every nginx node.

    renderer certs                              every certificate in KV: host, source, expiry, days left
    renderer certs import HOST CERT KEY         HOST's certificate (chain) and key, to every nginx node
    renderer certs remove HOST                  taken out of KV (and from every node's cert_dir)

An imported certificate is distributed the way the ACME issuer's are: each
renderer writes it into its ``cert_dir`` and reloads nginx. The key is
sealed with ``--cert-encryption-key`` when one is given (the fleet key every
renderer has).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from agentkit.errors import AgentError
from agentkit.options import consul_options, log_level_option

from . import wiring
from .catalog import kv_certificates
from .catalog.kv_certificates import CertificateProblem, Sealer
from .certs import store
from .command_line import fail, kv_prefix_option, load_settings


def certs_options(command):
    for decorator in reversed([
        click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                     help="TOML config; only its Consul settings, kv_prefix and cert_encryption_key are used."),
        kv_prefix_option,
        click.option("--cert-encryption-key", default=None, metavar="FILE",
                     help="The fleet key private keys in KV are sealed with."),
    ]):
        command = decorator(command)
    return consul_options(log_level_option(command))


def _context(flags):
    settings = load_settings(flags)
    prefix = settings.variables.get("kv_prefix")
    if not prefix:
        fail("certificates live under the KV prefix: --kv-prefix must not be empty", 2)
    try:
        sealer = Sealer.from_file(str(settings.cert_encryption_key) if settings.cert_encryption_key else None)
    except AgentError as error:
        fail(str(error), 2)
    return settings, prefix, sealer


@click.group("certs", invoke_without_command=True)
@certs_options
@click.pass_context
def certs(context, **flags):
    """The fleet's certificates in Consul KV, with their expiry."""
    if context.invoked_subcommand is not None:
        context.obj = flags
        return
    settings, prefix, sealer = _context(flags)
    try:
        client = wiring.connect(settings, timeout=10)
        stored, problems = store.read_certificates(client, prefix, sealer)
    except AgentError as error:
        fail(str(error), 1)
    now = time.time()
    lines = [f"{host}  {c.source}  expires {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(c.not_after))}  "
             f"({(c.not_after - now) / 86400:.1f} days left)" + ("  renewal due" if c.source == "acme" and
                                                                 kv_certificates.renewal_due(c, now) else "")
             for host, c in sorted(stored.items())]
    click.echo("\n".join(lines or [f"no certificate under {kv_certificates.certs_path(prefix)}"]))
    for problem in problems.values():
        click.echo(problem, err=True)


@certs.command("import")
@click.argument("host")
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False))
@click.argument("key", type=click.Path(exists=True, dir_okay=False))
@certs_options
def import_certificate(host, certificate, key, **flags):
    """HOST's certificate (with its chain) and private key, to every nginx node through KV."""
    settings, prefix, sealer = _context(flags)
    chain, private = Path(certificate).read_text(), Path(key).read_text()
    try:
        kv_certificates.validity(chain)
        if "PRIVATE KEY-----" not in private:
            raise CertificateProblem(f"{key} is not a PEM private key")
    except CertificateProblem as problem:
        fail(f"{host}: {problem}", 2)
    try:
        store.write_certificate(wiring.connect(settings, timeout=10), prefix, host.lower(), chain, private, "import",
                                sealer)
    except AgentError as error:
        fail(str(error), 1)
    click.echo(f"{host}: written to {kv_certificates.certs_path(prefix, host.lower())}"
               + (" (key sealed)" if sealer.sealing else "") + "; every renderer writes it to its cert_dir")


@certs.command("remove")
@click.argument("host")
@certs_options
def remove_certificate(host, **flags):
    """HOST's certificate out of KV; each renderer removes the files it wrote."""
    settings, prefix, _ = _context(flags)
    try:
        store.remove_certificate(wiring.connect(settings, timeout=10), prefix, host.lower())
    except AgentError as error:
        fail(str(error), 1)
    click.echo(f"{host}: removed from {kv_certificates.certs_path(prefix, host.lower())}")
