"""Two workers on one PostgreSQL server (started here on loopback), then a dashboard read.

Needs PostgreSQL's server binaries (Debian: `apt-get install -y postgresql`) and psycopg2;
skipped without them.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import duplicates, load, run_with_fault, search_argv

pytestmark = pytest.mark.postgres


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth); its URL; stopped afterwards."""
    pytest.importorskip("psycopg2")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install -y postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="evoprune-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as postgres
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as postgres")
        try:
            shutil.chown(folder, "postgres", "postgres")
        except (LookupError, PermissionError):
            pytest.skip("running as root and there is no postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    start = subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
                            "start"], capture_output=True, text=True)
    if start.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {start.stderr}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_postgresql_then_the_dashboard_reads_the_study(postgres_url, base_ckpt,
                                                                      figures):
    """--n-workers 2 against PostgreSQL: exactly n COMPLETE from both workers, no duplicate;
    optuna-dashboard on the same URL lists the study and serves its n COMPLETE trials."""
    n = 6
    run = run_with_fault("time", 10**9, search_argv(postgres_url, base_ckpt, n,
                                                     "--n-workers", "2"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    study = load(postgres_url)
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    figures["postgres_runs"] += 1
    figures["postgres_trials"] += len(done)
    figures["duplicates"] += duplicates(study)
    assert len(done) == n
    assert len({t.user_attrs["worker"]["pid"] for t in done}) == 2
    assert duplicates(study) == 0
    assert study.user_attrs["created"] is True
    assert sum(bool(t.user_attrs["is_uniform"]) for t in done) == 3  # the default uniform_seeds

    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    command = str(dashboard) if dashboard.is_file() else shutil.which("optuna-dashboard")
    if command is None:
        pytest.skip("optuna-dashboard is not installed")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([command, "--host", "127.0.0.1", "--port", str(port), postgres_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/api/studies", timeout=5) as resp:
                    summaries = json.loads(resp.read())["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("optuna-dashboard did not answer on PostgreSQL")
                time.sleep(0.2)
        assert [s["study_name"] for s in summaries] == ["resnet20-digits-mCB-1-f0.25"]
        with urllib.request.urlopen(f"{base}/api/studies/{summaries[0]['study_id']}",
                                    timeout=10) as resp:
            detail = json.loads(resp.read())
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(complete) == n
        assert detail["objective_names"] == ["val_drop"]  # the mCB band fixes params
        figures["postgres_dashboard"] += 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
