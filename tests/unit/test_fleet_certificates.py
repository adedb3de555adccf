"""The fleet's certificates as data and files: KV's layout, sealed keys, renewal, the routes waiting for one,
cert_dir kept in step; the issuer's turn with a fake Consul and a fake ACME server."""

from __future__ import annotations

import base64
import datetime
import os
import stat
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from renderer.catalog.certificates import CertificateSet
from renderer.catalog.kv import KvSnapshot
from renderer.catalog.kv_certificates import (CertificateProblem, Sealer, StoredCertificate, challenges,
                                              renewal_due, stored_certificates)
from renderer.certs.files import CertificateFiles
from renderer.routes.builder import build
from renderer.routes.model import RouteOptions
from renderer.catalog.model import Catalog, Instance

P = "consul-nginx-sync"
DAY = 86400


def pem_pair(host: str, days: float = 90) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
                   .sign(key, hashes.SHA256()))
    return (certificate.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def kv_of(pairs: dict) -> KvSnapshot:
    return KvSnapshot([f"{P}/"], pairs)


def test_a_sealed_key_opens_with_the_fleet_key_at_its_own_path_only():
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal(f"{P}/certs/a.example.org/key", "-----BEGIN PRIVATE KEY-----x")
    assert sealed.startswith("sealed:aes-256-gcm:") and "PRIVATE" not in sealed
    assert sealer.open(f"{P}/certs/a.example.org/key", sealed) == "-----BEGIN PRIVATE KEY-----x"
    with pytest.raises(CertificateProblem, match="does not open"):
        sealer.open(f"{P}/certs/b.example.org/key", sealed)  # moved to another host: refused
    with pytest.raises(CertificateProblem, match="does not open"):
        Sealer(os.urandom(32)).open(f"{P}/certs/a.example.org/key", sealed)
    with pytest.raises(CertificateProblem, match="no --cert-encryption-key"):
        Sealer(None).open(f"{P}/certs/a.example.org/key", sealed)
    assert Sealer(None).seal("x", "pem") == "pem"


def test_the_fleet_key_file_is_32_bytes_of_base64(tmp_path):
    from renderer.errors import ConfigError
    good, short, bad = tmp_path / "good", tmp_path / "short", tmp_path / "bad"
    good.write_text(base64.b64encode(os.urandom(32)).decode())
    short.write_text(base64.b64encode(os.urandom(16)).decode())
    bad.write_text("not base64!")
    assert Sealer.from_file(str(good)).sealing and not Sealer.from_file(None).sealing
    with pytest.raises(ConfigError, match="holds 16 bytes, AES-256 needs 32"):
        Sealer.from_file(str(short))
    with pytest.raises(ConfigError, match="cannot be read as base64"):
        Sealer.from_file(str(bad))


def test_certificates_in_kv_and_one_line_for_each_that_cannot_be_used():
    chain, key = pem_pair("a.example.org")
    sealer = Sealer(os.urandom(32))
    found, problems = stored_certificates(kv_of({
        f"{P}/certs/a.example.org/chain": chain, f"{P}/certs/a.example.org/key": sealer.seal(
            f"{P}/certs/a.example.org/key", key), f"{P}/certs/a.example.org/source": "acme",
        f"{P}/certs/b.example.org/chain": chain,
        f"{P}/certs/c.example.org/chain": "junk", f"{P}/certs/c.example.org/key": key,
        f"{P}/routes/shop/canary_percent": "5"}), P, sealer)
    assert list(found) == ["a.example.org"] and found["a.example.org"].key == key
    assert found["a.example.org"].source == "acme" and 89 * DAY < found["a.example.org"].lifetime <= 90 * DAY
    assert problems == {"b.example.org": f"certificate {P}/certs/b.example.org/ has no key: not used",
                        "c.example.org": problems["c.example.org"]}
    assert "is not a PEM certificate" in problems["c.example.org"]


def test_renewal_is_due_with_a_third_of_the_lifetime_left_and_30_days_at_the_latest():
    def due(lifetime_days, left_days):
        return renewal_due(StoredCertificate("h", "", "", "acme", 0, lifetime_days * DAY),
                           (lifetime_days - left_days) * DAY)
    assert not due(90, 31) and due(90, 30)
    assert not due(365, 31) and due(365, 30), "30 days at the latest"
    assert not due(0.0009, 0.0004) and due(0.0009, 0.0003), "75 s: renewed with 25 s left"


def test_only_well_formed_challenges_reach_nginx():
    token, thumbprint = "A" * 43, "b" * 43
    assert challenges(kv_of({f"{P}/acme/challenges/{token}": f"{token}.{thumbprint}",
                             f"{P}/acme/challenges/{'C' * 43}": f"{token}.{thumbprint}",  # another token's answer
                             f"{P}/acme/challenges/short": "short.x",
                             f"{P}/acme/challenges/{'D' * 43}": 'x"; return 500;'}), P) == (
        (token, f"{token}.{thumbprint}"),)


def test_a_host_waiting_for_its_acme_certificate_is_served_over_http_and_wanted():
    options = RouteOptions.from_variables({"domain": "example.org", "kv_prefix": P})
    shop = Instance("shop-1", "shop", "10.0.0.1", 1, ("http",), MappingProxyType(
        {"tls": "terminate", "tls_acme": "true"}), "n1", "passing")
    manual = Instance("api-1", "api", "10.0.0.1", 2, ("http",), MappingProxyType({"tls": "terminate"}), "n1",
                      "passing")
    table = build(Catalog([], [shop, manual]), options, CertificateSet("/certs", MappingProxyType({})))
    assert table.acme_wanted == ("shop.example.org",)
    (host,) = table.hosts
    assert host.name == "shop.example.org" and not host.https and host.http[0].action == "proxy"
    assert any("waits for its certificate from the fleet's ACME issuer" in note for note in table.notes)
    assert any("api.example.org path /: no certificate" in str(r) for r in table.refused), "no tls_acme: refused"
    certs = CertificateSet("/certs", MappingProxyType({"shop.example.org.crt": (1, 1), "shop.example.org.key": (1, 1)}))
    served = build(Catalog([], [shop]), options, certs)
    assert not served.acme_wanted and served.hosts[0].https and served.hosts[0].http[0].action == "redirect"


def test_cert_dir_follows_kv_and_an_operators_own_pair_wins(tmp_path):
    chain, key = pem_pair("a.example.org")
    files = CertificateFiles(tmp_path)
    record = StoredCertificate("a.example.org", chain, key, "acme", 0, 1)
    (tmp_path / "mine.example.org.crt").write_text("operator's")
    assert files.apply({"a.example.org": record, "mine.example.org": StoredCertificate(
        "mine.example.org", chain, key, "import", 0, 1)})
    assert (tmp_path / "a.example.org.crt").read_text() == chain
    assert stat.S_IMODE(os.stat(tmp_path / "a.example.org.key").st_mode) == 0o600
    assert (tmp_path / "mine.example.org.crt").read_text() == "operator's", "the operator's own file wins"
    assert not files.apply({"a.example.org": record}), "nothing changed"
    assert not files.apply({}, frozenset({"a.example.org"})), "unreadable in KV now: its files kept"
    assert files.apply({}) and not (tmp_path / "a.example.org.crt").exists(), "removed from KV: files gone"
    assert (tmp_path / "mine.example.org.crt").exists()


class FakeConsul:
    """The parts of Consul the issuer uses: KV (with acquire), sessions, transactions."""

    address = "fake-consul"

    def __init__(self):
        self.values: dict[str, str] = {}
        self.holder: str | None = None  # the session holding the lock
        consul = self

        class Kv:
            def get(self, path):
                return 0, ({"Value": consul.values[path].encode()} if path in consul.values else None)

            def put(self, path, value, acquire=None):
                if acquire is not None:
                    if consul.holder not in (None, acquire):
                        return False
                    consul.holder = acquire
                consul.values[path] = value
                return True

            def delete(self, path, recurse=False):
                for key in [k for k in consul.values if k == path or (recurse and k.startswith(path))]:
                    del consul.values[key]

        class Session:
            count = 0

            def create(self, **_):
                Session.count += 1
                return f"session-{Session.count}"

            def renew(self, session):
                return {"ID": session}

            def destroy(self, session):
                if consul.holder == session:
                    consul.holder = None

        class Txn:
            def put(self, operations):
                for op in operations:
                    consul.values[op["KV"]["Key"]] = base64.b64decode(op["KV"]["Value"]).decode()

        self.kv, self.session, self.txn = Kv(), Session(), Txn()

    def get_json(self, path, params=None, absent_ok=False, **_):
        from agentkit.consul import Answer
        prefix = path[len("/v1/kv/"):]
        entries = [{"Key": k, "Value": base64.b64encode(v.encode()).decode()}
                   for k, v in self.values.items() if k.startswith(prefix)]
        return Answer(1, entries or None)


class FakeAcme:
    def __init__(self, fail: bool = False):
        self.orders, self.fail = [], fail

    def new_account_key(self):
        return "-----BEGIN PRIVATE KEY-----account"

    def order(self, host, account, publish, served, withdraw):
        from renderer.errors import AcmeFailure
        self.orders.append(host)
        publish("T" * 43, "T" * 43 + "." + "t" * 43)
        served("T" * 43, "")
        withdraw("T" * 43)
        if self.fail:
            raise AcmeFailure(f"{host}: urn:ietf:params:acme:error:connection")
        return pem_pair(host, days=90)


def issuer_with(consul, acme, wanted, clock, node="node1"):
    from renderer.certs.issuer import Issuer, IssuerSettings
    settings = IssuerSettings("https://acme.test/dir", None, None, P, node, Sealer(None))
    return Issuer(consul, settings, acme, lambda: wanted, lambda: [], clock=lambda: clock[0])


def test_the_lock_holder_orders_each_wanted_host_once_and_another_renderer_waits():
    consul, acme, clock = FakeConsul(), FakeAcme(), [0.0]
    first = issuer_with(consul, acme, ("shop.example.org", "*.example.org"), clock)
    second = issuer_with(consul, FakeAcme(), ("shop.example.org",), clock, node="node2")
    assert first.step() == 0.0 and acme.orders == ["shop.example.org"], "the wildcard needs dns-01: manual"
    assert consul.values[f"{P}/certs/shop.example.org/source"] == "acme"
    assert "PRIVATE KEY" in consul.values[f"{P}/certs/shop.example.org/key"]
    assert not [k for k in consul.values if "/challenges/" in k], "the challenge withdrawn"
    assert consul.values[f"{P}/acme/lock"] == "node1"
    assert second.step() == 5.0 and second.orders == 0, "no lock, no order"
    assert first.step() == 3.0 and acme.orders == ["shop.example.org"], "in KV now: nothing due"
    first.lock.release()
    assert second.step() == 3.0, "the lock free: the next renderer holds it, and finds nothing due"


def test_a_failed_order_is_tried_again_after_a_backoff_that_doubles():
    consul, acme, clock = FakeConsul(), FakeAcme(fail=True), [0.0]
    issuer = issuer_with(consul, acme, ("shop.example.org",), clock)
    issuer.step()
    assert issuer.due() == [] and issuer.backoff["shop.example.org"] == (10.0, 10.0)
    clock[0] = 10.0
    issuer.step()
    assert acme.orders == ["shop.example.org"] * 2 and issuer.backoff["shop.example.org"] == (20.0, 30.0)


def test_a_certificate_due_for_renewal_is_ordered_again():
    consul, acme, clock = FakeConsul(), FakeAcme(), [0.0]
    chain, key = pem_pair("old.example.org", days=10)  # 10 days left of 10: a third left only in 3 days
    for name, value in (("chain", chain), ("key", key), ("source", "acme")):
        consul.values[f"{P}/certs/old.example.org/{name}"] = value
    issuer = issuer_with(consul, acme, (), clock)
    issuer.wall = lambda: datetime.datetime.now().timestamp() + 7 * DAY
    issuer.step()
    assert acme.orders == ["old.example.org"]
    issuer.wall = lambda: datetime.datetime.now().timestamp()
    assert issuer.due() == [], "the renewed one is good for 90 days"


def test_renderer_certs_import_refuses_what_is_not_a_certificate_in_one_line(tmp_path):
    from click.testing import CliRunner

    from renderer.cli import main
    junk, chain_path, key_path = tmp_path / "junk.pem", tmp_path / "a.crt", tmp_path / "a.key"
    junk.write_text("junk")
    chain, key = pem_pair("a.example.org")
    chain_path.write_text(chain)
    key_path.write_text(key)
    runner = CliRunner()
    bad_certificate = runner.invoke(main, ["certs", "import", "a.example.org", str(junk), str(key_path)])
    assert bad_certificate.exit_code == 2
    assert "renderer: a.example.org: is not a PEM certificate" in bad_certificate.output
    bad_key = runner.invoke(main, ["certs", "import", "a.example.org", str(chain_path), str(junk)])
    assert bad_key.exit_code == 2 and f"renderer: a.example.org: {junk} is not a PEM private key" in bad_key.output
    short_key = tmp_path / "short.key"
    short_key.write_text(base64.b64encode(os.urandom(8)).decode())
    sealed = runner.invoke(main, ["certs", "import", "a.example.org", str(chain_path), str(key_path),
                                  "--cert-encryption-key", str(short_key)])
    assert sealed.exit_code == 2 and "holds 8 bytes, AES-256 needs 32" in sealed.output
