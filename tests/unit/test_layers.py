"""The three floors (DESIGN.md, "Where things live"), checked on the imports themselves.

Every ``import`` and ``from ... import`` of the project's modules is read from the
source (AST, function-level imports included) and must go sideways or down:

- ground (``feature_repo``, ``core``, ``artifact``) imports libraries and the ground
  below it: ``feature_repo`` only itself (Feast imports every file there), ``core`` the
  contract, ``artifact`` both;
- an engine (``pipelines``, ``training``, ``serving``, ``validation``) imports itself and
  the ground, never another engine;
- the roof (``adstack``, ``bench``) imports anything.

And no module imports, directly or around a circle, itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUND = {"feature_repo", "core", "artifact"}
ENGINES = {"pipelines", "training", "serving", "validation"}
ROOF = {"adstack", "bench"}
PACKAGES = GROUND | ENGINES | ROOF
ALLOWED = {
    "feature_repo": {"feature_repo"},
    "core": {"core", "feature_repo"},
    "artifact": {"artifact", "core", "feature_repo"},
    **{engine: {engine} | GROUND for engine in ENGINES},
    **{roof: PACKAGES for roof in ROOF},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every project import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = module_name(path).split(".")[: -node.level or None]
                stem = ".".join(base + ([node.module] if node.module else []))
                names = [stem] if node.module else [f"{stem}.{a.name}" for a in node.names]
            else:
                base_module = node.module or ""
                names = [base_module] + [f"{base_module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.append((node.lineno, name))
    return found


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def existing_module(name: str, modules: set[str]) -> str | None:
    """The project module ``name`` refers to (``a.b.c`` may be ``a.b``'s attribute c)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def allowed(floor: str, name: str) -> bool:
    return name.split(".")[0] in ALLOWED[floor]


def test_every_import_goes_sideways_or_down() -> None:
    wrong = set()
    for path in sources():
        floor = module_name(path).split(".")[0]
        for line, name in project_imports(path):
            if not allowed(floor, name):
                wrong.add(f"{path.relative_to(ROOT)}:{line} imports {name.split('.')[0]}")
    assert not wrong, "imports that break the floors:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    modules = {module_name(p) for p in sources()}
    graph: dict[str, set[str]] = {}
    for path in sources():
        source = module_name(path)
        targets = {existing_module(name, modules) for _, name in project_imports(path)}
        graph[source] = {t for t in targets if t and t != source}
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize(
    ("floor", "imported", "expected"),
    [("serving", "training.export", False), ("core", "pipelines", False),
     ("artifact", "core.settings", True), ("adstack", "serving.app", True),
     ("validation", "artifact.metrics", True), ("feature_repo", "core.settings", False),
     ("feature_repo", "core.units", False), ("pipelines", "validation.ingest", False)],
)  # fmt: skip
def test_the_rule_itself(floor: str, imported: str, expected: bool) -> None:
    assert allowed(floor, imported) is expected
