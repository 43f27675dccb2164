"""evoprune.store.storage: URL paths, the dead-trial reaper, its races, and the retry it queues."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from evoprune.errors import EvopruneError
from evoprune.store import storage as st

NAME = "s"
GENES = {"g000": 0.25, "g001": 0.75}
DIST = optuna.distributions.FloatDistribution(0.0, 1.0)


def _url(tmp_path: Path, kind: str) -> str:
    return f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"


def _open(url: str) -> optuna.Study:
    """The study as one more process sees it: its own storage object."""
    return optuna.load_study(study_name=NAME, storage=st.open_storage(url))


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _study_with_running(url: str, tag: dict | None, **extra: object) -> optuna.Study:
    """A study whose trial 0 (the enqueued uniform one) is RUNNING with worker tag `tag`."""
    study = optuna.create_study(study_name=NAME, storage=st.open_storage(url),
                                directions=["minimize", "minimize"])
    study.enqueue_trial(GENES, user_attrs={"is_uniform": True})
    trial = study.ask()
    for key in GENES:
        trial.suggest_float(key, 0.0, 1.0)
    if tag is not None:
        trial.set_user_attr("worker", tag)
    for key, value in extra.items():
        trial.set_user_attr(key, value)
    return study


def _dead_tag() -> dict:
    return {"host": socket.gethostname(), "pid": _dead_pid(), "index": 1}


def test_sqlite_and_journal_paths_parse_every_form():
    """One parser per URL form; a ?query is the driver's and not part of the file name."""
    assert st.sqlite_path("sqlite:///studies/e.db") == Path("studies/e.db")
    assert st.sqlite_path("sqlite:////abs/e.db") == Path("/abs/e.db")
    assert st.sqlite_path("sqlite:///e.db?timeout=5") == Path("e.db")
    with pytest.raises(EvopruneError, match="not a SQLite URL"):
        st.sqlite_path("journal:e.log")
    assert st.journal_path("journal:a/b.log") == Path("a/b.log")
    assert st.journal_path("a/b.log") == Path("a/b.log")


def test_a_sqlite_url_with_driver_options_finds_its_study(tmp_path):
    """find_study and check_storage look for the file without the URL's ?query."""
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name=NAME, storage=st.open_storage(url))
    assert st.check_storage(url + "?timeout=5", must_exist=True) == "sqlite"
    found = st.find_study(url + "?timeout=5", NAME)
    assert found is not None and found.study_name == NAME


def test_default_storage_lives_in_storage_and_storage_imports_neither_torch_nor_optuna():
    """recipes defaults to the same constant; importing storage loads neither heavy package."""
    from evoprune.store.recipes import DEFAULT_STORAGE

    assert st.DEFAULT_STORAGE == DEFAULT_STORAGE == "sqlite:///studies/evoprune.db"
    code = "import evoprune.store.storage, sys; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_dead_workers_trial_is_failed_and_retried_by_optuna_semantics(tmp_path, kind):
    """FAIL with a reason; the retry is WAITING with the genotype, Optuna's retry system_attrs
    and, of the user_attrs, only `is_uniform` (not the dead `worker`, `fail_reason`, results)."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, _dead_tag(), val_drop=1.5, seed=7)
    assert st.reap_dead_trials(study) == [0]
    failed, retry = _open(url).get_trials()
    assert failed.state == TrialState.FAIL
    assert "worker process died" in failed.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING
    assert retry.params == GENES and retry.distributions == {k: DIST for k in GENES}
    assert retry.user_attrs == {"is_uniform": True}
    assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["retry_history"] == [0]
    assert st.retried_from(retry) == 0 and st.retried_from(failed) is None
    assert st.reap_dead_trials(_open(url)) == []  # nothing RUNNING is left


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_retried_retry_names_the_original_and_the_whole_chain(tmp_path, kind):
    """Trial 1 retries 0 and dies too: trial 2 names 0 as its original, [0, 1] as its history."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, _dead_tag())
    assert st.reap_dead_trials(study) == [0]
    again = study.ask()  # pops the retry
    assert again.number == 1 and again.params == GENES
    again.set_user_attr("worker", _dead_tag())
    assert st.reap_dead_trials(study) == [1]
    third = _open(url).get_trials()[2]
    assert st.retried_from(third) == 0 and third.system_attrs["retry_history"] == [0, 1]
    assert third.user_attrs == {"is_uniform": True}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_reaper_killed_between_the_fail_and_the_retry_leaves_an_orphan_retried_once(
        tmp_path, kind, monkeypatch):
    """The FAIL and the retry are two writes: a reaper killed between them leaves a FAIL trial
    without retry. retry_orphans (a resume) queues it once its reaper is dead, and only once."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, _dead_tag())
    real_retry, real_alive = st.retry_trial, st._alive
    monkeypatch.setattr(st, "retry_trial", lambda *_a: None)  # the reaper dies before its retry
    assert st.reap_dead_trials(study) == [0]
    monkeypatch.setattr(st, "retry_trial", real_retry)
    (failed,) = _open(url).get_trials()
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["reaped_by"] == {"host": socket.gethostname(), "pid": os.getpid()}
    assert st.retry_orphans(_open(url)) == []  # its reaper (this process) lives: it may retry yet
    monkeypatch.setattr(st, "_alive", lambda pid: pid != os.getpid() and real_alive(pid))
    assert st.retry_orphans(_open(url)) == [0]
    failed, retry = _open(url).get_trials()
    assert retry.state == TrialState.WAITING and retry.params == GENES
    assert retry.user_attrs == {"is_uniform": True} and st.retried_from(retry) == 0
    assert st.retry_orphans(_open(url)) == []  # retried: no second retry
    assert len(_open(url).get_trials()) == 2


def test_retried_from_reads_the_legacy_user_attr_of_older_studies():
    """A trial written before Optuna's callback was used carries only `retry_of`."""
    old = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"retry_of": 3})
    assert st.retried_from(old) == 3
    assert st.retried_from(optuna.trial.create_trial(state=TrialState.WAITING)) is None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_live_foreign_and_young_tagless_trials_are_left_running(tmp_path, kind, monkeypatch):
    """Our own pid is alive, another host is the heartbeats' business, a tagless trial is young;
    a tagless trial older than TAGLESS_GRACE_S was killed at birth and is reaped."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, {"host": socket.gethostname(), "pid": os.getpid()})
    other = study.ask()
    other.set_user_attr("worker", {"host": "elsewhere", "pid": _dead_pid()})
    tagless = study.ask()
    assert st.reap_dead_trials(study) == []
    monkeypatch.setattr(st, "TAGLESS_GRACE_S", 0)
    assert st.reap_dead_trials(study) == [tagless.number]
    states = [t.state for t in _open(url).get_trials()]
    assert states == [TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]


def _lose_race(study: optuna.Study, url: str, moment: str, monkeypatch) -> None:
    """Let another process FAIL trial 0 at `moment` of reap_dead_trials (after the listing)."""
    def finish() -> None:
        _open(url).tell(0, state=TrialState.FAIL)

    storage = study._storage
    if moment == "before_the_reason":  # the reaper decides it is dead, then the other wins
        monkeypatch.setattr(st, "_alive", lambda _pid: finish() or False)
    elif moment == "before_tell":  # Study.tell reads the trial finished: ValueError
        write = storage.set_trial_user_attr
        monkeypatch.setattr(storage, "set_trial_user_attr",
                            lambda *a, **k: (write(*a, **k), finish())[0])
    else:  # tell's check passed, the storage refuses the write: UpdateFinishedTrialError
        assert moment == "inside_tell"
        set_state = storage.set_trial_state_values
        monkeypatch.setattr(storage, "set_trial_state_values",
                            lambda *a, **k: (finish(), set_state(*a, **k))[1])


@pytest.mark.parametrize("moment", ["before_the_reason", "before_tell", "inside_tell"])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_another_process_finished_first_is_skipped(tmp_path, kind, moment, monkeypatch):
    """Losing the race at any moment: no error, not reported, no second retry queued."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, _dead_tag())
    _lose_race(study, url, moment, monkeypatch)
    assert st.reap_dead_trials(study) == []
    trials = _open(url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL]  # the other's FAIL, and no retry


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_real_storage_error_while_reaping_propagates(tmp_path, kind, monkeypatch):
    """A locked database or a failing disk is no lost race: reap_dead_trials raises it."""
    url = _url(tmp_path, kind)
    study = _study_with_running(url, _dead_tag())
    error = (sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database is locked"))
             if kind == "sqlite" else OSError(28, "No space left on device"))

    def broken(*_a: object, **_k: object) -> bool:
        raise error

    monkeypatch.setattr(study._storage, "set_trial_state_values", broken)
    with pytest.raises(type(error)):
        st.reap_dead_trials(study)
    assert [t.state for t in _open(url).get_trials()] == [TrialState.RUNNING]


def test_retry_trial_is_optunas_callback_given_only_the_inherited_attrs(tmp_path, monkeypatch):
    """Both retry paths go through RetryHeartbeatStaleTrialCallback; it sees a filtered copy."""
    seen = []
    original = optuna.storages.RetryHeartbeatStaleTrialCallback.__call__

    def spy(self, study, trial):
        seen.append(dict(trial.user_attrs))
        return original(self, study, trial)

    monkeypatch.setattr(optuna.storages.RetryHeartbeatStaleTrialCallback, "__call__", spy)
    url = _url(tmp_path, "sqlite")
    study = _study_with_running(url, _dead_tag(), fail_reason="an old reason")
    assert st.reap_dead_trials(study) == [0]
    assert seen == [{"is_uniform": True}]
    assert _open(url).get_trials()[0].user_attrs["worker"]["index"] == 1  # the original keeps it


def test_rdb_heartbeats_retry_a_stale_trial_with_the_same_callback(tmp_path, monkeypatch):
    """An RDB storage opened with heartbeats: a stale trial is failed and retried by retry_trial."""
    monkeypatch.setattr(st, "storage_kind", lambda _url: "rdb")  # SQLite standing in for an RDB
    monkeypatch.setattr(st, "HEARTBEAT_S", 1)
    monkeypatch.setattr(st, "GRACE_S", 1)
    url = f"sqlite:///{tmp_path}/s.db"
    storage = st.open_storage(url, heartbeat=True)
    assert storage.get_heartbeat_stale_trial_callback() is st.retry_trial
    study = _study_with_running(url, {"host": "elsewhere", "pid": 1})
    study = optuna.load_study(study_name=NAME, storage=storage)
    storage.record_heartbeat(study.get_trials()[0]._trial_id)
    time.sleep(2.2)  # SQLite's clock has whole seconds: more than GRACE_S must pass
    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    failed, retry = _open(url).get_trials()
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.user_attrs == {"is_uniform": True} and st.retried_from(retry) == 0


def test_a_refused_tell_of_a_trial_still_running_propagates(tmp_path, monkeypatch):
    """Study.tell's ValueError counts as a lost race only when the trial is in fact finished."""
    url = _url(tmp_path, "sqlite")
    study = _study_with_running(url, _dead_tag())

    def refuse(*_a: object, **_k: object) -> None:
        raise ValueError("a sampler that refuses")

    monkeypatch.setattr(study, "tell", refuse)
    with pytest.raises(ValueError, match="a sampler that refuses"):
        st.reap_dead_trials(study)
