"""Optuna storages by URL: SQLite (WAL), journal files, any RDB; checked before anything is written.

Every stage after the search reads only the storage (docs/architecture.md, "The storage
schema"). `sqlite:///PATH` is one file for one process; `journal:PATH` (or a path ending in
`.log`) is Optuna's JournalStorage, safe for many processes on one machine; any other
SQLAlchemy URL (`postgresql://…`, `mysql://…`) serves many machines, with heartbeats so a trial
left RUNNING by a dead machine is failed and retried.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError

DEFAULT_STORAGE = "sqlite:///studies/evoprune.db"
HEARTBEAT_S = 30  # RDB heartbeats: a trial silent for GRACE_S is failed and retried
GRACE_S = 120
TAGLESS_GRACE_S = 10  # a RUNNING trial without a worker tag this old was killed at birth
RETRY_INHERITS = ("is_uniform",)  # the only user_attrs a retried trial keeps (see retry_trial)
DIED = "its worker process died (killed or crashed)"  # the fail_reason of a reaped trial
ORPHAN_GRACE_S = 60  # a reaped trial of another host's reaper this long without its retry


def storage_kind(url: str) -> str:
    """Classify a storage URL: sqlite, journal or rdb (refusing what Optuna cannot open)."""
    if url.startswith("journal:") or url.endswith(".log"):
        return "journal"
    if url.startswith("sqlite:///"):
        return "sqlite"
    if "://" in url and url.split("://", 1)[0].split("+")[0] in (
            "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql"):
        return "rdb"
    raise EvopruneError(f"cannot open storage {url!r}: use sqlite:///FILE.db, journal:FILE.log "
                        "or an RDB URL such as postgresql://user@host/db")


def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///PATH` URL (four slashes for an absolute PATH)."""
    if not url.startswith("sqlite:///"):
        raise EvopruneError(f"not a SQLite URL: {url!r} (use sqlite:///FILE.db)")
    return Path(url[len("sqlite:///"):].split("?", 1)[0])  # a ?query is the driver's options


def journal_path(url: str) -> Path:
    """The log file of a journal URL: `journal:PATH`, or a bare path ending in `.log`."""
    return Path(url[len("journal:"):] if url.startswith("journal:") else url)


def storage_folder(url: str) -> Path | None:
    """The folder of a file storage (SQLite, journal): its checkpoints live beside it; None for
    an RDB server, whose studies keep absolute checkpoint paths."""
    kind = storage_kind(url)
    if kind == "rdb":
        return None
    return (sqlite_path(url) if kind == "sqlite" else journal_path(url)).resolve().parent


def check_storage(url: str, *, n_workers: int = 1, must_exist: bool = False) -> str:
    """Check that `url` can be opened for this use without writing anything; return its kind."""
    kind = storage_kind(url)
    if kind == "sqlite":
        path = sqlite_path(url)
        if n_workers > 1:
            raise EvopruneError("SQLite is not safe for several writers: with --n-workers > 1 use "
                                "--storage journal:studies/NAME.log or postgresql://…")
        if must_exist and not path.is_file():
            raise EvopruneError(f"no study storage at {path}: pass --storage URL")
        if not path.resolve().parent.is_dir():
            raise EvopruneError(f"folder {path.resolve().parent} of the storage does not exist: "
                                "create it or choose another --storage")
    elif kind == "journal":
        path = journal_path(url)
        if must_exist and not path.is_file():
            raise EvopruneError(f"no journal storage at {path}: pass --storage URL")
        if not path.resolve().parent.is_dir():
            raise EvopruneError(f"folder {path.resolve().parent} of the storage does not exist: "
                                "create it or choose another --storage")
    else:
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as exc:  # a driver missing, a host down, a bad password: one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EvopruneError(f"cannot open storage {url}: {first}") from None
    return kind


def open_storage(url: str, *, heartbeat: bool = False, wal: bool = True) -> Any:
    """Open (creating where needed) the Optuna storage at `url`; call `check_storage` first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind = storage_kind(url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(journal_path(url))))
    extra: dict[str, Any] = {}
    if heartbeat and kind == "rdb":
        extra = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                 "heartbeat_stale_trial_callback": retry_trial}  # Optuna's retry
    try:
        storage = optuna.storages.RDBStorage(url, **extra)
    except Exception as exc:
        raise EvopruneError(f"cannot open storage {url}: {str(exc).splitlines()[0]}") from None
    if kind == "sqlite" and wal:
        _sqlite_wal(storage)
    return storage


def _sqlite_wal(storage: Any) -> None:
    """Write-ahead log, fsync at checkpoints: a trial's writes cost half (crash-safe still)."""
    import sqlalchemy

    def pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener get the pragmas too


def load_study(url: str, name: str, *, sampler: Any = None, heartbeat: bool = False) -> Any:
    """Load study `name` from an existing storage, with one-line errors."""
    import optuna

    check_storage(url, must_exist=True)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=heartbeat),
                                 sampler=sampler)
    except KeyError:
        names = study_names(url)
        raise EvopruneError(f"no study named {name!r} in {url}"
                            + (f" (it holds {', '.join(names)})" if names else "")) from None


def study_names(url: str) -> list[str]:
    """Names of the studies an existing storage holds."""
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(url))]


def find_study(url: str, name: str) -> Any | None:
    """The study named `name` if the storage exists and holds it, else None; creates nothing."""
    kind = storage_kind(url)
    if kind == "sqlite" and not sqlite_path(url).is_file():
        return None
    if kind == "journal" and not journal_path(url).is_file():
        return None
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, wal=False))
    except KeyError:
        return None


def retry_trial(study: Any, trial: Any) -> None:
    """Queue a failed trial again with Optuna's RetryHeartbeatStaleTrialCallback (see comment)."""
    # The one retry of both paths: the RDB heartbeat's `heartbeat_stale_trial_callback` (a trial
    # of a dead machine) and `reap_dead_trials` (a dead process on this host). Optuna's callback
    # adds a WAITING trial with the same params and distributions, the failed trial's
    # system_attrs plus `failed_trial` (the first trial of the chain) and `retry_history` (read by
    # `retried_from`), and a copy of every user_attr. It is handed a copy of the failed trial
    # whose user_attrs keep only RETRY_INHERITS: an inherited `worker` would carry a dead pid
    # into the retry's RUNNING state until the objective re-tags it, and `reap_dead_trials` would
    # fail it in that window; an inherited `fail_reason` or result would stay on a retry that
    # completes (Optuna cannot delete a user_attr). So the objective needs nothing for retries.
    # (RetryFailedTrialCallback is the same class under its old name, deprecated since 4.9.)
    import copy
    import warnings

    import optuna

    failed = copy.deepcopy(trial)  # the callback appends to the trial's retry_history in place
    failed.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in RETRY_INHERITS}
    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback()
    callback(study, failed)


def retried_from(trial: Any) -> int | None:
    """The number of the original trial that `trial` retries, or None where it is no retry."""
    # Optuna's `failed_trial` system_attr (RetryHeartbeatStaleTrialCallback.retried_trial_number:
    # the first trial of a chain; `retry_history` lists the chain). Studies written before
    # evoprune used Optuna's callback carry the legacy user_attr `retry_of` (the parent).
    import warnings

    import optuna

    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    if number is None:
        number = trial.user_attrs.get("retry_of")
    return None if number is None else int(number)


def worker_tag() -> dict[str, Any]:
    """Who runs a trial: host and process id (lets a resume tell dead workers from live ones)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_trials(study: Any) -> list[int]:
    """Fail and retry RUNNING trials whose worker on this host is gone; return their numbers.

    A process killed mid-trial leaves its trial RUNNING. On this host its pid tells whether it
    died; elsewhere RDB heartbeats do the same after a grace period. A trial with no worker tag
    (killed between its start and the tag's write) is dead once TAGLESS_GRACE_S old. A trial that
    another process finishes meanwhile (another worker reaping it) is skipped; any other storage
    error propagates.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = datetime.datetime.now()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get("worker")
        if not isinstance(tag, dict):  # killed between the trial's start and its tag (which a
            start = trial.datetime_start  # live worker writes within milliseconds)
            if start is None or (now - start).total_seconds() < TAGLESS_GRACE_S:
                continue
        elif tag.get("host") != host or _alive(int(tag.get("pid", 0))):
            continue
        failed = _fail_dead(study, trial)
        if failed is not None:
            retry_trial(study, failed)
            reaped.append(trial.number)
    return reaped


def retry_orphans(study: Any) -> list[int]:
    """Queue the retry of reaped trials whose reaper died between their FAIL and the retry.

    `reap_dead_trials` FAILs a trial and then queues its retry, two writes: a reaper killed
    between them leaves a FAIL trial no retry follows (with uniform_seeds, a uniform seed lost).
    Such a trial is an orphan once its reaper (`reaped_by`) is dead on this host, or
    ORPHAN_GRACE_S after its FAIL elsewhere. Called when a search resumes (one process), not by
    the workers' polls, which would race each other to the same retry.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {int(n) for t in trials for n in t.system_attrs.get("retry_history", [])}
    retried |= {int(t.user_attrs["retry_of"]) for t in trials if "retry_of" in t.user_attrs}
    host, now = socket.gethostname(), datetime.datetime.now()
    out = []
    for t in trials:
        by = t.user_attrs.get("reaped_by")
        if t.state != TrialState.FAIL or not isinstance(by, dict) or t.number in retried:
            continue
        if by.get("host") == host:
            if _alive(int(by.get("pid", 0))):
                continue
        elif t.datetime_complete is None or \
                (now - t.datetime_complete).total_seconds() < ORPHAN_GRACE_S:
            continue
        retry_trial(study, t)
        out.append(t.number)
    return out


def _fail_dead(study: Any, trial: Any) -> Any | None:
    """FAIL a dead worker's RUNNING trial with its reason; the failed trial, None on a lost race."""
    # Losing to another process that finished the trial first shows as Optuna's
    # UpdateFinishedTrialError (the storage refuses the write: RDB and journal alike) or as
    # Study.tell's ValueError for a trial it reads finished, which counts only when a fresh read
    # shows it finished. tell(skip_if_finished=True) would hide the race but also whether this
    # process or the other one failed the trial, so both would queue a retry.
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from evoprune.optuna_compat import set_running_trial_user_attr

    try:
        set_running_trial_user_attr(study, trial, "fail_reason", DIED)
        set_running_trial_user_attr(study, trial, "reaped_by",  # read by retry_orphans
                                    {"host": socket.gethostname(), "pid": os.getpid()})
        return study.tell(trial.number, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return None
    except ValueError:
        fresh = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if fresh.state.is_finished():
            return None
        raise


def set_finished_attr(study: Any, trial: Any, key: str, value: Any) -> bool:
    """Set a user_attr on a finished trial (Optuna's API refuses); True where the storage allows.

    SQL storages are written directly; a journal cannot change a finished trial, so callers also
    keep the value in the study's user_attrs (see `retrain.py`).
    """
    from evoprune.optuna_compat import set_finished_trial_user_attr

    return set_finished_trial_user_attr(study, trial, key, value)


def set_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """Write a running trial's user_attrs: in one transaction on SQL storages, else key by key."""
    from evoprune.optuna_compat import set_trial_user_attrs_at_once

    if not set_trial_user_attrs_at_once(trial, attrs):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
