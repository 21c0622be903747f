"""Two structure rules that ruff and import-linter's contracts do not check, run by `make lint`
(docs/architecture.md#practices):

1. No function in unispeech_platform/ longer than MAX_FUNCTION_LINES, counted from its `def` line to its last
   line (nested functions and methods count on their own). ruff has no such rule: PLR0915 counts statements.
2. No import cycle in the project's own import graph (unispeech_core, unispeech_platform, jobs),
   function-local imports included: grimp (import-linter's graph) sees every import statement; TYPE_CHECKING
   imports are left out as in the import-linter contracts.

Prints each offender as `path:line what` and exits 1 if there is any.

    .venv/bin/python tools/lint_structure.py
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
LENGTH_CHECKED = ("unispeech_platform",)
PACKAGES = ("unispeech_core", "unispeech_platform", "jobs")


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> Iterator[str]:
    """`path:line name N lines` for every function under ``root`` longer than ``limit`` lines."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    yield f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines} lines"


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every module in one
    imports every other one, directly or through the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # recursion depth is bounded by the chain length (~tens of modules)
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def module_path(module: str) -> str:
    base = REPO / module.replace(".", "/")
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(REPO))


def cycle_report(graph: grimp.ImportGraph, cycle: list[str]) -> Iterator[str]:
    """One line per import that closes the cycle: `path:line import cycle (N modules): a -> b`."""
    members = set(cycle)
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                where = f"{module_path(importer)}:{detail['line_number']}"
                yield f"{where} import cycle ({len(cycle)} modules): {importer} -> {imported}"


def main() -> int:
    offenders = [line for package in LENGTH_CHECKED for line in long_functions(REPO / package)]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # grimp finds the packages through sys.path
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    cycles = import_cycles(graph)
    offenders += [line for cycle in cycles for line in cycle_report(graph, cycle)]
    for line in offenders:
        print(line)
    if offenders:
        print(f"lint_structure: functions over {MAX_FUNCTION_LINES} lines in {', '.join(LENGTH_CHECKED)}/ or "
              f"import cycles ({len(cycles)}) found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
