"""evoprune.store.optuna_compat: the Optuna internals evoprune touches, pinned and checked by behaviour.

On a new Optuna version the first test fails: run the others, fix what they find, then add the
version to CHECKED_VERSIONS.
"""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from evoprune.store import optuna_compat as compat
from evoprune.store.storage import open_storage, set_user_attrs

ATTRS = {f"k{i:02d}": [i, float(i) / 3, {"n": str(i)}] for i in range(13)}


@pytest.fixture(params=["sqlite", "journal"])
def url(request, tmp_path) -> str:
    """A fresh storage URL of each kind."""
    kind = request.param
    return f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"


def _study(url: str) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=open_storage(url), load_if_exists=True)


def _reloaded(url: str) -> optuna.Study:
    """The study through a storage object of its own (no cache of this process's writes)."""
    return optuna.load_study(study_name="c", storage=open_storage(url))


def test_the_installed_optuna_is_a_checked_version():
    """A new Optuna fails here: re-check the helpers below on it, then extend CHECKED_VERSIONS."""
    assert compat.is_checked(optuna.__version__), (
        f"optuna {optuna.__version__} is not in {compat.CHECKED_VERSIONS}: check "
        "evoprune/store/optuna_compat.py against it (these tests) and add its major.minor")


def test_is_checked_compares_major_and_minor_only():
    """Patch releases count as their minor version; anything else is unchecked."""
    assert compat.is_checked("5.0.3") and compat.is_checked("4.9.0")
    assert not compat.is_checked("4.8.0") and not compat.is_checked("5.10.0")
    assert not compat.is_checked("50.0")


def test_rdb_of_finds_the_rdb_behind_the_cache_and_nothing_in_a_journal(url):
    """SQLite studies hold a _CachedStorage around the RDBStorage; a journal has none."""
    rdb = compat.rdb_of(_study(url))
    if url.startswith("sqlite"):
        assert isinstance(rdb, optuna.storages.RDBStorage)
    else:
        assert rdb is None


def test_user_attrs_are_written_at_once_on_sqlite_key_by_key_on_a_journal(url):
    """SQLite: 13 attrs in one commit; a journal: refused (False), so set_user_attrs falls back
    to the public calls; either way every attr is stored."""
    study = _study(url)
    trial = study.ask()
    commits = []
    rdb = compat.rdb_of(study)
    if rdb is not None:
        sqlalchemy.event.listen(rdb.engine, "commit", lambda _conn: commits.append(1))
    done = compat.set_trial_user_attrs_at_once(trial, ATTRS)
    assert done is url.startswith("sqlite")
    if done:
        assert len(commits) == 1
    else:
        assert _reloaded(url).get_trials()[0].user_attrs == {}
        set_user_attrs(trial, ATTRS)
    assert _reloaded(url).get_trials()[0].user_attrs == ATTRS


def test_a_finished_trials_attr_is_set_on_sqlite_and_refused_by_a_journal(url):
    """True and stored on SQL storages; False and untouched on a journal. The storage refuses
    the public write on a finished trial before and after (the shadow does not stay)."""
    study = _study(url)
    trial = study.ask()
    study.tell(trial, 1.0)
    frozen = study.get_trials()[0]
    with pytest.raises(UpdateFinishedTrialError):
        study._storage.set_trial_user_attr(trial._trial_id, "late", 1)
    done = compat.set_finished_trial_user_attr(study, frozen, "retrain", {"acc": 0.9})
    assert done is url.startswith("sqlite")
    stored = _reloaded(url).get_trials()[0].user_attrs
    assert stored == ({"retrain": {"acc": 0.9}} if done else {})
    with pytest.raises(UpdateFinishedTrialError):
        study._storage.set_trial_user_attr(trial._trial_id, "late", 1)
    if done:
        assert "check_trial_is_updatable" not in vars(compat.rdb_of(study))


def test_another_processs_running_trial_takes_an_attr_and_a_finished_one_refuses(url):
    """The reaper's write: stored on a RUNNING trial owned by another storage object; on a
    trial finished meanwhile Optuna raises UpdateFinishedTrialError (the lost race)."""
    owner = _study(url)
    trial = owner.ask()
    reaper = _reloaded(url)
    running = reaper.get_trials(states=(TrialState.RUNNING,))[0]
    compat.set_running_trial_user_attr(reaper, running, "fail_reason", "died")
    assert _reloaded(url).get_trials()[0].user_attrs == {"fail_reason": "died"}
    owner.tell(trial, 2.0)
    with pytest.raises(UpdateFinishedTrialError):
        compat.set_running_trial_user_attr(reaper, running, "fail_reason", "late")
    assert _reloaded(url).get_trials()[0].user_attrs == {"fail_reason": "died"}


def test_importing_the_module_imports_no_optuna():
    """Its imports are inside the functions, like storage.py's."""
    import subprocess
    import sys

    code = "import evoprune.store.optuna_compat, sys; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
