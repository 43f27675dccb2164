"""The reliability suite: faults planted in real searches. Its figures are printed at the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIGURES: Counter = Counter()


def pytest_collection_modifyitems(items: list) -> None:
    """Every test under tests/reliability/ carries the `reliability` marker."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the suite's figures: kills survived, trials lost, duplicates, bad inputs."""
    if not FIGURES:
        return
    f = FIGURES
    tr = terminalreporter
    tr.section("reliability figures")
    if f["kill_runs"]:
        tr.write_line(f"SIGKILLs survived: {f['kills']} of {f['kill_runs']} runs killed "
                      f"(mid-epoch {f['kills_step']}, mid-storage-write {f['kills_write']}, "
                      f"at a random time {f['kills_time']}); resumed studies with exactly n "
                      f"COMPLETE: {f['exact_n']} of {f['kill_studies']}; trials left RUNNING: "
                      f"{f['running_left']}")
    tr.write_line(f"COMPLETE trials lost: {f['lost']}; duplicate genotypes: {f['duplicates']}")
    if f["nan_runs"]:
        tr.write_line(f"NaN injected into a fine-tune: {f['nan_failed']} of {f['nan_runs']} "
                      "trials failed with a reason, the search went on to n COMPLETE")
    if f["worker_runs"]:
        tr.write_line(f"workers sharing one storage: {f['worker_runs']} runs "
                      f"({f['worker_trials']} trials), extra COMPLETE trials: {f['surplus']}")
    if f["bad_inputs"]:
        tr.write_line(f"bad inputs tried: {f['bad_inputs']}, rejected cleanly (exit 2, one "
                      f"line, storage unchanged): {f['rejected']}")
    if f["storage_code_runs"]:
        tr.write_line(f"storages holding code (os:abort, a module marking its import): "
                      f"{f['storage_code_refused']} of {f['storage_code_runs']} retrain/resume/"
                      "prune runs refused (exit 2, one line, nothing imported or written)")
    if f["resume_elsewhere_runs"]:
        tr.write_line(f"resumed from another folder: base reused in "
                      f"{f['resume_elsewhere_base_reused']} of {f['resume_elsewhere_runs']}")
    if f["disk_full_runs"] or f["journal_repairs"] or f["schema_races"]:
        tr.write_line(f"storage faults: disk full in {f['disk_full_runs']} searches, the failed "
                      f"uniform seed run again on resume in {f['disk_full_uniform_rerun']}; "
                      f"journals cut mid-record repaired: {f['journal_repairs']}; new SQLite "
                      f"files opened by 4 processes at once: {f['schema_races']} rounds")
    if f["postgres_runs"]:
        tr.write_line(f"PostgreSQL: {f['postgres_runs']} runs with 2 workers, "
                      f"{f['postgres_trials']} trials, dashboard read: {f['postgres_dashboard']}")


@pytest.fixture(scope="session")
def figures() -> Counter:
    """The suite's tally, printed by pytest_terminal_summary."""
    return FIGURES
