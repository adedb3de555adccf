"""Template loading and error reporting: the file and the line, always."""

from pathlib import Path

import pytest

from renderer.catalog.model import Catalog, Instance
from renderer.errors import TemplateError
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader, TemplateSpec, expand_dirs


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_syntax_error_names_file_and_line(tmp_path):
    source = write(tmp_path / "bad.j2", "ok\n{% for x in %}\n")
    with pytest.raises(TemplateError) as error:
        TemplateLoader({}).load(source)
    assert error.value.path == str(source) and error.value.line == 2


def test_runtime_error_names_file_and_line(tmp_path):
    source = write(tmp_path / "boom.j2", "line one\nline two\n{{ 1 // 0 }}\n")
    error = TemplateLoader({}).render(source, TemplateData()).error
    assert error.line == 3 and "division" in error.message


def test_error_inside_an_include_names_the_included_file(tmp_path):
    write(tmp_path / "part.j2", "\n{{ undefined_thing }}\n")
    source = write(tmp_path / "main.j2", "{% include 'part.j2' %}\n")
    rendered = TemplateLoader({}).render(source, TemplateData())
    assert rendered.error.path.endswith("part.j2") and rendered.error.line == 2
    assert [Path(path).name for path, _ in rendered.inputs] == ["main.j2", "part.j2"], "a failed render's files"


def test_variables_are_visible(tmp_path):
    source = write(tmp_path / "v.j2", "{{ domain }}:{{ http_port }}")
    assert TemplateLoader({"domain": "x.org", "http_port": "81"}).render(source, TemplateData()).text == "x.org:81"


def test_an_edited_file_is_a_new_template_object(tmp_path):
    import os
    source = write(tmp_path / "t.j2", "one")
    loader = TemplateLoader({})
    first = loader.load(source)
    assert loader.load(source) is first
    write(source, "two")
    os.utime(source, (1, source.stat().st_mtime + 5))
    assert loader.load(source) is not first and loader.render(source, TemplateData()).text == "two"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TemplateError, match="not found"):
        TemplateLoader({}).load(tmp_path / "absent.j2")


def test_template_dirs_expand_to_destinations(tmp_path):
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a.conf.j2", "")
    write(tmp_path / "src" / "readme.txt", "")
    specs = expand_dirs(((tmp_path / "src", tmp_path / "out"),))
    assert specs == [TemplateSpec(tmp_path / "src" / "a.conf.j2", tmp_path / "out" / "a.conf")]


EACH = """{% set table = routes() %}
{% macro upstream(pool, suffix) %}upstream {{ pool.name }}{{ suffix }}
{% endmacro %}
{% macro label(text) %}{{ text }}
{% endmacro %}
{{ each(table.pools, upstream, suffix) }}{{ each(["plain"], label) }}"""


def routed(*ports_by_service):
    return Catalog([], [Instance(f"{name}{port}", name, "10.0.0.1", port, ("http",), {}, "n", "passing")
                        for name, ports in ports_by_service for port in ports])


def test_each_keeps_the_text_of_a_route_object_that_did_not_change(tmp_path):
    source = write(tmp_path / "each.j2", EACH)
    loader = TemplateLoader({"domain": "example.org", "suffix": "-a"})
    catalog = routed(("api", [80]), ("web", [81]))
    data = TemplateData(catalog)
    first = loader.render(source, data)
    assert first.text == "upstream api-a\nupstream web-a\nplain\n"
    assert len(first.fragments) == 2, "route objects are kept, plain items are not"
    loader.keep_fragments(source, first, data.evaluated(("routes", loader.route_options)))

    # The same instances: the route builder the data carries hands out the same pools, and their kept text
    # is used as is.
    for key in loader.fragments[source]:
        loader.fragments[source][key] = loader.fragments[source][key].replace("upstream", "kept")
    again = loader.render(source, data.with_catalog(catalog))
    assert again.text == "kept api-a\nkept web-a\nplain\n" and again.fragments == ()

    # web changed: its pool is a new object, rendered again; api's (the same instance) stays kept.
    web = routed(("web", [82])).instances_of("web")
    changed = data.with_catalog(Catalog([], [catalog.instances_of("api")[0], *web]))
    third = loader.render(source, changed)
    assert third.text == "kept api-a\nupstream web-a\nplain\n" and len(third.fragments) == 1


def test_each_keys_on_its_extra_arguments(tmp_path):
    source = write(tmp_path / "each.j2", EACH.replace("upstream, suffix", "upstream, table.pools | length"))
    loader = TemplateLoader({"domain": "example.org"})
    api = routed(("api", [80]))
    one = TemplateData(api)
    first = loader.render(source, one)
    loader.keep_fragments(source, first, one.evaluated(("routes", loader.route_options)))
    # api's pool is the same object, but the count it was rendered with is not: rendered again.
    two = TemplateData(Catalog([], [*api.instances_of("api"), *routed(("web", [81])).instances_of("web")]))
    assert loader.render(source, two).text == "upstream api2\nupstream web2\nplain\n"


def test_each_names_a_wrong_argument_with_the_line(tmp_path):
    source = write(tmp_path / "each.j2", "{% set table = routes() %}\n{{ each(table.pools, 'text') }}\n")
    error = TemplateLoader({"domain": "example.org"}).render(source, TemplateData(routed(("api", [80])))).error
    assert error.line == 2 and "each() takes a macro" in error.message
