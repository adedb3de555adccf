"""A render pass over real template files and a stand-in nginx: what is rendered, written, kept."""


from renderer.apply.applier import Applier
from renderer.catalog.model import Catalog, Instance
from renderer.render.render_pass import RenderPass
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader, TemplateSpec

from .test_apply import Nginx

UPSTREAMS = """{% for s in services("http") %}{% for i in service(s.name) %}{{ s.name }} {{ i.port }}
{% endfor %}{% endfor %}"""


def catalog(*ports, name="web"):
    return Catalog([], [Instance(f"id{p}", name, "10.0.0.1", p, ("http",), {}, "n", "passing") for p in ports])


def make(tmp_path, templates: dict[str, str]):
    specs = []
    for name, text in templates.items():
        (tmp_path / name).write_text(text)
        specs.append(TemplateSpec(tmp_path / name, tmp_path / "out" / name.replace(".j2", "")))
    (tmp_path / "out").mkdir()
    nginx = Nginx([s.destination for s in specs])
    return RenderPass(TemplateLoader({}), Applier(nginx.check, nginx.reload), specs), nginx


def test_first_pass_reports_missing_data_and_writes_nothing(tmp_path):
    render_pass, nginx = make(tmp_path, {"a.conf.j2": UPSTREAMS})
    outcome = render_pass.run(TemplateData())
    assert outcome.missing == {("services", "http")}
    assert not (tmp_path / "out" / "a.conf").exists() and nginx.checks == 0


def test_only_changed_files_are_written_and_one_reload_per_pass(tmp_path):
    render_pass, nginx = make(tmp_path, {"a.conf.j2": UPSTREAMS, "static.conf.j2": "static\n"})
    outcome = render_pass.run(TemplateData(catalog(80, 81)))
    assert outcome.rendered == 2 and nginx.reloads == 1
    assert (tmp_path / "out" / "a.conf").read_text() == "web 80\nweb 81\n"
    assert render_pass.uses_catalog()

    outcome = render_pass.run(TemplateData(catalog(80, 81)))
    assert outcome.rendered == 0 and nginx.reloads == 1, "unchanged data renders nothing"

    outcome = render_pass.run(TemplateData(catalog(80, 82)))
    assert outcome.rendered == 1, "the static template does not depend on the catalog"
    assert nginx.reloads == 2 and (tmp_path / "out" / "a.conf").read_text() == "web 80\nweb 82\n"


def test_same_bytes_are_not_rewritten(tmp_path):
    render_pass, nginx = make(tmp_path, {"a.conf.j2": "{{ service(\"web\")|length }}\n"})
    render_pass.run(TemplateData(catalog(80)))
    outcome = render_pass.run(TemplateData(catalog(81)))  # used value changed, output did not
    assert outcome.rendered == 1 and outcome.result is None and nginx.reloads == 1


def test_a_broken_template_is_contained_and_the_others_apply(tmp_path):
    render_pass, nginx = make(tmp_path, {"good.conf.j2": UPSTREAMS, "bad.conf.j2": "{{ nope( }}"})
    outcome = render_pass.run(TemplateData(catalog(80)))
    assert (tmp_path / "out" / "good.conf").exists() and not (tmp_path / "out" / "bad.conf").exists()
    assert len(outcome.failed) == 1 and "bad.conf.j2:1" in outcome.failed[0]


def test_rejected_content_is_kept_out_and_not_retried(tmp_path):
    render_pass, nginx = make(tmp_path, {"a.conf.j2": "{% for s in services() %}{{ s.name }}\n{% endfor %}"})
    render_pass.run(TemplateData(catalog(80, name="fine")))
    outcome = render_pass.run(TemplateData(catalog(80, name="BAD")))
    assert (tmp_path / "out" / "a.conf").read_text() == "fine\n"
    assert "nginx -t refused" in outcome.failed[0] and "unknown directive" in outcome.failed[0]
    checks = nginx.checks
    render_pass.run(TemplateData(catalog(81, name="BAD")))  # renders the same bytes again
    assert nginx.checks == checks


def test_removed_templates_have_their_output_removed(tmp_path):
    render_pass, nginx = make(tmp_path, {"a.conf.j2": "a\n", "b.conf.j2": "b\n"})
    render_pass.run(TemplateData())
    render_pass.set_specs([s.spec for s in render_pass.states.values() if s.spec.source.name == "a.conf.j2"])
    render_pass.run(TemplateData())
    assert (tmp_path / "out" / "a.conf").exists() and not (tmp_path / "out" / "b.conf").exists()
    assert nginx.reloads == 2


def test_edited_template_renders_again(tmp_path):
    import os
    render_pass, _ = make(tmp_path, {"a.conf.j2": "one\n"})
    render_pass.run(TemplateData())
    source = tmp_path / "a.conf.j2"
    source.write_text("two\n")
    os.utime(source, (1, source.stat().st_mtime + 5))
    render_pass.run(TemplateData())
    assert (tmp_path / "out" / "a.conf").read_text() == "two\n"


def test_a_listener_nginx_could_not_bind_is_offered_again_only_once_its_port_is_free(tmp_path):
    import socket
    from renderer.errors import ReloadNotTaken
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    attempts = []

    def reload():
        attempts.append(1)
        if holder.fileno() != -1:
            raise ReloadNotTaken(f"nginx refused the new configuration: nginx: [emerg] bind() to "
                                 f"127.0.0.1:{port} failed (98: Address already in use)")
        return True

    (tmp_path / "a.conf.j2").write_text(f"server {{ listen 127.0.0.1:{port}; }}\n")
    (tmp_path / "out").mkdir()
    clock = [100.0]
    from agentkit.lifecycle import Lifecycle
    spec = TemplateSpec(tmp_path / "a.conf.j2", tmp_path / "out" / "a.conf")
    render_pass = RenderPass(TemplateLoader({}), Applier(lambda: None, reload, clock=lambda: clock[0]), [spec],
                             lifecycle=Lifecycle(clock=lambda: clock[0]))
    outcome = render_pass.run(TemplateData())
    assert "nginx refused to load" in outcome.failed[0] and len(attempts) == 1
    for _ in range(5):  # retries come due, the port is still held: nginx is not bothered
        clock[0] += 60
        render_pass.run(TemplateData())
    assert len(attempts) == 1
    holder.close()
    clock[0] += 60
    render_pass.run(TemplateData())
    assert len(attempts) == 2 and (tmp_path / "out" / "a.conf").exists()


def test_an_edited_template_does_not_reuse_what_each_rendered_before(tmp_path):
    template = "{% macro up(pool) %}upstream {{ pool.name }}\n{% endmacro %}{{ each(routes().pools, up) }}"
    render_pass, nginx = make(tmp_path, {"a.conf.j2": template})
    render_pass.loader = TemplateLoader({"domain": "example.org"})
    render_pass.run(TemplateData(catalog(80)))
    assert not render_pass.loader.fragments.get(tmp_path / "a.conf.j2"), \
        "the first pass built its table in the render child: those addresses name nothing here"
    data = TemplateData(catalog(80, 81))
    render_pass.run(data)  # deciding it is due builds the table here: what each() rendered is kept
    assert render_pass.loader.fragments[tmp_path / "a.conf.j2"]
    (tmp_path / "a.conf.j2").write_text(template.replace("upstream", "pool"))
    render_pass.run(data)
    assert (tmp_path / "out" / "a.conf").read_text() == "pool web\n"
