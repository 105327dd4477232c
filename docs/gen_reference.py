"""Reference text generated from the code when the site is built (an mkdocs hook, see mkdocs.yml).

A page holds a marker `<!-- generated: NAME -->` and the hook puts NAME's text in its place: the CLI
from `tinyvision.cli.build_parser()`, config fields from `tinyvision.config_fields.field_docs()`, presets,
recipes and datasets from their registries; `benchmarks/README.md` and the README's "Two commands"
section as they are. Nothing generated is committed, so no page keeps a copy that can drift.
tests/test_docs.py calls these functions directly.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- generated: ([\w-]+) -->")


# -- markdown helpers ----------------------------------------------------------------------------

def text(s: str) -> str:
    """Plain text safe in a markdown table cell: pipes, emphasis and brackets escaped outside `code`."""
    parts = str(s).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = (re.sub(r"([\\*_\[\]|])", r"\\\1", parts[i])
                    .replace("<", "&lt;").replace("\n", " "))
    return "`".join(parts)


def code(s: Any) -> str:
    """`s` as inline code (a backtick inside gets a double fence)."""
    s = str(s)
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- CLI -----------------------------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order they were added.

    argparse has no public way to list subcommands; `_actions`, `_SubParsersAction` and
    `_choices_actions` have been stable since Python 3.2 and are what every argparse documenter reads.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _help(action: argparse.Action, prog: str) -> str:
    """The help text as --help prints it: %(default)s and %% expanded."""
    if not action.help:
        return ""
    try:
        return action.help % {**vars(action), "prog": prog}
    except (KeyError, TypeError, ValueError):
        return action.help


def _signature(action: argparse.Action) -> str:
    """`--epochs EPOCHS`, `-h, --help`, `paths [paths ...]`, as argparse's usage writes them."""
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    nargs = action.nargs
    args = {None: metavar, "?": f"[{metavar}]", "*": f"[{metavar} ...]", "+": f"{metavar} [{metavar} ...]",
            0: ""}.get(nargs, " ".join([metavar] * nargs) if isinstance(nargs, int) else metavar)
    if not action.option_strings:
        return args
    return ", ".join(f"{o} {args}".strip() for o in action.option_strings)


def _option_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        help_text = _help(action, parser.prog)
        shown_default = action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0
        if shown_default and "default" not in help_text:
            help_text += f" (default: {action.default})"
        if action.choices and not isinstance(action.choices, dict) and "{" not in help_text:
            help_text += f"; one of {', '.join(map(str, action.choices))}"
        rows.append([code(_signature(action)), text(help_text)])
    return rows


def cli_reference() -> str:
    """Every subcommand of `tinyvision`, its usage line, description and options with help and defaults."""
    from tinyvision.cli import build_parser

    parser = build_parser()
    out = []
    for name, summary, sub in _subcommands(parser):
        out += [f"## {name}", "", text(summary[:1].upper() + summary[1:]) + ".", "",
                "```text", sub.format_usage().strip(), "```", ""]
        if sub.description and sub.description != summary:
            out += [text(sub.description), ""]
        out += [table(["option", "what it does"], _option_rows(sub)), ""]
    return "\n".join(out)


# -- configuration -------------------------------------------------------------------------------

def config_reference() -> str:
    """Every RunConfig field by section: type (with range and choices), default, description."""
    from tinyvision.config_fields import field_docs

    out, rows, section = [], [], None
    for doc in field_docs():
        if doc.section != section:
            if rows:
                out += [table(["field", "type", "default", "description"], rows), ""]
            out += [f"## {doc.section}", ""]
            rows, section = [], doc.section
        rows.append([code(doc.name), code(doc.type), code(doc.default), text(doc.description)])
    out += [table(["field", "type", "default", "description"], rows), ""]
    return "\n".join(out)


# -- registries ----------------------------------------------------------------------------------

def datasets_reference() -> str:
    """The dataset registry: shape, classes, split sizes, validation default, files, source."""
    from tinyvision.data import DATASETS

    rows = []
    for name in DATASETS.names():
        info = DATASETS.get(name)
        c, h, w = info.input_shape
        sizes = ", ".join(f"{split} {n:,}" for split, n in info.sizes.items())
        files = ", ".join(code(f.name) for f in info.files) or "none (built in)"
        classes = ", ".join(info.classes)
        val = info.default_val  # a count, or a fraction of train
        val = f"{val:.0%} of train" if isinstance(val, float) else f"{val:,}"
        rows.append([code(name), text(info.description), f"{c}x{h}x{w}", text(sizes), text(val),
                     text(classes), files, text(info.source)])
    return table(["name", "what", "input (C x H x W)", "images", "validation", "classes", "files",
                  "source"], rows)


def models_reference() -> str:
    """The preset registry: spec, the input shape it was designed for, description."""
    from tinyvision.models import MODELS

    rows = []
    for name in MODELS.names():
        preset = MODELS.get(name)
        c, h, w = preset.input_shape
        rows.append([code(name), code(preset.spec), f"{c}x{h}x{w}", text(preset.description)])
    return table(["preset", "spec", "designed for (C x H x W)", "description"], rows)


def recipes_reference() -> str:
    """The recipe registry: description and the exact config values each recipe sets."""
    from tinyvision.recipes import RECIPES

    rows = []
    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        values = ", ".join(f"{k}={_yaml_scalar(v)}" for k, v in recipe.values.items())
        rows.append([code(name), text(recipe.description), code(values)])
    return table(["recipe", "what", "values it sets"], rows)


def _yaml_scalar(v: Any) -> str:
    """A value as it is written in a config file or key=value: true, not True."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def benchmarks_readme() -> str:
    return (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")


def readme_two_commands() -> str:
    """The README's "Two commands" section as it is (the main job, what it prints, the tests), its
    links made relative to docs/."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Two commands.*?(?=^## |\Z)", readme, flags=re.M | re.S)
    if found is None:
        raise ValueError("README.md has no '## Two commands ...' section")
    return found.group(0).replace("](docs/", "](").rstrip() + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference, "config": config_reference, "datasets": datasets_reference,
    "models": models_reference, "recipes": recipes_reference, "benchmarks-readme": benchmarks_readme,
    "readme-two-commands": readme_two_commands,
}


def expand(markdown: str, where: str = "page") -> str:
    """Replace every `<!-- generated: NAME -->` marker; an unknown NAME is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(one, markdown)


# -- mkdocs hook ---------------------------------------------------------------------------------

def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return expand(markdown, page.file.src_uri)
