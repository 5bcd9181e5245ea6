"""The layers of docs/ARCHITECTURE.md hold: each imports only lower layers, and no module cycle.

Read from the source with ``ast`` (imports under ``if TYPE_CHECKING:`` count for the layers,
not for cycles, since they are never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "creditgate"
# Lower numbers sit lower; a package may import its own modules and lower packages only.
RANK = {
    "domain": 0,
    "driver": 1,
    "client": 1,
    "events": 1,
    "testing": 1,
    "engine": 2,
    "worker": 3,
    "auth": 4,
    "ledger": 4,
    "notify": 5,
    "credits": 5,
    "payments": 6,  # purchases and the top-up payer: a consumer that writes the ledger, notifies
    "transport": 7,
    "wiring": 8,
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PACKAGE.rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts}


def _imports(path: Path, modules: dict[str, Path], *, runtime_only: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                runtime_only
                and isinstance(child, ast.If)
                and "TYPE_CHECKING" in ast.unparse(child.test)
            ):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("creditgate"):
                # ``from package import module`` imports the module; anything else the module
                # named (whose package __init__ runs first, as any import of it does).
                for alias in child.names:
                    name = f"{child.module}.{alias.name}"
                    found.add(name if name in modules else str(child.module))
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("creditgate"))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_rank() -> None:
    """A new top-level module or package is placed in the layers deliberately."""
    top = {_package(m) for m in _modules()} - {"", "__main__"}
    assert top == set(RANK)


def test_packages_import_only_lower_layers() -> None:
    modules = _modules()
    upward = []
    for module, path in modules.items():
        own = _package(module)
        if own not in RANK:
            continue
        for target in _imports(path, modules, runtime_only=False):
            other = _package(target)
            if other in RANK and other != own and RANK[other] >= RANK[own]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_module_imports_itself_in_a_circle() -> None:
    modules = _modules()
    graph = {
        m: {t for t in _imports(p, modules, runtime_only=True) if t in modules and t != m}
        for m, p in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    assert cycles == []
