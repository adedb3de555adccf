"""Status snapshots, the pages and the metrics from plain data: what /ready says, what the page shows."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from renderer.observe import page as status_page
from renderer.catalog.model import Catalog, Instance, CatalogRefusal
from renderer.observe.status import PassRecord
from renderer.observe.metrics import RendererMetrics
from renderer.routes.builder import build
from renderer.routes.model import RouteOptions
from renderer.observe.status import StatusSnapshot, TemplateStatus, readiness, route_change

OPTIONS = RouteOptions.from_variables({"domain": "example.org"})


def instance(name, port, status="passing", meta=None, address="10.0.0.1"):
    return Instance(f"{name}-{port}", name, address, port, ("http",), MappingProxyType(meta or {}), "n1", status)


def snapshot(catalog, **changes) -> StatusSnapshot:
    table = build(catalog, OPTIONS)
    values = dict(version="1", started=0.0, published=1.0, ready=True, ready_reason="ready: nginx runs pass 3",
                  consul_reachable=True, catalog_index=42, running_serial=3, table=table, catalog=catalog,
                  passes=(PassRecord(3, 1.0, 0.2, 1, ("/etc/nginx/conf.d/x.conf",), (), True, True, 5.0, 100.0),),
                  templates=(TemplateStatus("/t/http.j2", "/etc/nginx/conf.d/x.conf", None),))
    values.update(changes)
    return StatusSnapshot(**values)


def test_readiness_names_what_is_missing():
    assert readiness(True, True, {}, 7, 42) == (True, "ready: nginx runs pass 7, catalog index 42")
    assert readiness(True, False, {}, 7, 42)[1] == "not ready: Consul unreachable; nginx keeps its current configuration"
    assert readiness(False, True, {}, None, 0)[1] == "not ready: the first render pass has not completed"
    assert readiness(True, True, {"/t/a.j2": "line 3: boom", "nginx reload": "pending"}, 7, 42)[1] == \
        "not ready: /t/a.j2: line 3: boom (and 1 more)"


def test_route_change_says_what_moved():
    before = build(Catalog([], [instance("web", 1), instance("web", 2)]), OPTIONS)
    after = build(Catalog([], [instance("web", 1), instance("web", 3), instance("api", 4)]), OPTIONS)
    change = route_change(before, after)
    assert change == ("- pool web: 10.0.0.1:2 weight 1 (web-2)",
                      "+ pool api: 10.0.0.1:4 weight 1 (api-4)", "+ pool web: 10.0.0.1:3 weight 1 (web-3)",
                      "+ route http://api.example.org/ -> api (proxy)")
    assert route_change(after, after) == ()


def test_the_page_shows_routes_instances_and_what_was_left_out_escaped():
    catalog = Catalog([], [instance("web", 1, meta={"weight": "3"}), instance("web", 2, status="critical")],
                      [CatalogRefusal("n1", "evil-1", "name '<script>x' is not a valid service name"),
                       CatalogRefusal("n1", "web-9", "meta description 'my app' contains whitespace", kept=True)])
    html = status_page.render(snapshot(catalog), "node-7")
    assert "<title>renderer on node-7: ready</title>" in html
    assert "web.example.org/" in html and "10.0.0.1:1</span>" in html and "weight 3" in html
    assert "10.0.0.1:2</span>" in html and "critical" in html and "not passing" in html
    assert "&lt;script&gt;x" in html and "<script>x" not in html
    assert "value withheld, instance kept" in html and "left out" in html
    assert "reload confirmed" in html and "nginx -t 5 ms, reload 100 ms" in html


def test_not_ready_page_and_held_instances():
    catalog = Catalog([], [instance("web", 1)])
    html = status_page.render(snapshot(catalog, ready=False, ready_reason="not ready: Consul unreachable",
                                       held=(instance("web", 2),), held_until=100.0), "n")
    assert "not ready: Consul unreachable" in html and "Held by the grace hold" in html and "10.0.0.1:2" in html


def test_metrics_from_a_snapshot_read_back_with_prometheus_parser():
    catalog = Catalog([], [instance("web", 1), instance("web", 2, status="critical")],
                      [CatalogRefusal("n1", "evil-1", "name 'x;' is not a valid service name"),
                       CatalogRefusal("n1", "web-9", "tag 'a b' contains whitespace", kept=True)])
    metrics = RendererMetrics()
    metrics.publish(snapshot(catalog, templates=(TemplateStatus("/t/a.j2", "/x", "line 1: boom"),)))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.text().decode()) for s in family.samples}
    assert samples[("renderer_instances", (("state", "routed"),))] == 1
    assert samples[("renderer_instances", (("state", "not_passing"),))] == 1
    assert samples[("renderer_instances_rejected", (("action", "left_out"), ("reason", "name")))] == 1
    assert samples[("renderer_instances_rejected", (("action", "withheld"), ("reason", "tag")))] == 1
    assert samples[("renderer_template_failing", (("template", "/t/a.j2"),))] == 1
    assert samples[("renderer_catalog_index", ())] == 42
    # A reason or template that went away is gone from the exposition, not stuck at its last value.
    metrics.publish(snapshot(Catalog([], [instance("web", 1)])))
    text = metrics.text().decode()
    assert "renderer_instances_rejected{" not in text and 'template="/t/a.j2"' not in text
    assert 'renderer_template_failing{template="/t/http.j2"} 0.0' in text
