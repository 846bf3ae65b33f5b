"""
The package's layers, drawn from its imports: ``python scripts/architecture.py`` prints them,
``--write`` puts them into ``docs/architecture.md`` and ``--check`` fails when that page is stale.

Each module stands one floor above the highest module it imports; the emulator and the example
DAGs are drawn as one box each. An import is any import made when the code runs, at the top of a
module or inside a function; imports made only for type checking are left out, as they run nothing.
It refuses to draw while modules import each other (an import cycle).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import page_block

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dropbox_sign_provider"
PAGE = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers: begin -->", "<!-- layers: end -->"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


#: Drawn as one box each: their insides are not the provider's layers.
BOXES = ("testing.emulator", "example_dags")


def box_of(module: str) -> str:
    """What the drawing shows for a module: its name below the package, or the box it is in."""
    name = module.removeprefix(PACKAGE).lstrip(".") or "__init__"
    return next((box for box in BOXES if name == box or name.startswith(f"{box}.")), name)


def _holds_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports when it runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            for alias in node.names:
                # ``from package import module`` imports the module; any other name, the package.
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it runs."""
    # A package whose __init__ holds nothing but a docstring is a folder, not a module to draw.
    paths = {
        module_name(p): p
        for p in sorted((ROOT / PACKAGE).rglob("*.py"))
        if p.name != "__init__.py" or _holds_code(p)
    }
    names = set(paths)
    return {
        name: {m for m in runtime_imports(path, names) if m in names and m != name}
        for name, path in paths.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def floors(edges: dict[str, set[str]]) -> list[list[str]]:
    """The drawing's boxes by floor, lowest first: each stands one floor above the highest it imports."""
    uses: dict[str, set[str]] = defaultdict(set)
    for module, imported in edges.items():
        uses[box_of(module)].update(box_of(m) for m in imported)
    for box, imported in uses.items():
        imported.discard(box)
    level: dict[str, int] = {}

    def of(box: str) -> int:
        if box not in level:
            level[box] = 1 + max((of(b) for b in uses[box]), default=-1)
        return level[box]

    for box in uses:
        of(box)
    return [sorted(b for b in uses if level[b] == n) for n in range(max(level.values()) + 1)]


def drawing() -> str:
    """The floors as the architecture page shows them, the top floor first."""
    lines = ["```text"]
    for n, boxes in reversed(list(enumerate(floors(graph())))):
        row = f"floor {n}:"
        for box in boxes:
            if len(row) + len(box) > 98:
                lines.append(row)
                row = " " * len(f"floor {n}:")
            row += f" {box}"
        lines.append(row)
    lines.append("```")
    return "\n".join(lines)


def main() -> int:
    found = cycles(graph())
    if found:
        print("import cycles:", found, file=sys.stderr)
        return 1
    return page_block.main(PAGE, (BEGIN, END), drawing(), __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
