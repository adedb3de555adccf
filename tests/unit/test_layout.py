"""The tree tells the story: each package imports only what its docstring says, rooms stay small, pure code
keeps no hidden state."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What each of the renderer's packages may import of the project, as its __init__ says: only what comes
# before it on the data path (and the errors every package may raise), never what comes after.
MAY_IMPORT = {
    "catalog": {"agentkit", "renderer.errors"},
    "routes": {"agentkit", "renderer.errors", "renderer.catalog"},
    "apply": {"agentkit", "renderer.errors"},
    "render": {"agentkit", "renderer.errors", "renderer.catalog", "renderer.routes", "renderer.apply"},
    "peers": {"agentkit", "renderer.errors", "renderer.routes"},
    "certs": {"agentkit", "renderer.errors", "renderer.catalog"},
    "observe": {"agentkit", "renderer.errors", "renderer.catalog", "renderer.routes", "renderer.render"},
}
LONGEST = 450  # lines: a room past ~400 is usually two ideas


def project_imports(path: Path) -> set[str]:
    """The project's modules ``path`` imports, as 'agentkit', 'registrar' or 'renderer.<package>'."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in ("agentkit", "registrar"):
                found.add(parts[0])
            elif parts[0] == "renderer":
                found.add(".".join(parts[:2]))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_renderer_package_imports_only_what_comes_before_it(package):
    own = f"renderer.{package}"
    for path in sorted((ROOT / "renderer" / package).glob("*.py")):
        unexpected = project_imports(path) - MAY_IMPORT[package] - {own}
        assert not unexpected, f"{path.relative_to(ROOT)} imports {sorted(unexpected)}"


def test_every_package_says_what_it_owns_and_may_import():
    for package in [*MAY_IMPORT, None]:
        module = importlib.import_module(f"renderer.{package}" if package else "renderer")
        assert module.__doc__ and len(module.__doc__.split()) > 20, module.__name__
    for name in ("registrar", "agentkit"):
        assert "May import" in importlib.import_module(name).__doc__
    for package in MAY_IMPORT:
        assert "May import" in importlib.import_module(f"renderer.{package}").__doc__, package


def test_the_daemons_and_agentkit_keep_to_their_own():
    for path in (ROOT / "agentkit").glob("*.py"):
        assert not project_imports(path) - {"agentkit"}, path.name
    for path in (ROOT / "registrar").glob("*.py"):
        assert not project_imports(path) - {"agentkit", "registrar"}, path.name


def test_no_room_has_grown_past_one_idea_and_no_code_keeps_global_state():
    for path in sorted([*ROOT.glob("renderer/**/*.py"), *ROOT.glob("registrar/*.py"), *ROOT.glob("agentkit/*.py")]):
        text = path.read_text()
        assert len(text.splitlines()) <= LONGEST, f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines"
        assert not [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Global)], \
            f"{path.relative_to(ROOT)} changes module state through `global`"
