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
import shutil
import socket
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError, disk_full, exception_chain
from evoprune.store.optuna_compat import (
    set_finished_trial_user_attr,
    set_running_trial_user_attr,
    set_trial_user_attrs_at_once,
)

DEFAULT_STORAGE = "sqlite:///studies/evoprune.db"
HEARTBEAT_S = 30  # RDB heartbeats: a trial silent for GRACE_S is failed and retried
GRACE_S = 120
TAGLESS_GRACE_S = 10  # a RUNNING trial without a worker tag this old was killed at birth
RETRY_INHERITS = ("is_uniform", "role", "criterion", "baseline_kept")  # a retry's labels (only)
DIED = "its worker process died (killed or crashed)"  # the fail_reason of a reaped trial
ORPHAN_GRACE_S = 60  # a reaped trial of another host's reaper this long without its retry
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
DISK_FULL = "disk full"  # how a fail_reason of a trial stopped by a full disk starts
UNIFORM_RUNS = 3  # runs of one uniform seed (first and retries) before resumes stop retrying it


class StorageRecovered(UserWarning):
    """A storage was repaired on opening (a journal's partial last record dropped); one line."""


def check_study_name(name: str | None) -> None:
    """Refuse an empty or blank study name (None means the default name)."""
    if name is not None and not name.strip():
        raise EvopruneError("the study name is empty: give a `study_name`, or leave it "
                            "out for the default name")


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
            raise EvopruneError("SQLite is not safe for several writers: with `n_workers` > 1 use "
                                "`storage` journal:studies/NAME.log or postgresql://…")
        if must_exist and not path.is_file():
            raise EvopruneError(f"no study storage at {path}: pass `storage` URL")
        if not path.resolve().parent.is_dir():
            raise EvopruneError(f"folder {path.resolve().parent} of the storage does not exist: "
                                "create it or choose another `storage`")
    elif kind == "journal":
        path = journal_path(url)
        if must_exist and not path.is_file():
            raise EvopruneError(f"no journal storage at {path}: pass `storage` URL")
        if not path.resolve().parent.is_dir():
            raise EvopruneError(f"folder {path.resolve().parent} of the storage does not exist: "
                                "create it or choose another `storage`")
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
    """Open (creating where needed) the Optuna storage at `url`; call `check_storage` first.

    A SQLite file that is no database is refused as corrupted; a journal whose last record was
    cut off by a crash is backed up and repaired (`recover_journal`, one StorageRecovered line).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind = storage_kind(url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = journal_path(url)
        message = recover_journal(path)
        if message is not None:
            warnings.warn(message, StorageRecovered, stacklevel=2)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    extra: dict[str, Any] = {}
    if heartbeat and kind == "rdb":
        extra = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                 "heartbeat_stale_trial_callback": retry_trial}  # Optuna's retry
    if kind == "sqlite":
        check_sqlite_header(sqlite_path(url))
        extra["engine_kwargs"] = {"connect_args": {"timeout": 30}}  # busy wait while creating
    try:
        with _schema_lock(sqlite_path(url) if kind == "sqlite" else None):
            storage = optuna.storages.RDBStorage(url, **extra)
    except Exception as exc:
        fault = storage_fault(exc, url)
        if fault is not None:
            raise EvopruneError(fault) from None
        raise EvopruneError(f"cannot open storage {url}: {str(exc).splitlines()[0]}") from None
    if kind == "sqlite" and wal:
        _sqlite_wal(storage)
    return storage


@contextmanager
def _schema_lock(path: Path | None) -> Iterator[None]:
    """Hold the storage folder's lock while Optuna creates a SQLite file's schema.

    Two processes opening one new file at once would both create the tables ("table trials
    already exists", or a duplicate alembic version row).
    """
    if path is None:
        yield
        return
    with _folder_lock(path.resolve().parent):
        yield


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialise creating a study between processes of this machine (SQLite and journal files).

    Two searches started at once on a new study would both write its record and both queue the
    uniform trials; under this lock the second finds the study created and resumes it. An RDB
    storage serves many machines: there the lock is a no-op.
    """
    kind = storage_kind(url)
    if kind == "rdb":
        yield
        return
    path = sqlite_path(url) if kind == "sqlite" else journal_path(url)
    with _folder_lock(path.resolve().parent):
        yield


_HELD: dict[str, int] = {}  # folders this process holds the lock of, with their depth


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` (no file is left behind), reentrant within a process.

    Where flock is unavailable (not POSIX, some network file systems) it goes on unlocked.
    """
    key = str(folder)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        import fcntl

        fd = os.open(key, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    _HELD[key] = 1
    try:
        with suppress(OSError):  # no flock on this file system: unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock


def check_sqlite_header(path: Path) -> None:
    """Refuse a SQLite storage file whose header is not SQLite's (overwritten or another file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return  # a new storage: Optuna creates it
    if head and head != SQLITE_HEADER:
        raise EvopruneError(f"storage {path} is corrupted: it is not an SQLite database (its "
                            "first bytes are overwritten); restore it from a backup or copy, or "
                            "pass another `storage`")


def recover_journal(path: Path) -> str | None:
    """Repair a journal whose last record a crash cut off; the one line saying what was done.

    Optuna appends whole records, each ending in a newline, under its lock file; bytes after
    the last newline are a record cut off mid-write (Optuna skips them, but the next append
    would glue a new record to them and break every later read). Under the same lock, the
    file is copied to PATH.TIME.bak, then the partial record is dropped; a tail that is a whole
    record (cut just before its newline) gets the newline instead. None where nothing was cut.
    """
    if _journal_tail(path) == b"":
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))  # JournalFileBackend's default lock
    lock.acquire()
    try:
        tail = _journal_tail(path)
        if tail == b"":  # another process repaired it meanwhile
            return None
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        try:
            shutil.copy2(path, backup)
        except OSError as exc:
            backup.unlink(missing_ok=True)
            raise EvopruneError(f"journal {path} ends in a partial record (a crash mid-write) "
                                f"and cannot be backed up before its repair ({exc.strerror}): "
                                "free space on its disk and rerun") from None
        whole = _is_record(tail)
        with open(path, "r+b") as fh:
            if whole:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
            else:
                fh.truncate(os.path.getsize(path) - len(tail))
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        lock.release()
    if whole:
        return (f"journal {path} ended without its last newline (a crash or a full disk "
                f"mid-write): backed up to {backup.name}, newline added; nothing was lost")
    return (f"journal {path} ended in a partial record (a crash or a full disk mid-write): "
            f"backed up to {backup.name}, dropped its last {len(tail)} bytes (that record was "
            "never complete)")


def _journal_tail(path: Path, block: int = 1 << 16) -> bytes:
    """The bytes after the journal's last newline (b"" where it ends in one or is absent)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return b""
    tail = b""
    with open(path, "rb") as fh:
        while size > 0:
            start = max(0, size - block)
            fh.seek(start)
            chunk = fh.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return chunk[cut + 1:] + tail
            tail, size = chunk + tail, start
    return tail


def _is_record(data: bytes) -> bool:
    """Whether `data` is one whole journal record (a JSON object)."""
    import json

    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def corrupted(exc: BaseException) -> str | None:
    """The SQLite corruption error in `exc`'s chain (malformed, not a database) as text, or None."""
    codes = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    for e in exception_chain(exc):
        if isinstance(e, sqlite3.DatabaseError) and (
                getattr(e, "sqlite_errorcode", None) in codes
                or "malformed" in str(e) or "not a database" in str(e)):
            return str(e)
    return None


def storage_fault(exc: BaseException, url: str | None = None) -> str | None:
    """One line naming a full disk or a corrupted SQLite storage behind `exc`, and what to do."""
    where = f" {url}" if url else ""
    full = disk_full(exc)
    if full is not None:
        return (f"disk full ({full}): free space where the storage{where} and the checkpoints "
                "are written, then rerun the same command to resume")
    bad = corrupted(exc)
    if bad is not None:
        return (f"storage{where} is corrupted ({bad}): restore it from a backup or copy, or pass "
                "another `storage`")
    return None


def reclaim_wal(url: str) -> None:
    """Give back a SQLite storage's write-ahead log space (a TRUNCATE checkpoint); best effort.

    On a full disk the WAL, grown by earlier trials, is the space a write can get back: its
    pages are copied into the database (which mostly has them already) and the file is cut to
    nothing, so the small writes that FAIL a trial fit again.
    """
    if storage_kind(url) != "sqlite":
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"timeout": 5})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
    except Exception:  # nothing to give back, or the storage busy: the trial is reaped later
        pass


def fail_own_trials(study: Any, reason: str) -> list[int]:
    """FAIL this process's RUNNING trials with `reason` (or give a FAIL one its missing reason).

    Used when the process stops on a fault its trial met (a full disk): where the storage still
    takes the write, the trial is FAIL with its `fail_reason`; where it does not, the trial stays
    RUNNING and the resume's `reap_dead_trials` fails and retries it. Returns the trials marked.
    """
    from optuna.trial import TrialState

    me = worker_tag()
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        tag = trial.user_attrs.get("worker")
        if not isinstance(tag, dict) or (tag.get("host"), tag.get("pid")) != \
                (me["host"], me["pid"]):
            continue
        try:
            if trial.state == TrialState.RUNNING:

                set_running_trial_user_attr(study, trial, "fail_reason", reason)
                study.tell(trial.number, state=TrialState.FAIL)
            elif "fail_reason" not in trial.user_attrs:
                if not set_finished_attr(study, trial, "fail_reason", reason):
                    continue
            else:
                continue
        except Exception:  # the storage takes no write either: the resume reaps the trial
            continue
        marked.append(trial.number)
    return marked


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


def copy_study(url: str, name: str, to_url: str, to_name: str) -> Any:
    """Copy study `name` (its trials, user and system attributes) to `to_url` as `to_name`.

    The source is only read; returns the copy. An existing `to_name` is refused by Optuna.
    """
    import optuna

    check_storage(to_url)
    optuna.copy_study(from_study_name=name, from_storage=open_storage(url, wal=False),
                      to_storage=open_storage(to_url), to_study_name=to_name)
    return load_study(to_url, to_name)


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


def retry_uniform(study: Any, uniform_seeds: int) -> list[int]:
    """Queue the uniform baseline again where a resume finds a seed of it failed or missing.

    Each uniform seed is a chain: its first trial and the retries of it (`retried_from`). A
    chain none of whose trials is COMPLETE, RUNNING or WAITING and whose last one FAILed (a
    full disk, say: a trial the reaper never saw) is retried like a dead worker's trial, with
    its original seed, up to UNIFORM_RUNS runs; chains fewer than `uniform_seeds` are queued
    anew. Called when a search resumes (one process). Returns the trials retried (their
    numbers), -1 for each new one queued.
    """
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    uniform = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("is_uniform")]
    chains: dict[int, list[Any]] = {}
    for t in sorted(uniform, key=lambda t: t.number):
        origin = retried_from(t)
        chains.setdefault(t.number if origin is None else origin, []).append(t)
    out = []
    for chain in chains.values():
        last = chain[-1]
        if any(t.state in live for t in chain) or last.state != TrialState.FAIL \
                or len(chain) >= UNIFORM_RUNS:
            continue
        retry_trial(study, last)
        out.append(last.number)
    params = uniform[0].params if uniform else {}
    for _ in range(uniform_seeds - len(chains)):
        study.enqueue_trial(dict(params), user_attrs={"is_uniform": True})
        out.append(-1)
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
    keep the value in the study's user_attrs (see `training/retraining.py`).
    """

    return set_finished_trial_user_attr(study, trial, key, value)


def set_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """Write a running trial's user_attrs: in one transaction on SQL storages, else key by key."""

    if not set_trial_user_attrs_at_once(trial, attrs):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
