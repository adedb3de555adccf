"""The whole loop for one test: containers -> registrar -> Consul -> renderer -> the shared nginx."""

from __future__ import annotations


import requests

from tests.support.registrar_process import RegistrarProcess, owned
from tests.support.waiting import wait_until
from tests.support.web_containers import WebContainers

ACL_MASTER_TOKEN = "master-token-of-the-faults-suite"


class Loop:
    """Containers -> registrar -> Consul -> renderer -> the shared nginx, for one test; undone at teardown.

    The registrar registers ``--ip 127.0.0.1`` (containers publish on
    loopback) under the test's own ``--hostname``; the renderer renders the
    default templates into the test's own files in the shared nginx.
    """

    def __init__(self, stage, docker_engine, busybox_image, tmp_path):
        self.scene, self.nginx, self.unique = stage, stage.nginx, stage.unique
        self.engine, self.tmp_path = docker_engine, tmp_path
        self.web = WebContainers(docker_engine, busybox_image, stage.unique)
        self.registrars: list[RegistrarProcess] = []
        self.templates = stage.default_templates()

    def start_registrar(self, *args: str, agent=None, hostname: str | None = None, env: dict | None = None,
                        ip: bool = True) -> RegistrarProcess:
        """``registrar run --ip 127.0.0.1`` (without ``ip``: the agent's own address, read from Consul)."""
        process = RegistrarProcess(agent or self.scene.consul, hostname or self.unique,
                                   [*(["--ip", "127.0.0.1"] if ip else []), *args],
                                   self.tmp_path / f"registrar-{len(self.registrars)}.log", env)
        self.registrars.append(process)
        return process.start()

    def start_renderer(self, *args: str, consul_address: str | None = None, env: dict | None = None):
        common = self.scene.common_args()
        if consul_address:
            common[common.index("--consul-addr") + 1] = consul_address
        daemon = self.scene.daemon(*common, *self.templates, *args, env=env)
        wait_until(lambda: "watching" in daemon.log or not daemon.alive(), 10, what="renderer start")
        assert daemon.alive(), daemon.log
        return daemon

    def ours(self, services: dict) -> dict:
        """Those of ``services`` that belong to this test's containers.

        The registrar maps every container on the engine; a test sharing the
        engine with others (a bench, another session) counts only its own.
        """
        return {sid: s for sid, s in services.items()
                if (s.get("Meta") or {}).get("registrar-container") in self.web.ids}

    def wait_for(self, registrar: RegistrarProcess, predicate, what: str, timeout: float = 10.0) -> dict:
        """``registrar.wait_for`` on this test's own services."""
        return self.ours(registrar.wait_for(lambda services: predicate(self.ours(services)), what, timeout))

    def host(self, service: str) -> str:
        return f"{service}.{self.scene.domain}"

    def bodies(self, service: str, count: int = 10) -> set[str]:
        return {self.scene.get(service).text.strip() for _ in range(count)}

    def serving(self, service: str, *bodies: str, timeout: float = 15.0) -> None:
        """Wait until nginx answers for ``service`` with exactly these bodies (new config only)."""
        def settled() -> bool:
            # After `nginx -s reload` an old worker may still answer a new connection with the
            # previous config until it is gone (a probe started at once saw a 404).
            return (self.scene.nginx.worker_count() == 1
                    and self.bodies(service, 4 * len(bodies) + 6) == set(bodies))
        try:
            wait_until(settled, timeout, what=f"nginx serving {service} from {bodies}")
        except TimeoutError as error:
            raise AssertionError(f"{error}; answers now {self.bodies(service)}\n{self.rendered()[-3000:]}") from None

    def rendered(self) -> str:
        return "".join(p.read_text(errors="replace") for p in dict.fromkeys(self.scene.outputs) if p.exists())

    def close(self) -> list[str]:
        problems = []
        for process in self.registrars:
            was_alive = process.alive()
            code = process.stop()
            if was_alive and code != 0:
                problems.append(f"registrar exited {code} on SIGTERM:\n{process.log[-3000:]}")
        self.web.close()
        for agent in {id(p.agent): p.agent for p in self.registrars}.values():
            for hostname in {p.hostname for p in self.registrars}:
                try:
                    for service_id in owned(agent, hostname):
                        agent.deregister(service_id)
                except requests.RequestException:
                    pass
        return problems
