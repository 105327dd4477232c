"""The layout the code promises: light imports, one-way layers, modules of one job (at most 400
lines), no module shadowed by a name, no private torch API outside the one module that says why."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinyvision"
# lower layers never import higher ones (pipeline, experiments, report, cli)
LOWER = ("config", "errors", "registry", "recipes", "checkpoint", "files", "data", "models", "optim", "stats",
         "tables", "yamlfile", "runtime", "stopping", "training", "evaluate", "runs", "rundir", "writing")
HIGHER = ("pipeline", "experiments", "report", "cli", "notebook")
TOP = ("cli", "notebook")  # nothing below them imports them
MAX_LINES = 400
PRIVATE_TORCH_MODULE = "_fused.py"  # the one module allowed torch._*: its docstring says what it buys


def imported_modules(path: Path) -> set[str]:
    """The tinyvision modules a file imports (relative imports resolved), at any depth of the file."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1] if module[-1] != "__init__" else module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {n for n in found if n.startswith("tinyvision")}


def layer_files(layer: str) -> list[Path]:
    target = PACKAGE / layer
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    for path in layer_files(layer):
        higher = {m for m in imported_modules(path) if m.split(".")[1:2] and m.split(".")[1] in HIGHER}
        assert not higher, f"{path.relative_to(PACKAGE)} imports {sorted(higher)}"


def test_reports_only_read_run_files() -> None:
    """report/ never runs a model or loads a dataset: no pipeline, inference, evaluation loop, data."""
    for path in layer_files("report"):
        banned = {m for m in imported_modules(path)
                  if m.startswith(("tinyvision.pipeline", "tinyvision.inference", "tinyvision.data",
                                   "tinyvision.training")) or m == "tinyvision.evaluate.predict_loader"}
        assert not banned, f"{path.relative_to(PACKAGE)} imports {sorted(banned)}"


def test_no_module_is_shadowed_by_a_package_attribute() -> None:
    import tinyvision

    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert not modules & set(tinyvision._LAZY), "a public name hides the module of the same name"


def test_importing_the_package_and_asking_for_help_do_not_load_torch() -> None:
    code = ("import sys, tinyvision, tinyvision.cli\n"
            "assert 'torch' not in sys.modules, 'import tinyvision loaded torch'\n"
            "try:\n    tinyvision.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, '--help loaded torch'\n"
            "tinyvision.cli.main(['datasets'])\n"
            "assert 'torch' not in sys.modules, 'datasets loaded torch'\n"
            "print(tinyvision.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1][0].isdigit()  # the version from package metadata


def test_the_public_api_still_resolves() -> None:
    import tinyvision as tv

    for name in tv.__all__:
        assert getattr(tv, name) is not None, name
    assert callable(tv.train) and tv.train.__module__ == "tinyvision.notebook"


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in all_modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_nothing_below_the_cli_and_the_notebook_imports_them() -> None:
    for path in all_modules():
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top in TOP:
            continue
        found = {m for m in imported_modules(path) if m.split(".")[1:2] and m.split(".")[1] in TOP}
        assert not found, f"{path.relative_to(PACKAGE)} imports {sorted(found)}"


def module_graph() -> dict[str, set[str]]:
    """Module -> the tinyvision modules it imports (at any depth of the file, names resolved to
    the module that holds them)."""
    names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
             for p in all_modules()}
    graph = {}
    for path in all_modules():
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for m in imported_modules(path):
            while m and m not in names:
                m = m.rpartition(".")[0]
            if m and m != name and m != "tinyvision":
                targets.add(m)
        graph[name] = targets
    return graph


def test_modules_import_downward_only() -> None:
    """No cycle in the import graph: following a command from the CLI to the files it writes never
    returns to a module already left (packages' __init__ re-exports aside)."""
    graph = module_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):  # a package's own modules
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])


def test_private_torch_apis_stay_in_one_module() -> None:
    import re

    private = re.compile(r"torch\.(ops\.[a-z]+\.)?_[a-z]")
    users = [str(p.relative_to(PACKAGE)) for p in all_modules()
             if private.search(p.read_text()) and p.name != PRIVATE_TORCH_MODULE]
    assert not users, f"private torch APIs outside {PRIVATE_TORCH_MODULE}: {users}"
