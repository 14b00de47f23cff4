"""Imports run one way: no module of tsessm imports, directly or through others, a module that
imports it back -- counting imports inside functions too (they hide a circle, they do not remove it)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tsessm"


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:  # "tsessm.a.b.name" -> the longest prefix that is a module
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.startswith("tsessm")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tsessm"):
                targets = [resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names]
            # a package importing its own submodules (its public names) is not a dependency on them
            graph[module] |= {t for t in targets if t and t != module and not t.startswith(module + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_in_tsessm():
    modules = _modules()
    assert len(modules) > 40 and "tsessm.nn.essm_layer" in modules  # the scan sees the package
    assert _cycles(_graph(modules)) == []


def test_the_scan_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_model_layer_imports_no_service_module():
    # nn <- forecasters <- backtest/stream/tracking/registry <- retrain/tuning/bench <- cli
    graph = _graph(_modules())
    upper = ("tsessm.cli", "tsessm.retrain", "tsessm.tuning", "tsessm.bench", "tsessm.stream", "tsessm.registry",
             "tsessm.tracking", "tsessm.backtest")
    for module, targets in graph.items():
        if module.startswith(("tsessm.nn", "tsessm.forecasters")):
            assert not [t for t in targets if t.startswith(upper)], module
        if module.startswith("tsessm.nn"):
            assert not [t for t in targets if t.startswith("tsessm.forecasters")], module
