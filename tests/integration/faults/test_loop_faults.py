"""Faults across the whole loop.

Both daemons run as operators run them, against the real Docker engine,
Consul and nginx: a busybox container -> ``registrar run`` -> Consul ->
``renderer run`` -> nginx, measured by a probe through nginx every 100 ms.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import requests

from tests.support.loop import ACL_MASTER_TOKEN
from tests.support.docker_engine import PrivateDockerEngine
from tests.support.probe import Probe
from tests.support.renderer_process import RENDERER, run_once
from tests.support.waiting import wait_until
from tests.support.web_containers import WebContainers

README = Path(__file__).resolve().parents[3] / "README.md"


def catalog_entry(agent, name: str) -> list[dict]:
    return agent.get(f"/v1/catalog/service/{name}")


def test_consul_restarted_empty_loses_no_request(loop, consul_agent):
    """The agent stops for 5 s and comes back empty; not one probe fails, and a deploy meanwhile is served.

    The registrar is paused (SIGSTOP) from just before Consul starts again
    until the renderer has seen the empty catalog: otherwise which of the two
    reaches the new agent first is a race, and the renderer's hold would be
    exercised only sometimes. Paused, the registrar is simply a slow host,
    and the renderer must keep the last good config until it catches up.

    The registrar maps every container on the engine; if containers that are
    not this test's (a bench sharing dockerd) go away during the outage, their
    services never come back and the hold lasts the whole grace period. That
    is the documented behaviour, so then the grace release is accepted; with
    only this test's containers changing, the renderer must recover early.
    """
    renderer = loop.start_renderer("--grace", "20s")
    registrar = loop.start_registrar("--resync", "600")  # a resync must not be what saves us
    loop.web.start("web", "web", body="web-1")
    loop.serving("web", "web-1")
    before = loop.rendered()

    with Probe(loop.nginx.http_port, loop.host("web"), "web-1") as probe:
        foreign = loop.web.foreign()
        consul_agent.stop()
        outage = probe.answered
        try:
            renderer.wait_for_log("catalog watch: cannot reach Consul", timeout=10)
            registrar.wait_for_log("keeping the desired state", timeout=10)  # both daemons saw the outage
            probe.cover(20, since=outage)  # the outage itself was probed
            registrar.signal(signal.SIGSTOP)
        finally:
            consul_agent.start()  # the agent is shared: it runs again whatever happens
        try:
            renderer.wait_for_log("the catalog index went backwards", timeout=20)
            assert loop.rendered() == before, "the empty catalog must not be rendered"
            probe.cover(5)  # and the hold, while the registrar is still paused
            # Only the losses wait: a deploy during the hold reaches nginx at once.
            deploy = loop.scene.http_backend("deploy")
            loop.scene.register("deploy", deploy.port, tags=["http"])
            loop.serving("deploy", "deploy")
            assert "catalog recovered" not in renderer.log and "accepting it" not in renderer.log
        finally:
            registrar.signal(signal.SIGCONT)
        loop.wait_for(registrar, lambda s: [x["Service"] for x in s.values()] == ["web"], "service restored")
        wait_until(lambda: "catalog recovered after" in renderer.log or "accepting it" in renderer.log, 25,
                   what="the renderer took the restored catalog")
        if "catalog recovered after" not in renderer.log:
            assert loop.web.foreign() != foreign, "held for the whole grace period though every service came back"
        wait_until(lambda: "Consul lost 1 of this host's services" in registrar.log
                   or "answers again" in registrar.log, 5, what="the registrar reported the restart")
        loop.serving("web", "web-1")
        probe.cover(10)  # and the recovered config
    assert not probe.failures, probe.report()
    assert renderer.alive() and registrar.alive()


def test_dockerd_restart_converges_to_what_runs(loop, tmp_path):
    """dockerd restarts; its containers stop, one comes back (restart=always) on a new port.

    On a dockerd of the test's own, so it always runs and costs no other test
    its containers. The probe is expected to fail while the container is
    down: that is the container, not the loop. What is asserted is
    convergence: the registrar reconnects, Consul holds exactly the running
    container at its current port, no stale service remains, and nginx
    routes to it again.
    """
    engine = PrivateDockerEngine(tmp_path / "dockerd").start()
    shared_web = loop.web
    try:
        loop.web = WebContainers(engine, engine.busybox_image(), loop.unique)
        renderer = loop.start_renderer()
        registrar = loop.start_registrar("--resync", "2", "--docker-url", engine.url)
        loop.web.start("always", "always", restart=True)
        loop.web.start("once", "once")
        loop.wait_for(registrar, lambda s: len(s) == 2, "both registered")
        loop.serving("always", "always")
        loop.serving("once", "once")

        with Probe(loop.nginx.http_port, loop.host("always"), "always") as probe:
            engine.restart()
            loop.wait_for(registrar, lambda s: sorted((x["Service"], x["Port"]) for x in s.values())
                          == [("always", loop.web.port("always"))],
                          "only the running container, at its current port", timeout=40)
            loop.serving("always", "always", timeout=15)
            wait_until(lambda: loop.scene.get("once").status_code == 404, 10,
                       what="route of the stopped container gone")
        assert loop.web.running() == [f"{loop.unique}-always"]
        assert "reconnecting" in registrar.log and "reconciling everything" in registrar.log
        assert [e["ServicePort"] for e in catalog_entry(loop.scene.consul, "always")
                if e["ServiceMeta"].get("registrar-host") == loop.unique] == [loop.web.port("always")]
        assert "upstream once " not in loop.rendered()
        assert registrar.alive() and renderer.alive()
        print(f"dockerd restart: {probe.report()}")
    finally:
        for process in loop.registrars:  # before its engine goes
            process.stop()
        loop.web.close()
        loop.web = shared_web
        engine.stop()


def test_registrar_sigkill_then_cleanup_touches_only_its_own(loop, consul_agent):
    """SIGKILL, a container removed meanwhile, restart with --cleanup.

    The stale service goes at the first reconciliation (resync 600 s: no
    later pass can be what removes it); another host's registrar service and
    another tool's service are not re-registered, changed or removed; nginx
    stops routing to the removed container without a failed request.
    """
    u = loop.unique
    consul_agent.register(f"{u}-other", f"{u}-other", 1, tags=["x"], meta={"registrar-host": "otherhost"})
    consul_agent.register(f"{u}-tool", f"{u}-tool", 2, tags=["x"])
    loop.scene.service_ids += [f"{u}-other", f"{u}-tool"]
    untouched = {name: catalog_entry(consul_agent, name) for name in (f"{u}-other", f"{u}-tool")}

    loop.start_renderer()
    first = loop.start_registrar("--resync", "600")
    loop.web.start("a", "web", body="web-a")
    loop.web.start("b", "web", body="web-b")
    loop.wait_for(first, lambda s: len(s) == 2, "both registered")
    loop.serving("web", "web-a", "web-b")
    gone_port = loop.web.port("b")
    assert f":{gone_port} " in loop.rendered()

    with Probe(loop.nginx.http_port, loop.host("web"), "web-") as probe:
        first.kill()
        loop.web.remove("b")  # no registrar sees its events; Docker forgets it
        assert f"{u}:{u}-b:80" in consul_agent.services(), "stale until a registrar cleans up"

        second = loop.start_registrar("--cleanup", "--resync", "600")
        loop.wait_for(second, lambda s: sorted(s) == [f"{u}:{u}-a:80"], "the stale service gone", timeout=5)
        second.wait_for_log(f"deregistered web ({u}:{u}-b:80): container gone (--cleanup)", timeout=2)
        loop.serving("web", "web-a")
        assert f":{gone_port} " not in loop.rendered()
        probe.cover(25)  # a few polls of Consul and render passes later, still no failed request
    assert not probe.failures, probe.report()
    assert {name: catalog_entry(consul_agent, name) for name in untouched} == untouched
    assert second.log.count(f"deregistered web ({u}:") == 1
    assert second.alive()


HOSTILE = "zzinject"  # in every hostile value: must never appear in a rendered file


def test_hostile_labels_and_registrations_never_reach_nginx(loop, consul_agent):
    """nginx syntax, overlong values, non-UTF-8, bad ports, duplicate IDs, through both daemons."""
    u, consul = loop.unique, consul_agent
    renderer = loop.start_renderer()
    registrar = loop.start_registrar()
    loop.web.start("good", "good")
    loop.serving("good", "good")

    with Probe(loop.nginx.http_port, loop.host("good"), "good") as probe:
        # Through the registrar: container labels.
        loop.web.start("l-name", f"{HOSTILE};}} server {{ listen 81; #")
        loop.web.start("l-tags", "ltags", tags=f"http,{HOSTILE}{{return 302 x;}}")
        loop.web.start("l-meta", "lmeta", labels={"SERVICE_META_X": f"$host\"'{HOSTILE}`"})
        loop.web.start("l-nl", "lnl", labels={"SERVICE_META_X": f"a\n{HOSTILE} 1;"})
        loop.web.start("l-long", "llong", labels={"SERVICE_META_BIG": HOSTILE * 1000})
        loop.web.start("l-id", "lid", labels={"SERVICE_ID": f"{HOSTILE} ../../v1/agent/leave"})
        loop.web.start("dup1", "dup", body="dup1", labels={"SERVICE_ID": f"{u}-dup"})
        loop.web.start("dup2", "dup", body="dup2", labels={"SERVICE_ID": f"{u}-dup"})

        # Straight into Consul: what anyone with service:write can do.
        def direct(service_id, body=None, raw: bytes | None = None):
            response = requests.put(f"{consul.url}/v1/agent/service/register", timeout=5,
                                    data=raw if raw is not None else None, json=body if raw is None else None)
            loop.scene.service_ids.append(service_id)
            return response

        base = {"Tags": ["http"], "Address": "127.0.0.1", "Port": 9}
        accepted = [
            {**base, "ID": f"{u}-d1", "Name": f"{HOSTILE};return 302 http://evil/;#"},
            {**base, "ID": f"{u}-d2", "Name": "dtags", "Tags": ["http", f"{HOSTILE}\"; return 302;"]},
            {**base, "ID": f"{u}-d3", "Name": "daddr", "Address": f"127.0.0.1; proxy_pass http://{HOSTILE}"},
            {**base, "ID": f"{u}-d4", "Name": "dmeta", "Meta": {"v": f"${{{HOSTILE}}}`{{}}\n#"}},
            {**base, "ID": f"{u}-d5", "Name": f"{HOSTILE}\nserver", "Port": 10},
            {**base, "ID": f"{u}-d6", "Name": "dlong", "Tags": ["http", HOSTILE * 100]},
            {**base, "ID": f"{u}-d7", "Name": f"d{HOSTILE}" * 60},
            {**base, "ID": f"{u}-p0", "Name": "dport", "Port": 0},
            {**base, "ID": f"{u}-p7", "Name": "dport", "Port": 70000},
            {**base, "ID": f"{u}-d8", "Name": "dup", "Port": 9, "Address": f"{HOSTILE}{{}}"},
        ]
        for body in accepted:
            response = direct(body["ID"], body)
            assert response.status_code == 200, (body, response.text)
        # Consul refuses a meta key with nginx syntax in it: say so, so a change of Consul's mind shows.
        refused = direct(f"{u}-d9", {**base, "ID": f"{u}-d9", "Name": "dmkey", "Meta": {f"{HOSTILE};": "x"}})
        assert refused.status_code == 400 and "Key contains invalid characters" in refused.text
        # Non-UTF-8 bytes in the JSON body: Consul accepts them and stores U+FFFD in their place.
        raw = (b'{"ID": "%s-nb", "Name": "nb%s\xff\xfe", "Tags": ["http", "t\xc3\x28"], "Port": 9,'
               b' "Address": "127.0.0.\xff", "Meta": {"m": "\xff%s"}}' % (u.encode(), HOSTILE.encode(),
                                                                          HOSTILE.encode()))
        assert direct(f"{u}-nb", raw=raw).status_code == 200
        stored = consul.services()[f"{u}-nb"]
        assert stored["Service"] == f"nb{HOSTILE}\ufffd\ufffd" and stored["Meta"]["m"] == f"\ufffd{HOSTILE}"

        # Registered as registrator would (Consul takes them), warned about; only an unusable name or ID
        # is skipped. The renderer withholds what nginx must not see.
        loop.wait_for(registrar, lambda s: sorted(x["Service"] for x in s.values()) ==
                      ["dup", "good", "llong", "lmeta", "lnl", "ltags"], "the containers with a usable name and ID")
        renderer.wait_for_log(f"skipped service instance '{u}-p7'", timeout=10)
        # Two resyncs of the registrar later (the duplicate ID must not flap), nginx still serves.
        passes = registrar.log.count("full reconciliation done")
        wait_until(lambda: registrar.log.count("full reconciliation done") >= passes + 2, 15, what="two resyncs")
        loop.serving("good", "good")
    assert not probe.failures, probe.report() + "\n--- renderer ---\n" + renderer.log[-6000:]

    text = loop.rendered()
    assert HOSTILE not in text and "evil" not in text and "\ufffd" not in text
    assert "server 127.0.0.1:0 " not in text and ":70000" not in text
    assert loop.nginx.config_is_valid()
    assert renderer.alive() and registrar.alive()
    # Each was named in one line: left out whole when its name, address or port is unusable, its
    # value withheld (the instance kept) when only a tag or meta value is unsafe.
    for service_id in (f"{u}-d1", f"{u}-d3", f"{u}-d5", f"{u}-p0", f"{u}-p7", f"{u}-d7", f"{u}-d8", f"{u}-nb"):
        assert f"skipped service instance '{service_id}'" in renderer.log, service_id
    for service_id in (f"{u}-d2", f"{u}-d4", f"{u}-d6", f"{u}:{u}-l-meta:80", f"{u}:{u}-l-tags:80",
                       f"{u}:{u}-l-nl:80"):
        withheld = [line for line in renderer.log.splitlines() if f"service instance '{service_id}'" in line]
        assert withheld and all(line.endswith("(withheld from templates; the instance is kept)")
                                for line in withheld), service_id
    log = registrar.log
    for container in ("l-name", "l-tags", "l-nl", "l-long", "l-id"):
        assert f"container {u}-{container}" in log, container
    assert f"service ID '{u}-dup' is already used by container {u}-dup1" in log
    assert log.count("registered dup") == 1, "the duplicate must not flap"
    assert HOSTILE * 20 not in log, "an overlong value is not copied whole into the log"


def readme_policies() -> dict[str, str]:
    """The least-privilege policies, exactly as README.md's "ACL tokens" section gives them."""
    section = README.read_text().split("### ACL tokens", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```hcl\n(.*?)```", section, re.S)
    by_daemon = {re.match(r"# (\w+):", block).group(1): block for block in blocks}
    assert sorted(by_daemon) == ["operator", "registrar", "renderer"], by_daemon
    return by_daemon


def test_least_privilege_tokens_work_end_to_end_and_never_show(acl_deny_agent, loop, tmp_path):
    """ACLs on, default deny; the README's policies; tokens only in files and headers."""
    agent, u = acl_deny_agent, loop.unique
    headers = {"X-Consul-Token": ACL_MASTER_TOKEN}

    def acl(path: str, body: dict) -> dict:
        response = requests.put(f"{agent.url}{path}", json=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def token_file(name: str, rules: str) -> tuple[str, Path]:
        policy = acl("/v1/acl/policy", {"Name": f"{u}-{name}", "Rules": rules})
        secret = acl("/v1/acl/token", {"Description": name, "Policies": [{"ID": policy["ID"]}]})["SecretID"]
        path = tmp_path / f"{name}.token"
        path.touch(mode=0o600)
        path.write_text(secret + "\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        return secret, path

    policies = readme_policies()
    registrar_token, registrar_file = token_file("registrar", policies["registrar"])
    renderer_token, renderer_file = token_file("renderer", policies["renderer"])
    weak_token, weak_file = token_file("weak", 'service_prefix "" { policy = "read" }\n')
    tokens = (registrar_token, renderer_token, weak_token, ACL_MASTER_TOKEN)

    # Anonymous requests see nothing: the deny default is really on.
    assert requests.get(f"{agent.url}/v1/catalog/nodes", timeout=5).json() == []

    operator_token, operator_file = token_file("operator", policies["operator"])
    tokens += (operator_token,)
    # The route settings where the README's policy lets the renderer read them (not this test's own prefix).
    prefix = "consul-nginx-sync"
    renderer = loop.start_renderer("--log-level", "debug", "--kv-prefix", prefix, consul_address=agent.address,
                                   env={"CONSUL_HTTP_TOKEN_FILE": str(renderer_file)})
    # No --ip: the registrar reads the agent's address, which the README's agent_prefix rule allows.
    registrar = loop.start_registrar("--consul-token-file", str(registrar_file), agent=agent, ip=False)
    loop.web.start("web", "secure", body="secure-1")
    loop.wait_for(registrar, lambda s: len(s) == 1, "registered with the registrar's token")
    loop.serving("secure", "secure-1")
    assert "denied" not in registrar.log + renderer.log

    # The operator's token changes a route setting; the renderer's reads it and applies it.
    routes = [RENDERER, "routes", "--consul-addr", agent.address, "--kv-prefix", prefix,
              "--var", f"domain={loop.scene.domain}"]
    written = subprocess.run([*routes[:2], "set", "secure", "maintenance=true", *routes[2:]], capture_output=True,
                             text=True, timeout=30, env={**os.environ, "CONSUL_HTTP_TOKEN_FILE": str(operator_file)})
    try:
        assert written.returncode == 0, written.stderr
        wait_until(lambda: loop.scene.get("secure").status_code == 503, 15, what="secure in maintenance")
        denied = subprocess.run([*routes[:2], "unset", "secure", "maintenance", *routes[2:]], capture_output=True,
                                text=True, timeout=30, env={**os.environ, "CONSUL_HTTP_TOKEN_FILE": str(renderer_file)})
        assert denied.returncode == 1 and f"denied writing {prefix}/routes/secure/maintenance" in denied.stderr
    finally:
        requests.delete(f"{agent.url}/v1/kv/{prefix}/routes/secure?recurse=true", headers=headers, timeout=10)
    loop.serving("secure", "secure-1")

    # A token without write rights: the registrar says which right it lacks, and keeps running.
    weak = loop.start_registrar(hostname=f"{u}-weak", agent=agent, env={"CONSUL_HTTP_TOKEN_FILE": str(weak_file)})
    weak.wait_for_log(f"Consul at {agent.url} denied registering secure ({u}-weak:{u}-web:80): "
                      'the token lacks service:write on "secure"', timeout=10)
    assert weak.alive()
    # An unknown token: the renderer's one-line error names the problem, not the token.
    bogus = tmp_path / "bogus.token"
    bogus.write_text("11111111-2222-3333-4444-555555555555\n")
    once = run_once("--consul-addr", agent.address, "--consul-token-file", str(bogus),
                    *loop.scene.common_args()[2:], *loop.templates, timeout=30)
    assert once.returncode != 0 and "ACL not found" in once.stdout + once.stderr, once.stderr
    assert "11111111-2222" not in once.stdout + once.stderr

    for process in (renderer, registrar, weak):
        cmdline = Path(f"/proc/{process.process.pid}/cmdline").read_bytes().decode(errors="replace")
        log = process.log
        for token in tokens:
            assert token not in cmdline, f"a token in {process.argv[0]}'s arguments"
            assert token not in log, f"a token in {process.argv[0]}'s log"
    for process in (renderer, registrar, weak):
        assert process.stop() == 0, process.log[-2000:]
        for token in tokens:
            assert token not in process.log
