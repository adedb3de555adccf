"""The README and docs/ show only commands and flags that exist, and document every option there is."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from registrar.cli import main as registrar_main
from renderer.cli import main as renderer_main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = {"renderer": renderer_main, "registrar": registrar_main}


def shown_commands():
    """(page, program, argv) for every renderer/registrar line in a ```sh block."""
    for page in PAGES:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#", 1)[0].strip()
                words = shlex.split(line) if line else []
                if words and words[0] in PROGRAMS:
                    yield page.name, words[0], words[1:]


def options_of(command: click.Command) -> set[str]:
    return {name for parameter in command.params for name in getattr(parameter, "opts", [])
            + getattr(parameter, "secondary_opts", []) if name.startswith("--")}


@pytest.mark.parametrize("page,program,argv", list(shown_commands()))
def test_every_command_shown_exists_with_its_flags(page, program, argv):
    group = PROGRAMS[program]
    if argv == ["--version"]:
        return
    command = group.commands.get(argv[0])
    assert command is not None, f"{page}: {program} has no command {argv[0]!r}"
    if isinstance(command, click.Group) and len(argv) > 1 and not argv[1].startswith("-"):
        name, argv = argv[1], argv[1:]  # a subcommand: `renderer routes set ...`
        command = command.commands.get(name)
        assert command is not None, f"{page}: {program} has no command {name!r}"
    flags = {word.split("=", 1)[0] for word in argv[1:] if word.startswith("--")}
    assert flags <= options_of(command), f"{page}: {program} {argv[0]} has no {sorted(flags - options_of(command))}"


def test_the_pages_show_both_programs():
    assert {program for _, program, _ in shown_commands()} == set(PROGRAMS)


@pytest.mark.parametrize("program,page,commands", [("renderer", "renderer.md", ("run", "once")),
                                                    ("registrar", "registrar.md", ("run", "sync"))])
def test_every_option_is_in_the_reference_table(program, page, commands):
    text = (ROOT / "docs" / page).read_text()
    for name in commands:
        for option in options_of(PROGRAMS[program].commands[name]) - {"--help"}:
            assert f"`{option}" in text, f"docs/{page} does not document {program} {name} {option}"


def test_every_route_key_has_its_label_in_the_routes_reference():
    from renderer.routes.service import INSTANCE_KEYS
    from renderer.routes.voting import ROUTE_KEYS
    documented = set(re.findall(r"^\| `SERVICE_([A-Z_]+)` \|", (ROOT / "docs" / "routes.md").read_text(), re.M))
    assert {key.upper() for key in (*ROUTE_KEYS, *INSTANCE_KEYS)} <= documented


def test_every_docker_run_line_of_the_routes_reference_routes_without_a_refused_value():
    """The labels of each ``docker run`` example, through the registrar's mapping and the route table: every
    value the page shows parses (a certificate or another example's service may still be missing)."""
    from types import MappingProxyType

    from registrar.labels import services_for
    from renderer.catalog.model import Catalog, Instance
    from renderer.routes.builder import build
    from renderer.routes.model import RouteOptions
    from tests.unit.test_registrar_labels import HOST, inspect

    text = (ROOT / "docs" / "routes.md").read_text()
    runs = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S)
            for line in block.replace("\\\n", " ").splitlines() if line.startswith("docker run")]
    assert len(runs) >= 15
    options = RouteOptions.from_variables({"domain": "example.org", "h2c_port": "50051"})
    for number, run in enumerate(runs):
        words = shlex.split(run.split("#", 1)[0])
        labels = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-l")
        (service,) = services_for(inspect(name=f"example{number}", labels=labels), HOST).services
        instance = Instance(service.id, service.name, service.address, service.port, service.tags,
                            MappingProxyType(dict(service.meta)), "node1", "passing")
        refused = [str(r) for r in build(Catalog([], [instance]), options).refused if r.instance]
        assert not refused, run
