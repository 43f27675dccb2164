"""Several workers on one journal storage, and a NaN planted in a fine-tune."""

from __future__ import annotations

import pytest
from helpers import complete, duplicates, load, run_with_fault, search_argv


@pytest.mark.parametrize("workers", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_workers_share_one_journal_storage(tmp_path, base_ckpt, figures, workers):
    """--n-workers 2 and 4 on one journal file: exactly n COMPLETE, every worker's trials kept,
    no duplicate genotype, the 3 uniform trials (one per seed), no traceback or lock error."""
    n = 8
    storage = f"journal:{tmp_path}/s.log"
    run = run_with_fault("time", 10**9, search_argv(storage, base_ckpt, n, "--n-workers",
                                                     str(workers)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "lock" not in run.stderr.lower()
    study = load(storage)
    trials = study.get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    figures["worker_runs"] += 1
    figures["worker_trials"] += len(done)
    figures["surplus"] += len(done) - n
    figures["duplicates"] += duplicates(study)
    assert len(done) == n
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "PRUNED")
    assert len({t.user_attrs["worker"]["pid"] for t in done}) >= 2
    assert duplicates(study) == 0
    assert sum(bool(t.user_attrs.get("is_uniform")) for t in done) == 3
    assert len({t.user_attrs["seed"] for t in done}) == n  # every trial its own proxy seed
    assert len(complete(study)) == n


def test_a_nan_planted_in_a_fine_tune_fails_that_trial_and_the_search_goes_on(tmp_path,
                                                                              base_ckpt, figures):
    """NaN weights after the 60th optimizer step (trial 1's fine-tune, trial 0 taking 36): the
    NaN guard fails trial 1 with its reason; the search still ends with n COMPLETE."""
    storage = f"sqlite:///{tmp_path}/s.db"
    run = run_with_fault("nan", 60, search_argv(storage, base_ckpt, 3, "--uniform-seeds", "1"))
    assert run.returncode == 0, run.stderr[-2000:]
    trials = load(storage).get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    figures["nan_runs"] += 1
    figures["nan_failed"] += len(failed) == 1 and "non-finite" in failed[0].user_attrs.get(
        "fail_reason", "")
    assert [t.number for t in failed] == [1]
    assert "non-finite" in failed[0].user_attrs["fail_reason"]
    assert failed[0].values is None
    assert [t.state.name for t in trials].count("COMPLETE") == 3
