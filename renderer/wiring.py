"""Start-up wiring, in one place: what ``renderer run`` and ``renderer once`` (and ``render``) build from settings.

The daemon and the one-shot commands render, check and reload the same
way; this is where settings become those parts, so the two cannot drift.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator

import jinja2

from agentkit.consul import Consul
from agentkit.lifecycle import Lifecycle

from .apply import commands
from .apply.applier import Applier
from .apply.journal import recover
from .apply.nginx_master import NginxMaster
from .catalog import certificates
from .catalog.fetch import DEFAULT_WAIT
from .catalog.kv_certificates import Sealer
from .certs import store
from .certs.fleet import FleetCertificates
from .render.api import TemplateData
from .render.loader import TemplateLoader
from .render.render_pass import RenderPass
from .routes.model import RENDERER_SERVICE
from .settings import Settings

log = logging.getLogger("renderer")
# The reload where no reload command is set and nginx's master is not known (nginx_pid_file ""): with the
# master known, the renderer sends the signal itself (NginxMaster.signal_reload says why).
FALLBACK_RELOAD = "nginx -s reload"


def tune_garbage_collector() -> None:
    """Collect cycles rarely: the catalog is acyclic data, rebuilt on every change.

    Building a large catalog allocates tens of thousands of objects, and with
    Python's default thresholds (700 allocations) the cyclic collector runs
    over and over and scans everything alive. Measured on the 5,000 x 3 node
    dump with the msgspec decoder: catalog build 42 -> 14 ms (the decoded
    dump itself is not tracked, see renderer.catalog.node_dump). Cycles are
    still collected, less often.
    """
    gc.set_threshold(100_000, 50, 1000)


def connect(settings: Settings, timeout: float = DEFAULT_WAIT + 20) -> Consul:
    return Consul(settings.consul_address, settings.consul_token, timeout=timeout, tls=settings.consul_tls)


@contextlib.contextmanager
def bytecode_cache() -> Iterator[jinja2.BytecodeCache]:
    """Compiled templates kept on disk for this process (the render child compiles; the next child reuses)."""
    directory = tempfile.mkdtemp(prefix="renderer-bytecode-")
    try:
        yield jinja2.FileSystemBytecodeCache(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def make_pass(settings: Settings, lifecycle: Lifecycle | None = None,
              bytecode: jinja2.BytecodeCache | None = None, retrying: bool = True) -> RenderPass:
    """The render pass for these settings: templates, limits, the nginx commands and their confirmation."""
    lifecycle = lifecycle or Lifecycle()
    master = (NginxMaster(settings.nginx_pid_file, settings.nginx_error_log, settings.reload_timeout, lifecycle)
              if settings.nginx_pid_file else None)

    def reload() -> bool:
        before = master.before() if master else None
        if master is not None and not settings.reload_command:
            master.signal_reload(before)
        else:
            commands.run("nginx reload", settings.reload_command or FALLBACK_RELOAD, lifecycle=lifecycle)
        if master is None:
            return False
        master.confirm(before)
        return True

    # The reload validates where nginx confirms it (renderer.apply.applier); unconfirmed, check first.
    applier = Applier(check=lambda: commands.run("nginx config check", settings.check_command, lifecycle=lifecycle),
                      reload=reload, clock=lifecycle.clock,
                      check_first=settings.check_before_reload or master is None)
    return RenderPass(TemplateLoader(settings.variables, bytecode), applier, settings.template_specs(),
                      settings.limits, lifecycle, retrying)


def recover_destinations(settings: Settings) -> None:
    """Before the first pass of a process: put back what nginx last confirmed running."""
    for destination in recover(spec.destination for spec in settings.template_specs()):
        log.warning("put %s back as nginx last confirmed running it (an earlier pass was interrupted or "
                    "its reload never confirmed); rendering it again", destination)


def certificate_data(settings: Settings) -> TemplateData:
    """Template data holding only the certificate directory, as a process starts with."""
    return TemplateData(certificates=certificates.scan(settings.variables.get("cert_dir")))


def fleet_certificates(settings: Settings) -> FleetCertificates | None:
    """KV's certificates into ``cert_dir`` (None without a KV prefix: route settings and certificates off)."""
    prefix = settings.variables.get("kv_prefix")
    if not prefix:
        return None
    return FleetCertificates(prefix, settings.variables.get("cert_dir"), Sealer.from_file(
        str(settings.cert_encryption_key) if settings.cert_encryption_key else None))


def certificates_once(settings: Settings, client: Consul) -> None:
    """``renderer once``: KV's certificates written into ``cert_dir`` before the pass that reads it."""
    fleet = fleet_certificates(settings)
    if fleet is not None and fleet.files is not None:
        fleet.write(*store.read_certificates(client, fleet.prefix, fleet.sealer))


def start_certificates(settings: Settings, connect, catalog, running) -> FleetCertificates | None:
    """``renderer run``'s part in the fleet's certificates; with ``--acme-directory``, a candidate issuer.
    ``catalog()`` is the catalog the daemon holds now (the live renderers are in it), ``running()`` the route
    table nginx runs: the hosts it serves waiting for a certificate are ordered for."""
    fleet = fleet_certificates(settings)
    acme = settings.acme
    if fleet is None or acme is None:
        return fleet

    def renderers() -> list[str | None]:
        """The live renderers' status pages (does their nginx answer a challenge?); None for one bound to its
        own node's loopback (the systemd unit's 127.0.0.1:9465), which only that node reaches."""
        now = catalog()
        if now is None:
            return []
        here = socket.gethostname()
        return [None if i.address.startswith("127.") and i.node != here else f"http://{i.host_port}"
                for i in now.instances_of(RENDERER_SERVICE, passing=True)]
    fleet.start_issuer(connect(settings, timeout=30), acme.directory, acme.email,
                       str(acme.ca_bundle) if acme.ca_bundle else None, socket.gethostname(), renderers,
                       lambda: getattr(running(), "acme_wanted", ()))
    return fleet
