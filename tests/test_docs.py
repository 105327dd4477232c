"""The README and the documentation site: the README stays short and holds the command CI runs,
the generated reference pages hold every config field with its real default and every command,
and `mkdocs build --strict` passes (a broken link or anchor fails it)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tinyvision.cli import build_parser
from tinyvision.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = os.environ.get("TINYVISION_CI") == "1"


def _generator() -> ModuleType:
    """docs/gen_reference.py, the mkdocs hook that makes the reference pages."""
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


# --- README -------------------------------------------------------------------------------------

def test_readme_is_short_and_holds_the_test_command_ci_runs() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; at most 150 (reference goes to docs/)"
    ci_command = next(line for line in (REPO / ".ci" / "run").read_text().splitlines()
                      if line.startswith("bash scripts/setup"))
    assert ci_command in lines, f"README.md does not show the test command .ci/run runs: {ci_command}"
    assert '.venv/bin/python -m pytest -q -m "not slow"' in README.read_text()


def test_readme_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "README.md links to no docs page"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# --- generated reference pages -------------------------------------------------------------------

def _table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table body row, with the code backticks of a cell removed."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = re.split(r"(?<!\\)\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line.strip())[1:-1]
            rows.append([c.strip().strip("`").strip() for c in cells])
    return rows


def _written_default(cell: str) -> Any:
    """A default as the page writes it, read back: None, booleans and numbers as values."""
    return None if cell == "None" else yaml.safe_load(cell)


def test_config_page_lists_every_field_with_its_real_default() -> None:
    rows = {row[0]: row for row in _table_rows(GEN.config_reference()) if row[0] != "field"}
    assert list(rows) == list(RunConfig.model_fields), "the page must list every RunConfig field, in order"
    for name, info in RunConfig.model_fields.items():
        default = info.get_default(call_default_factory=True)
        cell = rows[name][2]
        if default is None or isinstance(default, (bool, int, float, str)):
            shown = _written_default(cell)
            assert (shown, type(shown)) == (default, type(default)), \
                f"{name}: page says {cell!r}, default is {default!r}"
        else:
            assert cell == str(default), f"{name}: page says {cell!r}, default is {default!r}"


def _subcommands() -> list[str]:
    """The subcommands as `tinyvision --help` lists them: {datasets,models,...}."""
    usage = build_parser().format_usage()
    return re.search(r"\{([\w,-]+)\}", usage).group(1).split(",")


def test_cli_page_names_every_subcommand_and_option(capsys: pytest.CaptureFixture) -> None:
    page = GEN.cli_reference()
    headings = re.findall(r"^## (\S+)$", page, flags=re.M)
    commands = _subcommands()
    assert headings == commands
    seen = 0
    for command in commands:
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        # the options section of --help: "  --epochs EPOCHS  number of ..." (-h, --help: in the usage line)
        helptext = capsys.readouterr().out
        options = set(re.findall(r"^  (?:-\w, )?(--[\w-]+)", helptext, flags=re.M)) - {"--help"}
        seen += len(options)
        section = page.split(f"## {command}\n", 1)[1].split("\n## ", 1)[0]
        missing = sorted(o for o in options if f"`{o}" not in section and f", {o}" not in section)
        assert not missing, f"{command}: options missing from the CLI page: {missing}"
    assert seen > len(commands), "no options found in the commands' --help: has its format changed?"


def test_registry_pages_list_every_entry() -> None:
    from tinyvision.data import DATASETS
    from tinyvision.models import MODELS
    from tinyvision.recipes import RECIPES

    for make, registry in ((GEN.datasets_reference, DATASETS), (GEN.models_reference, MODELS),
                           (GEN.recipes_reference, RECIPES)):
        names = [row[0] for row in _table_rows(make())[1:]]
        assert names == registry.names()


def test_getting_started_shows_the_readme_commands_as_they_are() -> None:
    section = GEN.expand("<!-- generated: readme-two-commands -->")
    readme = README.read_text(encoding="utf-8")
    commands = [line for line in section.splitlines() if line.startswith(("bash ", ".venv/bin/"))]
    assert len(commands) >= 3 and all(line in readme for line in commands)
    assert "](docs/" not in section  # links made relative to docs/


def test_an_unknown_marker_is_an_error() -> None:
    assert GEN.expand("a <!-- generated: recipes --> b").count("mnist-fast") >= 1
    with pytest.raises(ValueError, match="nonsense"):
        GEN.expand("<!-- generated: nonsense -->", "x.md")


# --- the site ------------------------------------------------------------------------------------

def _have_mkdocs() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "material"))


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if not _have_mkdocs():
        if CI:
            pytest.fail("mkdocs or mkdocs-material missing in CI (scripts/setup --test installs them)")
        pytest.skip("the docs extra is not installed (pip install -e '.[docs]' or bash scripts/setup --docs)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(REPO / "mkdocs.yml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config_page = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert all(f"<code>{name}</code>" in config_page for name in RunConfig.model_fields)
    leftovers = [p.relative_to(site) for p in site.rglob("*.html") if "<!-- generated:" in p.read_text()]
    assert not leftovers, f"markers left unexpanded in {leftovers}"
