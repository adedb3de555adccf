"""One bad registration costs one service: a file nginx refuses is rendered again without the culprit.

The pure parts with plain data; the render pass with the default http
template (rendered for real, in the bounded child) and a stand-in ``nginx
-t`` that refuses what a real one would, naming file and line or nothing.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from renderer.apply.applier import Applier
from renderer.catalog.model import Catalog, Instance
from renderer.errors import CommandFailed
from renderer.render.api import TemplateData
from renderer.render.isolation import bisect, nginx_location, owners_at
from renderer.render.loader import TemplateLoader, TemplateSpec
from renderer.render.render_pass import RenderPass

HTTP = Path(__file__).resolve().parents[2] / "templates" / "http" / "services.conf.j2"


def test_nginx_location_reads_file_and_line_or_nothing():
    assert nginx_location('nginx: [emerg] host not found in upstream "x:80" in /etc/nginx/conf.d/a.conf:123') == (
        "/etc/nginx/conf.d/a.conf", 123)
    assert nginx_location("nginx: [emerg] could not build server_names_hash, you should increase ...") is None


def test_owners_at_finds_the_block_holding_a_line():
    blocks = ((2, 5, ("web",)), (6, 20, ("api", "auth")))
    assert owners_at(blocks, 4) == ("web",) and owners_at(blocks, 6) == ("api", "auth") and owners_at(blocks, 21) == ()


def test_bisect_finds_the_one_candidate_whose_absence_is_accepted():
    asked = []

    def accepted(left_out):
        asked.append(left_out)
        return "c7" in left_out
    candidates = [f"c{n}" for n in range(16)]
    assert bisect(candidates, accepted) == "c7" and len(asked) == 5, "everything once, then 4 halvings"
    assert bisect(candidates, lambda left_out: False) is None, "not a service's fault: nobody is blamed"


def instance(name, port, address="10.0.0.1", meta=None, tags=("http",)):
    return Instance(f"{name}-{port}", name, address, port, tags, MappingProxyType(meta or {}), "n1", "passing")


class Nginx:
    """``nginx -t`` as a real one refuses: a bad server line names its file and line; a host named
    'toolong...' breaks the server names hash, which names no file at all."""

    def __init__(self, path: Path):
        self.path, self.checks, self.reloads = path, 0, 0

    def check(self):
        self.checks += 1
        if not self.path.exists():
            return
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if "server 10.66.6.6:" in line:
                raise CommandFailed("nginx config check", "nginx -t", f'nginx: [emerg] host not found in upstream '
                                    f'"{line.split()[1]}" in {self.path}:{number}')
            if "server_name toolong" in line:
                raise CommandFailed("nginx config check", "nginx -t", "nginx: [emerg] could not build "
                                    "server_names_hash, you should increase server_names_hash_bucket_size: 64")

    def reload(self):
        self.reloads += 1


def make(tmp_path):
    output = tmp_path / "services.conf"
    nginx = Nginx(output)
    clock = [100.0]
    render_pass = RenderPass(TemplateLoader({"domain": "example.org"}), Applier(nginx.check, nginx.reload),
                             [TemplateSpec(HTTP, output)])
    render_pass.clock = render_pass.exclusions.clock = lambda: clock[0]
    return render_pass, nginx, output, clock


def test_the_service_whose_block_nginx_named_is_left_out_and_the_rest_applies(tmp_path, caplog):
    render_pass, nginx, output, clock = make(tmp_path)
    good = [instance("web", 1), instance("api", 2), instance("shop", 3)]
    evil = instance("evil", 4, address="10.66.6.6")
    outcome = render_pass.run(TemplateData(Catalog([], [*good, evil])))
    text = output.read_text()
    assert outcome.ok and outcome.follow_up and nginx.reloads == 1
    assert all(f"server_name {name}.example.org;" in text for name in ("web", "api", "shop"))
    assert "evil" not in text and "10.66.6.6" not in text
    assert render_pass.exclusions.names() == {"evil"}
    assert "left out service evil: nginx refused it (nginx: [emerg] host not found in upstream" in caplog.text
    # Another service arrives while evil (the same registration: the same object) is left out: it is routed
    # at once, nginx asked once.
    checks = nginx.checks
    render_pass.run(TemplateData(Catalog([], [*good, instance("late", 5), evil])))
    assert "server_name late.example.org;" in output.read_text() and nginx.checks == checks + 1


def test_a_left_out_service_is_tried_again_when_its_registration_changes(tmp_path):
    render_pass, nginx, output, clock = make(tmp_path)
    good = [instance("web", 1)]
    render_pass.run(TemplateData(Catalog([], [*good, instance("evil", 4, address="10.66.6.6")])))
    assert render_pass.exclusions.names() == {"evil"}
    render_pass.run(TemplateData(Catalog([], [*good, instance("evil", 4, address="10.6.6.6")])))  # fixed
    assert not render_pass.exclusions and "server_name evil.example.org;" in output.read_text()


def test_a_left_out_service_is_tried_again_when_its_retry_is_due_and_left_out_again(tmp_path):
    render_pass, nginx, output, clock = make(tmp_path)
    catalog = Catalog([], [instance("web", 1), instance("evil", 4, address="10.66.6.6")])
    render_pass.run(TemplateData(catalog))
    first = render_pass.exclusions.current["evil"].retry.at
    assert render_pass.next_retry() == first
    clock[0] = first
    render_pass.run(TemplateData(catalog))
    assert render_pass.exclusions.names() == {"evil"}, "asked again, refused again"
    assert render_pass.exclusions.current["evil"].retry.at - clock[0] > first - 100.0, "then waits longer"
    assert "server_name web.example.org;" in output.read_text()


def test_nginx_naming_no_line_is_bisected_to_the_one_service(tmp_path):
    render_pass, nginx, output, clock = make(tmp_path)
    good = [instance(f"s{n:02d}", n) for n in range(1, 12)]
    outcome = render_pass.run(TemplateData(Catalog([], [*good, instance("too", 40, meta={"hosts": "toolong.example.org"})])))
    assert outcome.ok and render_pass.exclusions.names() == {"too"}
    assert all(f"server_name {i.name}.example.org;" in output.read_text() for i in good)


def test_a_refusal_no_service_explains_puts_the_file_back_as_before(tmp_path):
    output = tmp_path / "static.conf"
    (tmp_path / "static.conf.j2").write_text("server 10.66.6.6:1;\n")

    class Refusing(Nginx):
        pass
    nginx = Refusing(output)
    render_pass = RenderPass(TemplateLoader({}), Applier(nginx.check, nginx.reload),
                             [TemplateSpec(tmp_path / "static.conf.j2", output)])
    outcome = render_pass.run(TemplateData(Catalog([], [instance("web", 1)])))
    assert not output.exists() and "nginx -t refused" in outcome.failed[0] and not render_pass.exclusions
