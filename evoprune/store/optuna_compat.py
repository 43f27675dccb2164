"""The Optuna internals evoprune relies on, in one place, checked against CHECKED_VERSIONS.

Each function names the private name it touches and why the public API does not serve.
tests/test_optuna_compat.py fails on any other Optuna version until these are checked again
(its behavioural tests, on SQLite and on a journal file) and the version added. Optuna is
imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

CHECKED_VERSIONS = ("4.9", "5.0", "5.1")  # Optuna major.minor versions these helpers were checked on


def is_checked(version: str) -> bool:
    """Whether an Optuna version string such as "5.0.0" is one of CHECKED_VERSIONS."""
    return ".".join(version.split(".")[:2]) in CHECKED_VERSIONS


def rdb_of(study: Any) -> Any | None:
    """The study's RDBStorage (`Study._storage`, `_CachedStorage._backend`), else None."""
    from optuna.storages import RDBStorage, _CachedStorage

    storage = study._storage
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, RDBStorage) else None


def set_running_trial_user_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set a user_attr on another process's RUNNING trial (`Study._storage`, `._trial_id`)."""
    # Public Trial.set_user_attr needs the owner's Trial object. Raises UpdateFinishedTrialError
    # where the trial was finished meanwhile (RDB and journal alike): the reaper's lost race.
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def set_finished_trial_user_attr(study: Any, trial: Any, key: str, value: Any) -> bool:
    """Set a finished trial's user_attr on an RDB (shadow `check_trial_is_updatable`); or False."""
    # Optuna refuses writes to finished trials; a journal cannot take them at all (its replay
    # keeps a finished trial as it finished). The shadow is an instance attribute of this RDB
    # storage object, removed before returning, so the storage refuses such writes again.
    rdb = rdb_of(study)
    if rdb is None:
        return False
    rdb.check_trial_is_updatable = lambda *_: None
    try:
        rdb.set_trial_user_attr(trial._trial_id, key, value)
    finally:
        del rdb.check_trial_is_updatable
    return True


def set_trial_user_attrs_at_once(trial: Any, attrs: dict[str, Any]) -> bool:
    """Write user_attrs in one RDB transaction (`_create_scoped_session`, `_set_trial_attr_…`)."""
    # The public Trial.set_user_attr commits once per key (13 commits a trial instead of 1).
    # Returns False, writing nothing, where the storage is no RDB or the internals are missing.
    rdb = rdb_of(trial.study)
    if rdb is None or not hasattr(rdb, "_set_trial_attr_without_commit"):
        return False
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return False
    with _create_scoped_session(rdb.scoped_session, True) as session:
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel,
                                               trial._trial_id, key, value)
    return True


def nsga2_parent_numbers(study: Any) -> set[int]:
    """The trials NSGA-II ever chose as parents (`NSGAIISampler:parent:G`, `Study._storage`)."""
    # GA samplers cache each generation's parents as trial ids in the study's system_attrs
    # (optuna.samplers._ga._base.BaseGASampler); no public method lists them all.
    ids: set[int] = set()
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        if key.startswith("NSGAIISampler:parent:"):
            ids.update(value)
    return {t.number for t in study.get_trials(deepcopy=False) if t._trial_id in ids}


def nsga2_generation(trial: Any) -> int | None:
    """The NSGA-II generation a trial was sampled in (`NSGAIISampler:generation`), else None."""
    return trial.system_attrs.get("NSGAIISampler:generation")
