"""The package's one-way layers (issue 18): importing a stage loads nothing above it, and no module
reaches into another module's `_private` names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mobilellm_r1"


def layer_contract() -> list[list[str]]:
    """The layers of pyproject.toml's import-linter `layers` contract, top first, each a list of
    the top-level modules / packages in it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = (c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in contract["layers"]]


LAYERS = layer_contract()
STAGES = [layer[0] for layer in LAYERS[1:-1]]  # pipeline, curation, train, eval, deploy, data


def test_the_contract_names_every_top_level_module_once() -> None:
    names = [name for layer in LAYERS for name in layer]
    here = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    here |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert sorted(names) == sorted(here)
    assert LAYERS[0] == ["cli"] and "model" in LAYERS[-1]


# Imports the package or module and every module under it, then prints the top-level parts of
# mobilellm_r1 that got loaded.
LOAD_ALL = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    module = importlib.import_module("mobilellm_r1." + name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), module.__name__ + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[1] for m in sys.modules if m.startswith("mobilellm_r1.")})))
"""


def loaded_by(names: list[str]) -> set[str]:
    """Top-level parts of mobilellm_r1 in sys.modules after a fresh interpreter imports `names`
    (each with all its submodules)."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ALL, *names], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("level", range(1, len(LAYERS)), ids=lambda i: LAYERS[i][0])
def test_importing_a_layer_loads_nothing_above_it(level: int) -> None:
    above = {name for layer in LAYERS[:level] for name in layer}
    loaded = loaded_by(LAYERS[level])
    assert set(LAYERS[level]) <= loaded
    assert not loaded & above, f"{LAYERS[level]} pulls in {sorted(loaded & above)}"


# ----------------------------------------------------------------------- private names
def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reaches(source: str) -> list[str]:
    """`from x import _name` and `module._name` uses (module bound by an import of this project)
    in a module's source, as 'line N: ...'."""
    tree = ast.parse(source)
    modules: set[str] = set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            ours = node.level > 0 or (node.module or "").split(".")[0] == "mobilellm_r1"
            for alias in node.names:
                if is_private(alias.name):
                    found.append(
                        (node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                    )
                if ours:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.split(".")[0] == "mobilellm_r1"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            base = ast.unparse(node.value)
            if base in modules:
                found.append((node.lineno, f"{base}.{node.attr}"))
    return [f"line {line}: {text}" for line, text in sorted(found)]


def test_no_module_reaches_into_another_modules_private_names() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if (hits := private_reaches(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_private_check_finds_the_reaches_issue_18_named() -> None:
    before = """
from __future__ import annotations
from ..cli import _resolve_device
from .sources import _hf_rows, _jsonl_rows as rows
from ..data import sources
import mobilellm_r1.data.shards as shards
import mobilellm_r1.cli

def read(unit, stats, value):
    sources._jsonl_rows(unit, stats)
    shards.__name__, value._target, self_like._x = 1, 2, 3
    return mobilellm_r1.cli._one_line
"""
    assert private_reaches(before) == [
        "line 3: from ..cli import _resolve_device",
        "line 4: from .sources import _hf_rows",
        "line 4: from .sources import _jsonl_rows",
        "line 10: sources._jsonl_rows",
        "line 12: mobilellm_r1.cli._one_line",
    ]


def test_the_command_line_registers_every_command_without_importing_torch() -> None:
    """Stage packages import their heavy names lazily (`mobilellm_r1.lazy_exports`), so `--help`
    and usage errors stay fast."""
    code = "import json, sys, mobilellm_r1.cli as c; print(json.dumps([list(c.COMMANDS), 'torch' in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    names, torch_loaded = json.loads(done.stdout)
    assert names == ["info", "init", "generate", "export", "serve", "data", "train", "eval", "curate", "run"]
    assert torch_loaded is False
