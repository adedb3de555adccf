"""The reference's template API example (docs/renderer.md) is real: it is kept in examples/ and renders."""

import re
from pathlib import Path

from renderer.catalog import snapshot
from renderer.render.api import TemplateData
from renderer.render.loader import TemplateLoader

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "examples" / "templates" / "api-tour.conf.j2"


def test_readme_example_is_the_example_file():
    block = re.search(r"```jinja\n(.*?)```", (ROOT / "docs" / "renderer.md").read_text(), re.S).group(1)
    assert TOUR.read_text().split("\n", 1)[1] == block


def test_api_tour_renders_on_the_seed_catalog():
    data = TemplateData(*snapshot.load(ROOT / "tests" / "unit" / "catalogs" / "seed.json"))
    text = TemplateLoader({}).render(TOUR, data).text
    assert "canary has tags http,v2" in text
    assert "server 10.0.0.1:8080 weight=10;" in text
    assert "# node3:httpfront:80 on node3: critical" in text and "# node node3 10.0.0.3" in text
    assert "client_max_body_size 10m;" in text and "gzip off;" in text
