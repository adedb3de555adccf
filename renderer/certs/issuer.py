"""The fleet's issuer: the one renderer holding a Consul lock orders and renews every certificate.

Every renderer with ``--acme-directory`` runs one. At most one holds
``PREFIX/acme/lock`` (a Consul session with a TTL, released when its
renderer stops, its node fails or the session is not renewed in time) and
works; the others try the lock every few seconds and take over when it is
free. The holder, one host at a time, so no two orders for one host are
ever placed:

* orders a certificate for each host the route table wants (a host of a
  ``tls=terminate`` route with ``tls_acme``, no certificate in ``cert_dir``
  or KV, not a wildcard: those need dns-01) and renews every ACME
  certificate in KV that is due (:func:`renderer.catalog.kv_certificates.renewal_due`);
* publishes each http-01 challenge in KV, where every renderer makes its
  nginx answer it, and lets the CA validate once every live renderer
  reports that its nginx does (their ``/acme-challenges``): the CA may ask
  any node behind the name;
* writes the certificate and its key (sealed with ``--cert-encryption-key``)
  to KV; every renderer then writes it into its ``cert_dir`` and reloads.

A failed order is said in one line and tried again after a backoff (10 s,
doubling, at most an hour): level-triggered, never a final verdict.
:meth:`Issuer.step` is one turn, driven with fakes in the tests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from agentkit.consul import Consul, translate_errors
from agentkit.errors import AgentError

from renderer.catalog import kv_certificates as layout
from renderer.catalog.kv_certificates import Sealer, renewal_due
from renderer.errors import AcmeFailure

from . import store

if TYPE_CHECKING:  # certbot's acme is imported only where ACME is on (renderer.certs.fleet)
    from .acme_server import AcmeServer

log = logging.getLogger("renderer")
LOCK_TTL = 10          # seconds: Consul's shortest; the session is renewed every third of it, orders or not
LOCK_RETRY = 5.0       # how often a renderer without the lock tries it
IDLE = 3.0             # how often the holder looks for what is due when nothing is (one KV read)
SERVED_WAIT = 30.0     # how long the holder waits for every nginx to answer a challenge
UNASKED_GRACE = 2.0    # what it gives a renderer whose status page it cannot reach (bound to loopback)
FIRST_BACKOFF, LAST_BACKOFF = 10.0, 3600.0


@dataclasses.dataclass(frozen=True)
class IssuerSettings:
    directory: str
    email: str | None
    ca_bundle: str | None
    prefix: str
    node: str       # this renderer, as the lock's value says who holds it
    sealer: Sealer


class FleetLock:
    """``PREFIX/acme/lock``, held through a Consul session of this renderer's node."""

    def __init__(self, consul: Consul, path: str, holder: str):
        self.consul, self.path, self.holder = consul, path, holder
        self.session: str | None = None
        self.held = False
        self._stop = threading.Event()
        # The session is renewed on a thread of its own: an order must not outlast it (another renderer
        # would take the lock and order the same host), and a dead renderer's lock frees within 2 TTLs.
        self._keeper = threading.Thread(target=self._keep, name="acme-lock", daemon=True)

    def hold(self) -> bool:
        try:
            with translate_errors(self.consul.address):
                if self.session is None:
                    self.session = self.consul.session.create(name="consul-nginx-sync-acme", behavior="release",
                                                              ttl=LOCK_TTL, lock_delay=5)
                    if not self._keeper.is_alive():
                        self._keeper.start()
                held = bool(self.consul.kv.put(self.path, self.holder, acquire=self.session))
        except AgentError as error:
            log.warning("the fleet's ACME lock %s cannot be tried: %s", self.path, error)
            held = False
        if held != self.held:
            log.info("%s the fleet's ACME lock %s", "holding" if held else "no longer holding", self.path)
        self.held = held
        return held

    def _keep(self) -> None:
        while not self._stop.wait(LOCK_TTL / 3):
            session = self.session
            if session is None:
                continue
            try:
                with translate_errors(self.consul.address):
                    if self.consul.session.renew(session) is None:  # expired: the next turn makes a new one
                        self.session, self.held = None, False
                        log.warning("the ACME lock's session %s expired; the lock is tried again", session)
            except AgentError as error:
                log.warning("the ACME lock's session cannot be renewed: %s", error)

    def release(self) -> None:
        self._stop.set()
        if self.session is None:
            return
        try:
            with translate_errors(self.consul.address):
                self.consul.session.destroy(self.session)  # releases the lock at once (Behavior=release)
        except AgentError:
            pass  # its TTL runs out instead
        self.session, self.held = None, False


class Issuer:
    def __init__(self, consul: Consul, settings: IssuerSettings, server: AcmeServer,
                 wanted: Callable[[], tuple[str, ...]], renderers: Callable[[], list[str | None]],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.consul, self.settings, self.server = consul, settings, server
        self.wanted, self.renderers = wanted, renderers
        self.clock, self.wall = clock, wall
        self.lock = FleetLock(consul, layout.lock_path(settings.prefix), settings.node)
        self.backoff: dict[str, tuple[float, float]] = {}  # host -> (last delay, not before)
        self.orders = 0  # placed by this renderer (the tests count them)

    def due(self) -> list[str]:
        """The hosts to order for now, in order: wanted and missing first, then renewals."""
        # What cannot be used is said once by every renderer writing cert_dir (certs.fleet), not every turn here.
        stored, problems = store.read_certificates(self.consul, self.settings.prefix, self.settings.sealer)
        now, wall = self.clock(), self.wall()
        # One in KV that cannot be read here (another fleet key) is not ordered over: the operator is told.
        missing = [h for h in self.wanted() if h not in stored and h not in problems and not h.startswith("*.")]
        renewals = [h for h, c in sorted(stored.items()) if c.source == "acme" and renewal_due(c, wall)]
        return [h for h in dict.fromkeys([*missing, *renewals]) if self.backoff.get(h, (0.0, 0.0))[1] <= now]

    def step(self) -> float:
        """One turn; the seconds until the next."""
        if not self.lock.hold():
            return LOCK_RETRY
        try:
            due = self.due()
        except AgentError as error:
            log.warning("certificates in KV cannot be read: %s", error)
            return LOCK_RETRY
        if not due:
            return IDLE
        self.issue(due[0])
        return 0.0

    def issue(self, host: str) -> None:
        settings = self.settings
        try:
            account = self._account()
            self.orders += 1
            log.info("ordering a certificate for %s from %s", host, settings.directory)
            chain, key = self.server.order(
                host, account,
                publish=lambda token, value: store.publish_challenge(self.consul, settings.prefix, token, value),
                served=self._served,
                withdraw=lambda token: self._quietly(store.withdraw_challenge, self.consul, settings.prefix, token))
            store.write_certificate(self.consul, settings.prefix, host, chain, key, "acme", settings.sealer)
        except (AcmeFailure, AgentError) as error:
            delay = min(LAST_BACKOFF, self.backoff.get(host, (FIRST_BACKOFF / 2, 0.0))[0] * 2)
            self.backoff[host] = (delay, self.clock() + delay)
            log.warning("certificate for %s not issued: %s; trying again in %.0f s", host, error, delay)
            return
        self.backoff.pop(host, None)
        not_after = layout.validity(chain)[1]
        log.info("certificate for %s issued, valid until %s, written to KV for every nginx node", host,
                 time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(not_after)))

    def _account(self) -> str:
        settings = self.settings
        known = store.read_account(self.consul, settings.prefix, settings.sealer)
        if known is not None and known[0] == settings.directory:
            return known[1]
        key = self.server.new_account_key()
        store.write_account(self.consul, settings.prefix, settings.directory, key, settings.sealer)
        log.info("a new ACME account key for %s, kept in KV", settings.directory)
        return key

    def _served(self, token: str, _validation: str) -> None:
        """Return once every live renderer's nginx answers ``token`` (or after SERVED_WAIT, saying who does not).
        A renderer whose status page only its own node reaches (``renderers()`` gives None) cannot be asked:
        a short grace covers it, as long as its KV watch takes to render."""
        deadline = self.clock() + SERVED_WAIT
        while True:
            renderers = self.renderers()
            lagging = [url for url in renderers if url is not None and not _serves(url, token)]
            if not lagging:
                if None in renderers:
                    time.sleep(UNASKED_GRACE)
                return
            if self.clock() >= deadline:
                log.warning("challenge %s not yet answered by the nginx of %s; letting the CA validate anyway",
                            token, ", ".join(lagging))
                return
            time.sleep(0.05)

    @staticmethod
    def _quietly(function, *args) -> None:
        try:
            function(*args)
        except AgentError as error:
            log.warning("challenge not withdrawn from KV (it expires with its order): %s", error)


def _serves(status_url: str, token: str) -> bool:
    try:
        answer = requests.get(f"{status_url}/acme-challenges", timeout=2)
        return answer.ok and token in json.loads(answer.text)
    except (requests.RequestException, ValueError):
        return False


class IssuerThread:
    """Runs :meth:`Issuer.step` until stopped (a stop cuts its wait short)."""

    def __init__(self, issuer: Issuer):
        self.issuer = issuer
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acme-issuer", daemon=True)

    def start(self) -> "IssuerThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self.issuer.lock.release()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.issuer.step()
            except Exception:  # noqa: BLE001 - the issuer must outlive a bug in one turn; it says so
                log.exception("the ACME issuer's turn failed; trying again")
                delay = LOCK_RETRY
            self._wake.wait(delay)
            self._wake.clear()
