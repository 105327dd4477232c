"""The layout the code promises: light imports, one-way layers, no module shadowed by a name."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinyvision"
# lower layers never import higher ones (pipeline, experiments, report, cli)
LOWER = ("config", "errors", "registry", "recipes", "checkpoint", "data", "models", "optim", "stats",
         "tables", "yamlfile", "runtime")
HIGHER = ("pipeline", "experiments", "report", "cli")


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
                                   "tinyvision.loop")) or m == "tinyvision.evaluate.predict_loader"}
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
    assert callable(tv.train) and tv.train.__module__ == "tinyvision.pipeline"
