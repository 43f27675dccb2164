from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_module_has_future_annotations_and_a_docstring():
    for path in sorted((ROOT / "evoprune").rglob("*.py")):
        text = path.read_text()
        assert text.lstrip().startswith('"""'), f"{path} needs a module docstring"
        if path.name != "__main__.py":
            assert "from __future__ import annotations" in text, path


def test_import_evoprune_is_light():
    code = "import sys, evoprune; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
