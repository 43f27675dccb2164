"""Storage faults: a full disk, a corrupted SQLite file, a journal cut mid-write, two processes
creating one SQLite file, a read-only --out, an empty study name. Each ends in one line (exit 2
where the user can fix it) and nothing is lost."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import optuna
import pytest
from helpers import complete, load, run_with_fault, search_argv

from evoprune.cli.commands import main
from evoprune.errors import EvopruneError
from evoprune.store.storage import (
    UNIFORM_RUNS,
    StorageRecovered,
    disk_full,
    open_storage,
    recover_journal,
    retry_uniform,
)

STUDY = "resnet20-digits-mCB-1-f0.25"


def _one_line(err: str) -> str:
    """The single line of a command's stderr (asserting there is one and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _error_line(err: str) -> str:
    """The one error line of a search's stderr: its last line, no traceback (the lines before
    it are the search's progress)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and [x for x in lines if "error" in x] == lines[-1:], err[-3000:]
    return lines[-1]


def _optuna_storage(path: Path, trials: int = 200) -> Path:
    """A SQLite storage (WAL, as evoprune keeps it): study `s` with `trials` COMPLETE trials."""
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(trials):
        trial = study.ask()
        trial.set_user_attr("recipe", [0.5] * 30)
        study.tell(trial, float(i))
    storage.engine.dispose()
    return path


# ------------------------------------------------------------------------------ (a) disk full
@pytest.mark.slow  # a real search, killed and resumed (minutes on 2 cores)
def test_disk_full_fails_the_trial_stops_in_one_line_and_the_resume_reruns_the_uniform(
        tmp_path, base_ckpt, figures):
    """SQLITE_FULL from the 24th write on (the first of uniform trial 0's record, after its
    worker tag): exit 2, one line naming the full disk; trial 0 is FAIL with fail_reason
    "disk full: …". The resume, the disk free again, runs the uniform baseline again with trial
    0's seed (Optuna's retry chain) and ends with n COMPLETE, the uniform one among them."""
    storage = f"sqlite:///{tmp_path}/s.db"
    argv = search_argv(storage, base_ckpt, 2, "--uniform-seeds", "1")
    run = run_with_fault("full", 24, argv)
    line = _error_line(run.stderr)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "disk full" in line and "rerun the same command to resume" in line
    assert "trial 0 is FAIL" in line
    trials = load(storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs["fail_reason"] == "disk full: database or disk is full"
    assert trials[0].user_attrs["is_uniform"] is True
    resumed = run_with_fault("time", 10**9, argv)  # no fault: the disk has space again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = load(storage).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    uniform = [t for t in done if t.user_attrs.get("is_uniform")]
    figures["disk_full_runs"] += 1
    figures["disk_full_uniform_rerun"] += len(uniform) == 1
    assert len(done) == 2 and len(uniform) == 1
    assert uniform[0].system_attrs["failed_trial"] == 0  # the retry of trial 0, with its seed
    from evoprune.searching.objective import trial_seed

    assert uniform[0].user_attrs["seed"] == trial_seed(0, 0)


def test_disk_full_is_found_through_chained_errors():
    """The full disk is found behind the wrappers that carry it (Optuna, SQLAlchemy, torch)."""
    import sqlite3

    full = sqlite3.OperationalError("database or disk is full")
    try:
        try:
            raise full
        except sqlite3.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("commit failed") from exc
    except optuna.exceptions.StorageInternalError as wrapped:
        try:
            raise AssertionError("Should not reach.")  # Optuna's own, after the failed tell
        except AssertionError as last:
            assert last.__context__ is wrapped
            assert disk_full(last) == "database or disk is full"
    assert disk_full(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device"
    assert disk_full(RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos "
                                  "1024 vs 512: No space left on device")) is not None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save meeting ENOSPC: one-line EvopruneError, the previous file whole, no temp."""
    import torch

    from evoprune.core.checkpoint import atomic_save, sha256_of

    path = tmp_path / "c.pt"
    old = atomic_save({"w": torch.ones(3)}, path)

    def full(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(EvopruneError, match=r"disk full writing .*c\.pt .*free space"):
        atomic_save({"w": torch.zeros(3)}, path)
    assert sha256_of(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def _storage_with_trials(tmp_path: Path, uniform_states: list[str]) -> optuna.Study:
    """A study whose first trials are uniform ones in `uniform_states`, then one searched."""
    from optuna.trial import TrialState

    study = optuna.create_study(study_name="u", storage=open_storage(f"sqlite:///{tmp_path}/u.db"))
    for state in uniform_states:
        study.enqueue_trial({}, user_attrs={"is_uniform": True})
        trial = study.ask()
        if state != "RUNNING":
            study.tell(trial, 1.0 if state == "COMPLETE" else None, state=TrialState[state])
    study.tell(study.ask(), 2.0)
    return study


def test_a_resume_retries_a_failed_uniform_seed_and_queues_a_missing_one(tmp_path):
    """Uniform seeds COMPLETE, FAIL (no retry yet), RUNNING; 4 asked: the FAIL one is retried
    (its chain), one is queued anew; a second call queues nothing more."""
    study = _storage_with_trials(tmp_path, ["COMPLETE", "FAIL", "RUNNING"])
    assert retry_uniform(study, 4) == [1, -1]
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert [t.user_attrs.get("is_uniform") for t in waiting] == [True, True]
    assert waiting[0].system_attrs["failed_trial"] == 1
    assert "failed_trial" not in waiting[1].system_attrs
    assert retry_uniform(study, 4) == []


def test_a_uniform_seed_that_keeps_failing_is_retried_at_most_uniform_runs_times(tmp_path):
    """A seed whose every run FAILs is given UNIFORM_RUNS runs in all, then left alone."""
    from optuna.trial import TrialState

    study = _storage_with_trials(tmp_path, ["FAIL"])
    runs = 1
    while retry_uniform(study, 1):
        trial = study.ask()  # the queued retry runs, and fails again
        study.tell(trial, state=TrialState.FAIL)
        runs += 1
    assert runs == UNIFORM_RUNS
    states = [t.state.name for t in study.get_trials() if t.user_attrs.get("is_uniform")]
    assert states == ["FAIL"] * UNIFORM_RUNS


# -------------------------------------------------------------------- (b) corrupted SQLite
@pytest.mark.parametrize("offset", [0, 16384], ids=["first-8KB", "pages-after-16KB"])
def test_a_corrupted_sqlite_file_is_named_with_the_advice_to_restore_it(tmp_path, capsys,
                                                                        figures, offset):
    """8 KB overwritten at the file's start (its header) or further in (its pages): search,
    retrain and analyze each end in one line saying the storage is corrupted and to restore
    it, exit 2, the file's bytes unchanged."""
    db = _optuna_storage(tmp_path / "s.db")
    with open(db, "r+b") as fh:
        fh.seek(offset)
        fh.write(os.urandom(8192) if offset == 0 else b"\xa5" * 8192)
    before = db.read_bytes()
    url = f"sqlite:///{db}"
    commands = [["retrain", "--storage", url, "--study-name", "s"],
                ["analyze", "--storage", url, "--all", "--out", str(tmp_path / "an")]]
    if offset == 0:  # the search opens the storage before its base is built
        commands.append(["search", "--c-flops", "0.25", "--storage", url, "--device", "cpu",
                         "--baselines", "none"])
    for argv in commands:
        code = main(argv)
        line = _one_line(capsys.readouterr().err)
        figures["bad_inputs"] += 1
        figures["rejected"] += code == 2 and "corrupted" in line
        assert code == 2, line
        assert "is corrupted" in line and "restore it from a backup" in line, line
        assert str(db) in line
        assert db.read_bytes() == before
        assert not (tmp_path / "an").exists()


# ------------------------------------------------------------------ (c) journal cut mid-write
@pytest.mark.slow  # a real search, killed and resumed (minutes on 2 cores)
def test_a_journal_cut_mid_record_is_backed_up_repaired_and_resumes(tmp_path, base_ckpt,
                                                                    figures):
    """A 2-trial journal study whose last record (trial 1's COMPLETE) lost its last 40 bytes,
    as a crash mid-write leaves it: the resume says so in one line, backs the file up, drops
    the partial record, fails and retries trial 1 (its completion never reached the file) and
    ends with 3 COMPLETE; trial 0 is unchanged; nothing is left to repair. (Before,
    the first resume glued its first record to the partial one and died in JSONDecodeError.)"""
    log = tmp_path / "s.log"
    storage = f"journal:{log}"
    argv = search_argv(storage, base_ckpt, 2, "--uniform-seeds", "1")
    more = search_argv(storage, base_ckpt, 3, "--uniform-seeds", "1")
    first = run_with_fault("time", 10**9, argv)
    assert first.returncode == 0, first.stderr[-3000:]
    before = complete(load(storage))
    os.truncate(log, log.stat().st_size - 40)
    cut = log.read_bytes()
    last = cut.rsplit(b"\n", 1)[1]
    resumed = run_with_fault("time", 10**9, more)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    notes = [line for line in resumed.stderr.splitlines() if "journal" in line]
    assert len(notes) == 1 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert "partial record" in notes[0] and "backed up" in notes[0]
    assert f"dropped its last {len(last)} bytes" in notes[0]
    backups = list(tmp_path.glob("s.log.*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == cut
    study = load(storage)
    now = complete(study)
    assert len(now) == 3 and now[0] == before[0]
    assert study.trials[1].state.name == "FAIL"  # its COMPLETE record was the one cut
    assert "died" in study.trials[1].user_attrs["fail_reason"]
    figures["journal_repairs"] += 1
    assert recover_journal(log) is None  # whole: later resumes open it as any other journal
    assert len(list(tmp_path.glob("s.log.*.bak"))) == 1


def test_a_journal_record_cut_just_before_its_newline_is_kept(tmp_path):
    """A whole last record missing only its newline gets the newline: nothing is dropped."""
    log = tmp_path / "j.log"
    log.write_bytes(b'{"op_code":0,"a":1}\n{"op_code":1,"b":2}')
    message = recover_journal(log)
    assert message is not None and "newline added" in message
    assert log.read_bytes() == b'{"op_code":0,"a":1}\n{"op_code":1,"b":2}\n'
    assert recover_journal(log) is None  # whole now


def test_a_journal_that_cannot_be_backed_up_is_left_as_it_is(tmp_path, monkeypatch):
    """No space for the backup: one-line EvopruneError, the journal untouched."""
    log = tmp_path / "j.log"
    data = b'{"op_code":0,"a":1}\n{"op_code":1,"b"'
    log.write_bytes(data)

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(EvopruneError, match=r"cannot be backed up.*No space left on device"):
        recover_journal(log)
    assert log.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.log"]


def test_opening_a_cut_journal_warns_once(tmp_path):
    """open_storage repairs and says so with one StorageRecovered warning."""
    log = tmp_path / "j.log"
    storage = open_storage(f"journal:{log}")
    optuna.create_study(study_name="x", storage=storage)
    with open(log, "ab") as fh:
        fh.write(b'{"op_code":4,"worker_id":"w","study_id":0')
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        optuna.load_study(study_name="x", storage=open_storage(f"journal:{log}"))
        optuna.load_study(study_name="x", storage=open_storage(f"journal:{log}"))
    assert len([w for w in seen if issubclass(w.category, StorageRecovered)]) == 1


# ------------------------------------------------------------- (d) a new SQLite file, raced
def _open_at_once(url: str, barrier: object, out: object) -> None:
    """Wait for the others, open the storage, report ok or the error's first line."""
    barrier.wait()
    try:
        open_storage(url).engine.dispose()
        out.put("ok")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_processes_opening_one_new_sqlite_file_at_once_all_succeed(tmp_path, figures):
    """4 processes released together on a new SQLite file, 3 times: all open it (before, most
    rounds ended in "table … already exists" or a duplicate alembic version row); the schema
    holds one version row."""
    import sqlite3

    ctx = multiprocessing.get_context("fork")
    results = []
    for round_ in range(3):
        db = tmp_path / f"r{round_}.db"
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(f"sqlite:///{db}", barrier, out))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        results += [out.get(timeout=5) for _ in procs]
        with contextlib.closing(sqlite3.connect(db)) as con:
            assert con.execute("SELECT COUNT(*) FROM alembic_version").fetchone() == (1,)
            assert con.execute("SELECT COUNT(*) FROM version_info").fetchone() == (1,)
    assert results == ["ok"] * 12, results
    figures["schema_races"] += 3


def _create_under_lock(url: str, barrier: object, out: object) -> None:
    """Wait for the other, then open the storage and create a study under creation_lock,
    holding it 0.5 s; report when the lock was held (monotonic clock)."""
    import time

    from evoprune.store.storage import creation_lock

    barrier.wait()
    with creation_lock(url):
        start = time.monotonic()
        optuna.create_study(study_name="c", storage=open_storage(url), load_if_exists=True)
        time.sleep(0.5)
        out.put((start, time.monotonic()))


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_creating_a_study_is_serialised_between_processes(tmp_path, kind):
    """Two processes creating one study at once hold creation_lock one after the other (a
    search started at the same moment as another finds the study created, and resumes it),
    and opening the storage inside it does not deadlock on the schema lock."""
    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else f"journal:{tmp_path}/c.log"
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_create_under_lock, args=(url, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    first, second = sorted(out.get(timeout=5) for _ in procs)
    assert first[1] <= second[0]  # the second took the lock only once the first let it go
    assert [p.exitcode for p in procs] == [0, 0]


# ----------------------------------------------------------------- (e) read-only --out folder
@pytest.fixture
def read_only(tmp_path):
    """A folder no one can write to: chmod 555, and for root (whom chmod does not stop) the
    immutable attribute; skipped where neither holds."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            immutable = subprocess.run(["chattr", "+i", str(folder)],
                                       capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a read-only folder here (root, no chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["train", "prune"])
def test_out_into_a_read_only_folder_is_refused_before_any_work(read_only, base_ckpt, capsys,
                                                                figures, command):
    """train/prune --out into a read-only folder: exit 2 and one line before any work (no
    epoch printed, nothing written), instead of an OSError after the work."""
    out = str(read_only / "x.pt")
    argv = (["train", "--epochs", "1", "--device", "cpu", "--out", out] if command == "train"
            else ["prune", "--checkpoint", str(base_ckpt), "--recipe", "uniform:0.5",
                  "--out", out])
    code = main(argv)
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    figures["bad_inputs"] += 1
    figures["rejected"] += code == 2
    assert code == 2, line
    assert "not writable" in line and "--out" in line and str(read_only) in line
    assert captured.out == ""
    assert list(read_only.iterdir()) == []


def test_onnx_into_a_read_only_folder_is_refused_too(read_only, base_ckpt, capsys):
    """prune --onnx is an output path as well."""
    code = main(["prune", "--checkpoint", str(base_ckpt), "--recipe", "uniform:0.5",
                 "--onnx", str(read_only / "x.onnx")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "--onnx" in line and "not writable" in line


# ------------------------------------------------------------------------ (f) empty names
@pytest.mark.parametrize("argv", [
    ["search", "--c-flops", "0.25", "--study-name", ""],
    ["search", "--c-flops", "0.25", "--study-name", "  "],
    ["retrain", "--study-name", ""],
    ["analyze", "--study-name", "", "--out", "an"],
], ids=["search", "search-blank", "retrain", "analyze"])
def test_an_empty_study_name_is_refused(tmp_path, capsys, figures, argv, monkeypatch):
    """An empty --study-name no longer falls back to the default name: exit 2, one line."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    line = _one_line(capsys.readouterr().err)
    figures["bad_inputs"] += 1
    figures["rejected"] += exit_.value.code == 2
    assert exit_.value.code == 2
    assert "study name is empty" in line and "--study-name" in line
    assert list(tmp_path.iterdir()) == []


def test_an_empty_study_name_is_refused_by_the_library():
    """SearchConfig(study_name="") reaches prepare: refused before anything is built."""
    from evoprune.searching import SearchConfig
    from evoprune.searching.run import prepare
    from evoprune.spaces import PruningSpace

    with pytest.raises(EvopruneError, match="study name is empty"):
        prepare(SearchConfig(space=PruningSpace(c_flops=0.25), study_name=""))
