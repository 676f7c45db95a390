"""The package layers (DESIGN.md): the shared LM layer and the objectives import no stage, stages import each other
only downward, and no module import cycle exists (imports inside functions counted: none may dodge a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tunewise"

# lowest first; a module may import its own layer's package and anything below it
LAYERS: list[set[str]] = [
    {"version", "example", "errors", "config", "rundir", "metrics", "failures", "record", "runlock", "runs", "models",
     "catalog", "callable_package"},
    {"lm"},
    {"objectives"},
    {"environment"},
    {"model_card"},
    {"data"},
    {"evaluate"},
    {"monitor"},
    {"train"},
    {"decide"},
    {"export"},
    {"checklist"},
    {"report"},
    {"serve"},
    {"chat"},
    {"ui"},
    {"pipeline"},
    {"api"},
    {"cli"},
    {"__init__", "__main__"},  # the package's facade: the Python API, imported on first use
]
STAGES = {"data", "evaluate", "monitor", "train", "decide", "export", "checklist", "report", "serve", "ui"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The layer unit of a module: its package under tunewise/, or the root module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module(p) for p in ROOT.rglob("*.py")}
    for path in ROOT.rglob("*.py"):
        source = _module(path)
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("tunewise"):
                names = [f"{node.module}.{a.name}" for a in node.names]
                found = [n for n in names if n in modules]  # `from tunewise.x import module`
                targets.update(found or [node.module])
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("tunewise"))
        targets.discard(source)
    return graph


GRAPH = _imports()
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_package_has_a_layer() -> None:
    units = {_unit(m) for m in GRAPH}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("lower", ["lm", "objectives", "models"])
def test_shared_layers_import_no_stage(lower: str) -> None:
    upward = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if _unit(m) == lower for t in ts
                    if _unit(t) in STAGES | {"pipeline", "cli"})
    assert not upward, upward


def test_no_upward_import() -> None:
    upward = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
                    if _unit(t) != _unit(m) and RANK[_unit(t)] > RANK[_unit(m)])
    assert not upward, "imports against the layers (DESIGN.md):\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH.get(node, ())):
            if target not in GRAPH:  # `from tunewise import __version__`-style names resolve to a package
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_test_sees_imports_inside_functions() -> None:
    """A function-level import counts: the config's metric check is one (config -> metrics)."""
    assert "tunewise.metrics" in GRAPH["tunewise.config"]
