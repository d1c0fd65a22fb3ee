"""The tree is the architecture: no import circles, and the layers import one way only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consumer", "schemas", "gateway", "common")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every first-party import of every module, TYPE_CHECKING and function-level included."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "migrations" not in p.parts}  # fmt: skip
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_import_circles() -> None:
    graph = imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_layers_import_one_way() -> None:
    """The pipeline never reaches into observation or tools; observers read only the
    pipeline's published view and ledger, never a sink."""
    graph = imports()
    allowed_from_pipeline = {"consumer.pipeline.view", "consumer.pipeline.ledger",
                             "consumer.pipeline.retry", "consumer.pipeline.reasons"}  # fmt: skip
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if module.startswith(("consumer.pipeline", "consumer.sinks")) and target.startswith(
                ("consumer.observe", "consumer.tools", "consumer.service")
            ):
                wrong.append((module, target))
            if (
                module.startswith("consumer.observe")
                and target.startswith("consumer.pipeline")
                and target not in allowed_from_pipeline
            ):
                wrong.append((module, target))
            if module.startswith("consumer.observe") and target.startswith("consumer.sinks"):
                wrong.append((module, target))
            if module.startswith("schemas") and target.startswith(("consumer", "gateway")):
                wrong.append((module, target))
    assert wrong == []


def test_the_gateway_and_the_shared_packages_never_import_the_consumer() -> None:
    """The gateway ships beside the consumer but depends only on the contract (`schemas`)
    and `common`; `common` depends on no first-party package at all."""
    graph = imports()
    wrong = [
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if (module.startswith("gateway") and target.startswith("consumer"))
        or (module.startswith("common") and not target.startswith("common"))
    ]
    assert wrong == []
    assert any(
        t.startswith("common") for m, ts in graph.items() if m.startswith("gateway") for t in ts
    )
