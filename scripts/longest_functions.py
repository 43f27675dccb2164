"""The longest functions of a package: `python scripts/longest_functions.py [evoprune] [N]`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def longest(root: Path, n: int) -> list[tuple[int, str]]:
    """The n longest function definitions under `root`, longest first."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1,
                             f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)[:n]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "evoprune").resolve()
    for lines, where in longest(target, int(sys.argv[2]) if len(sys.argv) > 2 else 5):
        print(f"{lines:>4}  {where}")
