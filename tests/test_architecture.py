"""The package's shape (docs/architecture.md): no import circle, no upward import, imports at the
top of modules, a top level of subpackages. `python tests/test_architecture.py` prints the
figures."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "evoprune"
LOW = {"errors", "evoprune"}  # EvopruneError and __version__: importable from every layer
# what each package may import besides LOW (each package's docstring says the same)
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "network": {"core"},
    "spaces": {"network", "core"},
    "training": {"network", "store", "core"},
    "searching": {"spaces", "training", "network", "store", "core"},
    "analysis": {"spaces", "store", "core"},
    "experiments": {"analysis", "searching", "spaces", "training", "network", "store", "core"},
    "bench": {"experiments", "analysis", "searching", "spaces", "training", "network", "store",
              "core"},
    "api": {"searching", "analysis", "spaces", "training", "network", "store", "core"},
    "cli": {"api", "bench", "experiments", "analysis", "searching", "spaces", "training",
            "network", "store", "core"},
    "__main__": {"cli"},
    "errors": set(),
    "evoprune": set(),
}
MAX_DEFERRED = 10  # function-level imports of our own modules, each to defer a heavy dependency
MAX_TOP_MODULES = 5


def module_name(path: Path) -> str:
    """`evoprune/spaces/bands.py` -> `evoprune.spaces.bands` (a package is its __init__)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The own modules one import statement loads, parent packages included (their __init__ runs)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level == 0 and node.module:
        names = [f"{node.module}.{a.name}" for a in node.names]
    else:
        raise AssertionError(f"relative import at line {node.lineno}: write it absolute")
    out = []
    for name in names:
        if name.split(".")[0] != "evoprune":
            continue
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        parts = name.split(".")
        out += [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
    return out


def graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """Edges module -> own modules it imports (any level), and the function-level imports."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    deferred = []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [t for t in _targets(node, known) if t != name
                       and not name.startswith(t + ".")]
            if not targets:
                continue
            up, in_function, typing_only = node, False, False
            while up in parents:
                up = parents[up]
                in_function |= isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef))
                typing_only |= isinstance(up, ast.If) and "TYPE_CHECKING" in ast.unparse(up.test)
            if typing_only:
                continue
            edges[name].update(targets)
            if in_function:
                deferred.append((name, node.lineno))
    return edges, deferred


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def layer(module: str) -> str:
    """The top-level package (or module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "evoprune"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports that go against ALLOWED, as `module -> target`."""
    bad = []
    for m, targets in sorted(edges.items()):
        for t in sorted(targets):
            a, b = layer(m), layer(t)
            if a != b and b not in LOW and b not in ALLOWED[a]:
                bad.append(f"{m} -> {t}")
    return bad


def test_no_import_circle():
    edges, _ = graph()
    assert circles(edges) == []


def test_no_upward_import():
    edges, _ = graph()
    assert upward(edges) == []
    assert set(ALLOWED) >= {layer(m) for m in edges}


def test_function_level_own_imports_are_few_and_say_why():
    _, deferred = graph()
    assert len(deferred) <= MAX_DEFERRED
    for module, line in deferred:
        lines = modules()[module].read_text().splitlines()
        said = " ".join(lines[max(0, line - 3):line]).lower()
        assert "#" in said or '"""' in said, f"{module}:{line} defers an import without saying why"


def test_top_level_holds_subpackages_and_few_modules():
    top = [p for p in ROOT.iterdir() if p.suffix == ".py"]
    assert len(top) <= MAX_TOP_MODULES, sorted(p.name for p in top)
    for pkg in (p for p in ROOT.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"{pkg.name}/__init__.py: say what it may import"
        allowed = {w.strip("`,.").removeprefix("evoprune.") for w in doc.split("May import")[1].split()}
        if pkg.name not in ("cli", "experiments", "bench"):  # these name whole strata
            assert ALLOWED[pkg.name] <= allowed, pkg.name


def test_the_checker_finds_a_circle_and_an_upward_import():
    edges = {"evoprune.core.a": {"evoprune.network.b"}, "evoprune.network.b": {"evoprune.core.a"}}
    assert circles(edges) == [["evoprune.core.a", "evoprune.network.b"]]
    assert upward(edges) == ["evoprune.core.a -> evoprune.network.b"]


def test_relative_imports_are_refused():
    node = ast.parse("from . import x").body[0]
    with pytest.raises(AssertionError, match="relative"):
        _targets(node, {})


if __name__ == "__main__":
    e, d = graph()
    tops = sorted(p.name for p in ROOT.iterdir() if p.suffix == ".py")
    print(f"modules {len(e)}, top-level modules {len(tops)} {tops}, circles {len(circles(e))}, "
          f"upward imports {len(upward(e))}, function-level own imports {len(d)}")
    sys.exit(0)
