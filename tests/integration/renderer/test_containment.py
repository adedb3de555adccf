"""Bad templates are contained: named in one log line, the last good config stays in force."""

from tests.support.waiting import wait_until

GOOD = "server { listen 127.0.0.1:{{ http_port }}; server_name good.{{ domain }}; return 200 'good'; }\n"


def start(scene, tmp_path, templates: dict[str, str]):
    source_dir = tmp_path / "templates"
    source_dir.mkdir()
    for name, text in templates.items():
        (source_dir / name).write_text(text)
        scene.outputs.append(scene.nginx.conf_d / name[:-3])
    return source_dir, scene.daemon(*scene.common_args(), "--template-dir", f"{source_dir}:{scene.nginx.conf_d}")


def test_template_syntax_error_is_named_and_the_others_serve(scene, tmp_path):
    broken = f"{scene.unique}-broken.conf.j2"
    source_dir, daemon = start(scene, tmp_path, {f"{scene.unique}-good.conf.j2": GOOD,
                                                 broken: "line one\n{% if %}\n"})
    wait_until(lambda: scene.get("good").text == "good", timeout=10, what="good template served")
    daemon.wait_for_log(f"template {source_dir / broken}:2: ")
    assert not (scene.nginx.conf_d / broken[:-3]).exists()
    assert scene.nginx.config_is_valid()


def test_template_rendering_invalid_nginx_is_rolled_back(scene, tmp_path):
    good_name = f"{scene.unique}-good.conf.j2"
    source_dir, daemon = start(scene, tmp_path, {good_name: GOOD})
    wait_until(lambda: scene.get("good").text == "good", timeout=10, what="good template served")

    # An edit that renders fine but that nginx rejects: the previous file stays.
    (source_dir / good_name).write_text("this is not nginx;\n")
    daemon.wait_for_log("nginx -t refused")
    line = next(line for line in daemon.log.splitlines() if "nginx -t refused" in line)
    assert str(source_dir / good_name) in line and "[emerg]" in line and "kept the previous file" in line
    assert (scene.nginx.conf_d / good_name[:-3]).read_text() == GOOD.replace(
        "{{ http_port }}", str(scene.nginx.http_port)).replace("{{ domain }}", scene.domain)
    assert scene.nginx.config_is_valid()
    assert scene.get("good").text == "good"

    # Fixed again: applied.
    (source_dir / good_name).write_text(GOOD.replace("'good'", "'fixed'"))
    wait_until(lambda: scene.get("good").text == "fixed", timeout=5, what="fixed template served")


def test_unwritable_destination_is_named_and_the_others_apply(scene, tmp_path):
    backend = scene.http_backend("writable")
    scene.register("writable", backend.port, tags=["http"])
    source = tmp_path / "x.conf.j2"
    source.write_text("# nothing\n")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    daemon = scene.daemon(*scene.common_args(), *scene.default_templates(),
                          "--template", f"{source}:{blocked / 'x.conf'}")
    wait_until(lambda: scene.get("writable").text.strip() == "writable", timeout=10, what="others applied")
    daemon.wait_for_log(f"cannot write {blocked / 'x.conf'} rendered from {source}")


def test_once_exits_non_zero_with_one_line_naming_the_template(scene, tmp_path):
    from tests.support.renderer_process import run_once
    source = tmp_path / "bad.conf.j2"
    source.write_text("{{ 1 // 0 }}\n")
    result = run_once(*scene.common_args(), "--template", f"{source}:{scene.output('http')}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("renderer: template ") and f"{source}:1" in last and "division" in last
