"""`renderer run`: follows the catalog, the template directories and signals."""

import signal

from tests.support.waiting import wait_until

from tests.support.scene import HTTP_TEMPLATE


def bodies(scene, name, count=8):
    return {scene.get(name).text.strip() for _ in range(count)}


def test_daemon_follows_registration_and_deregistration(scene):
    first = scene.http_backend("live-1")
    scene.register("live", first.port, tags=["http"])
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    wait_until(lambda: bodies(scene, "live") == {"live-1"}, timeout=10, what="first instance served")

    second = scene.http_backend("live-2")
    second_id = scene.register("live", second.port, tags=["http"])
    wait_until(lambda: bodies(scene, "live") == {"live-1", "live-2"}, timeout=5, what="new instance served")

    scene.consul.deregister(second_id)
    wait_until(lambda: bodies(scene, "live") == {"live-1"}, timeout=5, what="deregistered instance gone")

    # A check turning critical takes the instance out too.
    scene.consul.put("/v1/agent/check/register", {"Name": "gate", "ID": f"{scene.unique}-gate",
                                                  "ServiceID": f"live-{first.port}", "TTL": "600s",
                                                  "Status": "critical"})
    wait_until(lambda: scene.get("live").status_code == 503, timeout=5, what="503 once no instance passes")
    scene.consul.put(f"/v1/agent/check/deregister/{scene.unique}-gate")
    assert "nginx reload confirmed" in daemon.log
    assert daemon.stop() == 0


def test_unrelated_change_does_not_rewrite_or_reload(scene):
    backend = scene.http_backend("calm")
    scene.register("calm", backend.port, tags=["http"])
    # Only this one template, which only reads its own service.
    template = scene.nginx.prefix / f"{scene.unique}-calm.j2"
    template.write_text("# {% for i in service('calm') %}{{ i.port }} {% endfor %}\n")
    output = scene.output("http", "-calm")
    daemon = scene.daemon(*scene.common_args(), "--template", f"{template}:{output}", "--log-level", "debug")
    daemon.wait_for_log("nginx reload confirmed")
    reloads = daemon.log.count("nginx reload confirmed")
    scene.register(f"{scene.unique}-other", 1, tags=["http"])
    daemon.wait_for_pass_at(scene.consul.index())  # the daemon has seen the other service
    assert daemon.log.count("nginx reload confirmed") == reloads
    template.unlink()


def test_template_directory_is_watched(scene, tmp_path):
    source_dir = tmp_path / "templates"
    source_dir.mkdir()
    dest_dir = scene.nginx.conf_d
    daemon = scene.daemon(*scene.common_args(), "--template-dir", f"{source_dir}:{dest_dir}")
    daemon.wait_for_log("watching 0 template(s)")
    name = f"{scene.unique}-dir.conf"
    output = dest_dir / name
    scene.outputs.append(output)

    (source_dir / f"{name}.j2").write_text(
        "server { listen 127.0.0.1:{{ http_port }}; server_name dir.{{ domain }}; return 200 'v1'; }\n")
    wait_until(lambda: scene.get("dir").text == "v1", timeout=5, what="added template served")

    (source_dir / f"{name}.j2").write_text(
        "server { listen 127.0.0.1:{{ http_port }}; server_name dir.{{ domain }}; return 200 'v2'; }\n")
    wait_until(lambda: scene.get("dir").text == "v2", timeout=5, what="changed template served")

    (source_dir / f"{name}.j2").unlink()
    wait_until(lambda: not output.exists(), timeout=5, what="output removed with its template")
    wait_until(lambda: scene.get("dir").status_code == 404, timeout=5, what="removed site gone from nginx")
    daemon.wait_for_log(f"removed {output}")


def test_sighup_rereads_the_config_file(scene, tmp_path):
    backend = scene.http_backend("hup")
    scene.register("hup", backend.port, tags=["http"])
    output = scene.output("http")
    config = tmp_path / "renderer.toml"

    def write_config(domain):
        config.write_text(f'template = ["{HTTP_TEMPLATE}:{output}"]\n'
                          f'[var]\ndomain = "{domain}"\nhttp_port = "{scene.nginx.http_port}"\n'
                          f'listen_address = "127.0.0.1"\n')

    write_config("before.test")
    args = ["--consul-addr", scene.consul.address, "--config", str(config),
            *scene.nginx.renderer_args]
    daemon = scene.daemon(*args)
    wait_until(lambda: scene.nginx.get("hup.before.test").text.strip() == "hup", timeout=10, what="served")
    write_config("after.test")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: scene.nginx.get("hup.after.test").text.strip() == "hup", timeout=5, what="new domain")
    assert "SIGHUP: settings and templates re-read" in daemon.log


def test_sigterm_stops_promptly(scene):
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates())
    daemon.wait_for_log("watching 2 template(s)")
    wait_until(lambda: scene.outputs[0].exists(), timeout=10, what="first render")
    assert daemon.stop(timeout=5) == 0, "SIGTERM obeyed (not the SIGKILL that follows after 5 s)"
    assert "received SIGTERM; stopping" in daemon.log


def test_wait_coalesces_a_burst_into_one_reload(scene):
    daemon = scene.daemon(*scene.common_args(wait="300ms:2s"), *scene.default_templates(), "--log-level", "debug")
    daemon.wait_for_log("nginx reload confirmed")
    reloads = daemon.log.count("nginx reload confirmed")
    backend = scene.http_backend("burst")
    for port in range(40000, 40010):
        scene.register("burst", backend.port, service_id=f"{scene.unique}-burst-{port}", tags=["http"],
                       meta={"n": str(port)})
    daemon.wait_for_pass_at(scene.consul.index(), timeout=10)  # a pass has seen the whole burst
    wait_until(lambda: scene.get("burst").text.strip() == "burst", timeout=5, what="burst served")
    assert daemon.log.count("nginx reload confirmed") == reloads + 1


def test_systemd_is_told_ready_after_the_first_render_and_stopping(scene, tmp_path):
    import socket
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    try:
        daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), env={"NOTIFY_SOCKET": address})
        ready = listener.recv(256).decode()
        assert ready.startswith("READY=1\nSTATUS=rendered 2 template(s)"), ready
        assert scene.outputs[0].exists(), "READY only once the first render is done"
        daemon.stop()
        messages = []
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(256).decode())
    finally:
        listener.close()


def test_sighup_with_a_corrected_consul_address_reconnects(scene, tmp_path):
    from tests.support.ports import free_port
    backend = scene.http_backend("moved")
    scene.register("moved", backend.port, tags=["http"])
    config = tmp_path / "renderer.toml"
    config.write_text(f'consul_addr = "127.0.0.1:{free_port()}"\n')
    args = scene.common_args()
    at = args.index("--consul-addr")
    del args[at:at + 2]
    daemon = scene.daemon("--config", str(config), *args, *scene.default_templates())
    daemon.wait_for_log("cannot reach Consul at", timeout=10)
    config.write_text(f'consul_addr = "{scene.consul.address}"\n')
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: scene.get("moved").text.strip() == "moved", timeout=10, what="rendered after SIGHUP")


def test_a_token_flag_does_not_stay_in_the_process_arguments(scene):
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(), "--consul-token", "s3cr3t-flag-token")
    daemon.wait_for_log("watching 2 template(s)")
    cmdline = open(f"/proc/{daemon.process.pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    assert "s3cr3t-flag-token" not in cmdline and "--consul-token-file /dev/fd/" in cmdline
    wait_until(lambda: scene.outputs[0].exists(), timeout=10, what="rendered with the hidden token")
    assert "s3cr3t-flag-token" not in daemon.log
