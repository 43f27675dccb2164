"""Helpers of the reliability suite: fast searches, faulted child processes, storage checks."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna

HERE = Path(__file__).parent


def search_argv(storage: str, ckpt: str, n: int, *extra: str) -> list[str]:
    """A fast search on digits: 1 proxy epoch, a 4-trial NSGA-II population (and the default
    3 uniform trials, unless `extra` says otherwise)."""
    return ["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--checkpoint", ckpt,
            "--storage", storage, "--proxy-epochs", "1", "--population", "4",
            "--device", "cpu", "--baselines", "none", "--n-trials", str(n), *extra]


def run_with_fault(point: str, k: int, argv: list[str], timeout: float = 300
                   ) -> subprocess.CompletedProcess:
    """Run `evoprune ARGV` in a child process that meets `point` at its K-th occasion."""
    return subprocess.run([sys.executable, str(HERE / "fault.py"), point, str(k), *argv],
                          capture_output=True, text=True, timeout=timeout)


def load(storage: str, name: str = "resnet20-digits-mCB-1-f0.25") -> optuna.Study:
    """Load a study the search wrote (any storage kind)."""
    from evoprune.store.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def complete(study: optuna.Study) -> dict[int, tuple]:
    """COMPLETE trials by number: (values, params)."""
    return {t.number: (tuple(t.values), tuple(sorted(t.params.items())))
            for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}


def duplicates(study: optuna.Study) -> int:
    """COMPLETE searched trials whose genotype another COMPLETE trial already had (the uniform
    trials share theirs by design: one per proxy seed)."""
    seen, dup = set(), 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and not t.user_attrs.get("is_uniform"):
            key = tuple(sorted(t.params.items()))
            dup += key in seen
            seen.add(key)
    return dup


def storage_sha(path: Path) -> str:
    """A hash of an SQLite storage's content (every row), whatever its WAL holds."""
    with sqlite3.connect(path) as con:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()


def folder_files(folder: Path) -> set[str]:
    """Files of the folder, but SQLite's own -wal and -shm companions."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if not p.name.endswith(("-wal", "-shm"))}
