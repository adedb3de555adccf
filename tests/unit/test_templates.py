"""Template loading and error reporting: the file and the line, always."""

from pathlib import Path

import pytest

from renderer.errors import TemplateError
from renderer.template_api import TemplateData
from renderer.templates import TemplateLoader, TemplateSpec, expand_dirs


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
