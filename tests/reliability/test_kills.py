"""SIGKILL a running search ten times at random points, resuming after each: nothing is lost."""

from __future__ import annotations

import random
import signal

import pytest
from helpers import complete, duplicates, load, run_with_fault, search_argv

from evoprune.store.storage import find_study

N = 12
POINTS = ["step", "write", "time", "step", "write", "step", "time", "write", "step", "write"]


def _draw(point: str, rng: random.Random) -> int:
    """The occasion of the fault: an optimizer step of the next two trials (36 per epoch on
    digits' 1150 training images at batch 32), a write statement of set-up (31 with the 3
    uniform trials) or the next trials, a moment in ms."""
    return {"step": rng.randint(1, 72), "write": rng.randint(1, 60),
            "time": rng.randint(2500, 6000)}[point]


@pytest.mark.parametrize("kind,runs", [
    ("sqlite", 6),  # CI's 15-minute budget: six kill points by default, all ten with -m slow
    pytest.param("sqlite", 10, marks=pytest.mark.slow),
    pytest.param("journal", 10, marks=pytest.mark.slow)])
def test_ten_sigkills_then_resume_leave_exactly_n_complete(tmp_path, base_ckpt, figures, kind,
                                                           runs):
    """Each run resumes the last and is killed; after ten kills (six in the default run) a clean
    run ends the study with exactly N COMPLETE trials, none RUNNING, no COMPLETE trial lost or
    changed, no duplicate. (A journal file has no SQL writes: its write faults become kills at
    a random moment.)"""
    rng = random.Random(20261121)
    storage = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"
    argv = search_argv(storage, base_ckpt, N)
    before: dict[int, tuple] = {}
    kills, lost = 0, 0
    log = []
    points = POINTS[:runs]
    for point in points if kind == "sqlite" else [p.replace("write", "time") for p in points]:
        k = _draw(point, rng)
        run = run_with_fault(point, k, argv)
        log.append((point, k, run.returncode))
        assert run.returncode in (-signal.SIGKILL, 0), run.stderr[-2000:]
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
        if run.returncode == -signal.SIGKILL:
            kills += 1
            figures[f"kills_{point}"] += 1
        figures["kill_runs"] += 1
        study = find_study(storage, "resnet20-digits-mCB-1-f0.25")
        now = complete(study) if study is not None else {}
        lost += sum(1 for n, v in before.items() if now.get(n) != v)
        before = now
    figures["kills"] += kills
    assert kills >= runs - 2, log  # a fault late in a run may meet a finished study
    final = run_with_fault("time", 10**9, argv)  # no fault: resume to the end
    assert final.returncode == 0, final.stderr[-2000:]
    study = load(storage)
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    now = complete(study)
    lost += sum(1 for n, v in before.items() if now.get(n) != v)
    dup = duplicates(study)
    figures["kill_studies"] += 1
    figures["exact_n"] += states.count("COMPLETE") == N
    figures["running_left"] += states.count("RUNNING")
    figures["lost"] += lost
    figures["duplicates"] += dup
    assert states.count("COMPLETE") == N, (log, states)
    assert "RUNNING" not in states and "WAITING" not in states
    assert lost == 0 and dup == 0
    assert sum(bool(t.user_attrs.get("is_uniform")) for t in trials
               if t.state.name == "COMPLETE") == 3, (log, [  # the default uniform_seeds
        (t.number, t.state.name, t.user_attrs.get("is_uniform"), t.user_attrs.get("fail_reason"),
         t.system_attrs.get("failed_trial")) for t in trials])
    for t in trials:
        if t.state.name == "FAIL":  # a killed trial: declared, and its genotype retried
            assert "died" in t.user_attrs.get("fail_reason", ""), t.user_attrs


@pytest.mark.slow  # CI's 15-minute budget; -m slow runs it
def test_a_study_killed_while_being_created_is_finished_on_resume(tmp_path, base_ckpt, figures):
    """SIGKILL inside the study's creation (its attrs, metric names, uniform trials): the rerun
    finishes the creation instead of refusing a study whose attrs look different."""
    storage = f"sqlite:///{tmp_path}/s.db"
    argv = search_argv(storage, base_ckpt, 4)
    for k in (3, 6, 9):  # the creation's 3rd, 6th and 9th write statements
        run = run_with_fault("write", k, argv)
        figures["kill_runs"] += 1
        if run.returncode == -signal.SIGKILL:
            figures["kills"] += 1
            figures["kills_write"] += 1
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        half = find_study(storage, "resnet20-digits-mCB-1-f0.25")
        assert half is None or not half.user_attrs.get("created")  # killed inside the creation
    final = run_with_fault("time", 10**9, argv)
    assert final.returncode == 0, final.stderr[-2000:]
    study = load(storage)
    states = [t.state.name for t in study.get_trials()]
    figures["kill_studies"] += 1
    figures["exact_n"] += states.count("COMPLETE") == 4
    assert states == ["COMPLETE"] * 4
    assert study.user_attrs["created"] is True and "config" in study.user_attrs
    assert [bool(t.user_attrs.get("is_uniform")) for t in study.get_trials()] == \
        [True, True, True, False]


@pytest.mark.slow  # CI's 15-minute budget; -m slow runs it
def test_a_creation_killed_between_the_uniform_trials_enqueues_the_rest(tmp_path, base_ckpt,
                                                                        figures):
    """SIGKILL after the first of the 3 uniform trials is queued (write 22 of a fresh creation:
    the second one's INSERT): the study is not created yet, and the rerun queues the 2 missing
    uniform trials before any searched one, so the study holds all 3 seeds."""
    storage = f"sqlite:///{tmp_path}/s.db"
    argv = search_argv(storage, base_ckpt, 5)
    run = run_with_fault("write", 22, argv)
    figures["kill_runs"] += 1
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    figures["kills"] += 1
    figures["kills_write"] += 1
    half = find_study(storage, "resnet20-digits-mCB-1-f0.25")
    assert half is not None and not half.user_attrs.get("created")
    assert [t.user_attrs.get("is_uniform") for t in half.get_trials()] == [True]
    final = run_with_fault("time", 10**9, argv)
    assert final.returncode == 0, final.stderr[-2000:]
    trials = load(storage).get_trials()
    figures["kill_studies"] += 1
    figures["exact_n"] += [t.state.name for t in trials].count("COMPLETE") == 5
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert [bool(t.user_attrs.get("is_uniform")) for t in trials] == [True] * 3 + [False] * 2
    assert len({t.user_attrs["seed"] for t in trials[:3]}) == 3
