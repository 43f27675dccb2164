"""Compatibility: every module imports on the oldest Python that pyproject declares (3.10), and
the test suite's shared fixtures are defined once."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evoprune"
OLDEST = (3, 10)
# stdlib modules (and names of modules) added after 3.10: importing them needs a version guard
NEWER_MODULES = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}
NEWER_NAMES = {("typing", "Self"): (3, 11), ("typing", "LiteralString"): (3, 11),
               ("typing", "Never"): (3, 11), ("typing", "assert_never"): (3, 11),
               ("typing", "reveal_type"): (3, 11), ("typing", "Required"): (3, 11),
               ("typing", "NotRequired"): (3, 11), ("typing", "TypeVarTuple"): (3, 11),
               ("typing", "Unpack"): (3, 11), ("typing", "dataclass_transform"): (3, 11),
               ("typing", "override"): (3, 12), ("datetime", "UTC"): (3, 11),
               ("enum", "StrEnum"): (3, 11), ("enum", "ReprEnum"): (3, 11),
               ("itertools", "batched"): (3, 12), ("asyncio", "TaskGroup"): (3, 11)}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether `node` sits in an `if sys.version_info ...` branch or a `try` (an import fallback)."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If) and "version_info" in ast.unparse(parent.test):
            return True
        if isinstance(parent, ast.Try) and node in parent.body:
            return True
        node = parent
    return False


def newer_imports(source: str) -> list[str]:
    """The unguarded imports of stdlib modules or names newer than 3.10 in `source`."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [(node.module, None)] + [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in names:
            since = NEWER_MODULES.get(module) if name is None else NEWER_NAMES.get((module, name))
            if since and since > OLDEST and not _guarded(node, parents):
                what = module if name is None else f"{module}.{name}"
                found.append(f"line {node.lineno}: {what} (Python {since[0]}.{since[1]})")
    return found


def test_the_checker_sees_unguarded_and_guarded_imports():
    """The checker flags a bare `import tomllib` and lets the version-guarded fallback pass."""
    bare = "import tomllib\nfrom typing import Self\nfrom datetime import UTC, date\n"
    assert newer_imports(bare) == ["line 1: tomllib (Python 3.11)",
                                   "line 2: typing.Self (Python 3.11)",
                                   "line 3: datetime.UTC (Python 3.11)"]
    guarded = ("import sys\nif sys.version_info >= (3, 11):\n    import tomllib\nelse:\n"
               "    import tomli as tomllib\ntry:\n    from typing import Self\n"
               "except ImportError:\n    Self = None\n")
    assert newer_imports(guarded) == []


def test_no_module_imports_a_stdlib_module_newer_than_the_oldest_python():
    """No evoprune module imports tomllib (or another 3.11+ stdlib name) outside a version guard."""
    found = {str(p.relative_to(ROOT)): newer_imports(p.read_text(encoding="utf-8"))
             for p in sorted(PACKAGE.rglob("*.py"))}
    assert {p: f for p, f in found.items() if f} == {}


def _python310() -> str | None:
    """A working Python 3.10 interpreter: python3.10 on PATH, else pyenv's; None if there is none."""
    candidates = [shutil.which("python3.10")]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in Path(pyenv_root).glob("versions/3.10*/bin/python3.10"))
    for exe in filter(None, candidates):
        try:  # a pyenv shim is on PATH even where no 3.10 is selected: ask it
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 10)":
            return exe
    return None


# Runs under Python 3.10: import evoprune.experiments.reproduce; without tomli installed there (a declared
# dependency below 3.11), a stand-in module takes its place, so evoprune's own imports are checked.
IMPORT_REPRODUCE = """
import importlib.util, sys, types
sys.path.insert(0, {root!r})
if importlib.util.find_spec("tomli") is None:
    sys.modules["tomli"] = types.ModuleType("tomli")
import evoprune.core.config
print("imported")
"""


def test_the_toml_reader_imports_and_every_module_compiles_on_python_310():
    """Under Python 3.10 every evoprune file byte-compiles and the TOML reader (tomli) imports."""
    exe = _python310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter here")
    files = [str(p) for p in sorted(PACKAGE.rglob("*.py"))]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # leave no 3.10 .pyc in the tree
    code = ("import sys\nfor f in sys.argv[1:]:\n"  # byte-compile in memory: no .pyc written
            "    compile(open(f, encoding='utf-8').read(), f, 'exec', dont_inherit=True)\n")
    compiled = subprocess.run([exe, "-c", code, *files], capture_output=True, text=True,
                              timeout=120, env=env)
    assert compiled.returncode == 0, compiled.stderr
    imported = subprocess.run([exe, "-c", IMPORT_REPRODUCE.format(root=str(ROOT))],
                              capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert imported.returncode == 0 and imported.stdout.strip() == "imported", imported.stderr


def _fixture_definitions(name: str) -> list[tuple[str, str | None]]:
    """(file, scope) of every pytest fixture called `name` under tests/."""
    out = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef) or node.name != name:
                continue
            for dec in node.decorator_list:
                if "fixture" in ast.unparse(dec):
                    scope = next((kw.value.value for kw in getattr(dec, "keywords", [])
                                  if kw.arg == "scope"), None)
                    out.append((str(path.relative_to(ROOT)), scope))
    return out


def test_the_base_checkpoint_fixture_is_defined_once_for_the_session():
    """base_ckpt (a trained resnet20) lives in tests/conftest.py only, trained once a session."""
    assert _fixture_definitions("base_ckpt") == [("tests/conftest.py", "session")]

