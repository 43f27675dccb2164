"""optuna-dashboard serves a two-objective sqlite study: its trials, values and metric names;
a random-sampler study, whose trials have no params (their recipes are drawn, not decoded),
one of them labelled as a heuristic baseline; and a search's genes under their units' names."""
from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import evoprune
from evoprune.searching.config import SamplerConfig

pytest.importorskip("optuna_dashboard")

STUDY = "evoprune-dashboard"
RANDOM = "evoprune-random"
METRICS = ["acc_drop", "params"]
DIST = optuna.distributions.FloatDistribution(0.0, 1.0)
# number -> (params g000/g001, as studies stored before unit names hold them; values
# acc_drop/params); trial 2 is dominated by 0 and 1.
TRIALS: dict[int, tuple[dict[str, float], list[float]]] = {
    0: ({"g000": 0.25, "g001": 0.5}, [0.125, 5000.0]),
    1: ({"g000": 0.75, "g001": 0.0}, [0.375, 2000.0]),
    2: ({"g000": 0.5, "g001": 1.0}, [0.5, 6000.0]),
}
STARTUP_TIMEOUT_S = 30.0


def _dashboard_command() -> list[str]:
    """The optuna-dashboard console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("optuna-dashboard")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("optuna-dashboard")
    if found is None:
        pytest.skip("the optuna-dashboard console script is not on PATH")
    return [found]


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_study(url: str) -> int:
    """Create the two-objective study with metric names and 3 COMPLETE trials; return its id."""
    study = optuna.create_study(
        study_name=STUDY, storage=url, directions=["minimize", "minimize"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRICS)
    for params, values in TRIALS.values():
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={name: DIST for name in params},
                values=values,
                user_attrs={"val_drop": values[0], "params": int(values[1]), "seed": 7},
            )
        )
    return int(study._study_id)


def _make_random_study(url: str) -> int:
    """A random-sampler study: COMPLETE trials with values and user_attrs but no params."""
    study = optuna.create_study(study_name=RANDOM, storage=url, directions=["minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["acc_drop"])
    for n, drop in enumerate((1.5, 0.5)):
        label = {"role": "baseline", "criterion": "l2"} if n == 0 else {}  # a heuristic's trial
        study.add_trial(optuna.trial.create_trial(
            value=drop, user_attrs={"val_drop": drop, "seed": n, "recipe": [0.5, 0.25], **label}))
    return int(study._study_id)


def _get(base: str, route: str) -> bytes:
    """GET base + route and return the body (raises on a non-2xx answer)."""
    with urllib.request.urlopen(base + route, timeout=10) as resp:
        assert resp.status == 200, (route, resp.status)
        return resp.read()


def _get_json(base: str, route: str) -> Any:
    """GET base + route and decode the JSON body."""
    return json.loads(_get(base, route))


def _wait_until_up(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Poll /api/meta until the server answers; fail early if the process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"optuna-dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            _get(base, "/api/meta")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(f"optuna-dashboard did not answer in {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@contextmanager
def _serving(url: str, tmp_path: Path) -> Iterator[str]:
    """optuna-dashboard on `url` at a free local port; yields its base address."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    cmd = [*_dashboard_command(), "--host", "127.0.0.1", "--port", str(port), url]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            _wait_until_up(proc, base, log)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_dashboard_serves_study_trials_and_metric_names(tmp_path: Path) -> None:
    """The dashboard lists the study and returns its 3 trials, Pareto front and metric names."""
    url = f"sqlite:///{tmp_path}/d.db"
    study_id = _make_study(url)
    random_id = _make_random_study(url)
    with _serving(url, tmp_path) as base:
        # Study list: GET /api/studies
        summaries = _get_json(base, "/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == [STUDY, RANDOM]
        assert summaries[0]["study_id"] == study_id
        assert summaries[0]["directions"] == ["minimize", "minimize"]

        # Study detail: GET /api/studies/<study_id>
        detail = _get_json(base, f"/api/studies/{study_id}")
        assert detail["name"] == STUDY
        assert detail["directions"] == ["minimize", "minimize"]
        assert detail["objective_names"] == METRICS
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2]
        for t in trials:
            params, values = TRIALS[t["number"]]
            assert t["state"] == "Complete"
            assert t["values"] == values
            assert {p["name"]: float(p["param_external_value"]) for p in t["params"]} == params
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert attrs == {"val_drop": str(values[0]), "params": str(int(values[1])),
                             "seed": "7"}
        assert sorted(t["number"] for t in detail["best_trials"]) == [0, 1]
        assert detail["union_search_space"] == [
            {"name": "g000", "distribution": {"type": "FloatDistribution", "low": 0.0,
                                              "high": 1.0, "step": None, "log": False}},
            {"name": "g001", "distribution": {"type": "FloatDistribution", "low": 0.0,
                                              "high": 1.0, "step": None, "log": False}},
        ]

        # CSV export: GET /csv/<study_id> uses the metric names as value columns.
        rows = list(csv.reader(io.StringIO(_get(base, f"/csv/{study_id}").decode())))
        assert rows[0][:4] == ["Number", "State", *METRICS]
        assert [[int(r[0]), float(r[2]), float(r[3])] for r in rows[1:]] == [
            [n, *TRIALS[n][1]] for n in (0, 1, 2)
        ]

        # a random-sampler study: trials without params, one objective
        drawn = _get_json(base, f"/api/studies/{random_id}")
        assert drawn["objective_names"] == ["acc_drop"]
        assert [(t["values"], t["params"]) for t in drawn["trials"]] == [([1.5], []),
                                                                          ([0.5], [])]
        assert drawn["union_search_space"] == []
        labels = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in drawn["trials"]]
        assert [(x.get("role"), x.get("criterion")) for x in labels] == [
            ("baseline", "l2"), (None, None)]  # the dashboard lists a heuristic's label
        assert [t["number"] for t in drawn["best_trials"]] == [1]


def test_dashboard_shows_each_gene_under_its_units_name(tmp_path: Path, resnet20) -> None:
    """A search's trials reach the dashboard with genes named by their units, index first
    (`g004 layer2.1.conv1`): the warm start's and the searched trials' params, and the space."""
    url = f"sqlite:///{tmp_path}/g.db"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = evoprune.search(resnet20, torch.zeros(1, 1, 8, 8), c_flops=0.5, baselines=("l2",),
                            finetune=lambda m: None, evaluate=lambda m: 0.5, n_trials=4,
                            sampler=SamplerConfig(population=2), storage=url, study_name="g")
    genes = [f"g{i:03d} layer{1 + i // 3}.{i % 3}.conv1" for i in range(9)]
    assert genes[4] == "g004 layer2.1.conv1"
    with _serving(url, tmp_path) as base:
        detail = _get_json(base, f"/api/studies/{study._study_id}")
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete"] * 4
    assert [[p["name"] for p in t["params"]] for t in trials] == [[]] + [genes] * 3
    stored = {t.number: t.params for t in study.get_trials()}
    for t in trials:
        assert {p["name"]: float(p["param_external_value"]) for p in t["params"]} == \
            stored[t["number"]]
    assert [s["name"] for s in detail["union_search_space"]] == genes
