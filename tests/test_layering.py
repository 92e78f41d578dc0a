"""The package's import graph: no cycles, and dependencies point one way.

config/records -> math -> actors -> orchestrator -> commands (docs/architecture.md). Every
``from mixgrpo... import`` counts, lazy ones inside functions included: a lazy import hides a
cycle from Python, not from the next maintainer.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mixgrpo

PACKAGE = Path(mixgrpo.__file__).parent

LAYERS = {
    "mixgrpo": 0, "mixgrpo.config": 0, "mixgrpo.batch": 0, "mixgrpo.errors": 0, "mixgrpo.runtime": 0,
    "mixgrpo.rundir": 0, "mixgrpo.faults": 0, "mixgrpo.flops": 0,
    "mixgrpo.tasks": 1,
    "mixgrpo.builtin": 2,
    "mixgrpo.rewards": 3,
    "mixgrpo.actors": 4,
    "mixgrpo.analysis": 5,
    "mixgrpo.orchestrator": 6,
    "mixgrpo.orchestrator.commands": 7,
    "mixgrpo.orchestrator.cli": 8,
}
"""Layer of each top-level unit: a unit may import only its own layer's units or lower ones."""

PURE_MATH = {"mixgrpo.rewards.mixer": {"mixgrpo.rewards.mixer_diagnostics"}, "mixgrpo.rewards.mixer_diagnostics": set(),
             "mixgrpo.actors.loss": {"mixgrpo.actors.off_policy"}, "mixgrpo.actors.off_policy": set(),
             "mixgrpo.flops": set()}
"""The pure math modules and the only mixgrpo modules each may import."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mixgrpo"):
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("mixgrpo")]
            else:
                continue
            for name in names:
                target = owner(name)
                if target and target != module:
                    graph[module].add(target)
    return graph


def _unit(module: str) -> str:
    """The layered unit a module belongs to (its longest prefix in LAYERS)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layering.py")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    assert _cycles(_import_graph()) == []


def test_no_import_cycle_between_packages():
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _import_graph().items():
        for target in targets:
            if _unit(module) != _unit(target):
                units[_unit(module)].add(_unit(target))
    assert _cycles(units) == []


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _import_graph().items()
        for target in targets
        if LAYERS[_unit(target)] > LAYERS[_unit(module)]
    )
    assert upward == []


def test_math_modules_import_no_other_mixgrpo_module():
    graph = _import_graph()
    for module, allowed in PURE_MATH.items():
        assert graph.get(module, set()) <= allowed, module


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert LAYERS[_unit("mixgrpo.orchestrator.commands.train")] > LAYERS[_unit("mixgrpo.actors.generator")]
