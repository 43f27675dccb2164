"""The Python API: the README's example on a tiny model, killed mid-study and resumed, analysed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import evoprune
from evoprune.cli.commands import main

EXAMPLE = Path(__file__).parent / "api" / "readme_example.py"
NAME = "mynet-f0.25"


def _run(storage: str, report: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EXAMPLE), storage, str(report), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(storage: str) -> list:
    from evoprune.store.storage import find_study

    study = find_study(storage, NAME)
    return [] if study is None else study.get_trials(deepcopy=False)


def _running_number(db: Path) -> int:
    """The highest RUNNING trial number in the SQLite file (-1 if none yet), read directly."""
    import sqlite3

    if not db.is_file():
        return -1
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute("SELECT MAX(number) FROM trials WHERE state = 'RUNNING'").fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return -1
    return -1 if row[0] is None else int(row[0])


@pytest.mark.slow  # CI's 15-minute budget; -m slow runs it
def test_readme_example_resumes_after_a_kill_and_is_analysed(tmp_path):
    """Kill the README's search while trial 2 runs; rerun: exactly n COMPLETE, then analyse."""
    storage, n = f"sqlite:///{tmp_path / 'my.db'}", 6
    proc = _run(storage, tmp_path / "report", n)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if _running_number(tmp_path / "my.db") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(t.state.name == "RUNNING" for t in _trials(storage))
    proc = _run(storage, tmp_path / "report", n)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    trials = _trials(storage)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == n and "RUNNING" not in states
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "died" in failed[0].user_attrs["fail_reason"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete[0].number == 0 and complete[0].user_attrs["is_uniform"]  # uniform_seeds 1
    assert sum(bool(t.user_attrs["is_uniform"]) for t in complete) == 1
    # the heuristics (taylor needs batches): trial 2, killed, is retried with its labels
    assert sorted(t.user_attrs["criterion"] for t in complete
                  if t.user_attrs.get("role") == "baseline") == ["bn_scale", "l2", "lamp"]
    assert failed[0].user_attrs.get("criterion") == "lamp"
    study = optuna.load_study(study_name=NAME, storage=storage)
    assert study.metric_names == ["val_drop"]  # the mCB band fixes params
    base = study.user_attrs["base_val_acc"]
    assert study.user_attrs["schema"] == 3 and study.user_attrs["base_test_acc"] is None
    for t in complete:
        assert abs(t.user_attrs["flops_ratio"] - 0.25) <= 0.002
        assert (abs(t.user_attrs["mcb"] - 1.0) <= 0.1 or t.user_attrs["is_uniform"]
                or t.user_attrs.get("role") == "baseline")  # heuristics: the FLOPs band only
        assert 0 <= t.user_attrs["val_acc"] <= 1
        assert t.values == [pytest.approx(100 * (base - t.user_attrs["val_acc"]))]
    # the pruned network of the best trial is exactly as large as the study says
    params, best = (int(v) for v in out.split("RESULT", 1)[1].split())
    best_trial = next(t for t in trials if t.number == best)
    assert params == best_trial.user_attrs["params"]
    assert (tmp_path / "report" / "report.md").is_file()
    assert main(["analyze", "--storage", storage, "--study-name", NAME,
                 "--out", str(tmp_path / "cli"), "--n-boot", "50"]) == 0
    assert "mCB-1" in (tmp_path / "cli" / "report.md").read_text()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))


def test_search_refuses_other_weights_and_a_bad_evaluate(tmp_path):
    """Resuming with other weights is refused; an accuracy outside [0, 1] is one clear error."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    net, x = _net(), torch.randn(1, 1, 8, 8)
    space = evoprune.PruningSpace(c_flops=0.5)
    with pytest.raises(evoprune.EvopruneError, match=r"accuracy in \[0, 1\]"):
        evoprune.search(net, x, space=space, finetune=lambda m: None, evaluate=lambda m: 7.0,
                        n_trials=2, storage=storage, study_name="s", baselines=())
    with pytest.raises(evoprune.EvopruneError, match="study name is empty"):
        evoprune.search(net, x, space=space, finetune=lambda m: None, evaluate=lambda m: 0.5,
                        n_trials=2, storage=storage, study_name=" ")
    study = evoprune.search(net, x, space=space, finetune=lambda m: None,
                            evaluate=lambda m: 0.5, n_trials=2, storage=storage, study_name="s",
                            baselines=())
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    assert study.user_attrs["checkpoint"]["sha256"] == evoprune.fingerprint(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    with pytest.raises(evoprune.EvopruneError, match="another checkpoint"):
        evoprune.search(net, x, space=space, finetune=lambda m: None, evaluate=lambda m: 0.5,
                        n_trials=3, storage=storage, study_name="s")


def test_search_pairs_trials_by_seed_and_repeats_the_uniform_recipe(tmp_path):
    """finetune(net, seed) gets trial j's seed, the same in every study with that seed; the
    uniform recipe runs uniform_seeds times; objectives follow what the space leaves free."""
    from evoprune.searching.objective import trial_seed

    storage = f"sqlite:///{tmp_path / 's.db'}"
    net, x = _net(), torch.randn(1, 1, 8, 8)
    seen: list[int] = []

    def finetune(m: nn.Module, seed: int) -> None:
        seen.append(seed)

    study = evoprune.search(net, x, c_flops=0.5, finetune=finetune,  # the wide space
                            evaluate=lambda m: 0.5, n_trials=6, uniform_seeds=2, seed=3,
                            storage=storage, study_name="p")
    trials = study.get_trials()
    assert [t.user_attrs["is_uniform"] for t in trials] == [True, True] + [False] * 4
    # the heuristic baselines follow (taylor needs batches), warm-starting the sampler
    assert [t.user_attrs.get("criterion") for t in trials] == [None, None, "l2", "lamp",
                                                               "bn_scale", None]
    assert all(len(t.params) == 2 for t in trials[2:])
    assert seen == [trial_seed(3, n) for n in range(6)] == [t.user_attrs["seed"] for t in trials]
    assert len(set(seen)) == 6 and trials[0].user_attrs["channels"] == trials[1].user_attrs[
        "channels"]
    assert study.metric_names == ["val_drop", "params"]
    assert (study.user_attrs["base_val_acc"], study.user_attrs["split_sizes"]) == (0.5, {})
    assert all(t.user_attrs["val_drop"] == 0.0 for t in trials)
    other = evoprune.search(net, x, space=evoprune.PruningSpace(c_flops=0.5, delta=0.01),
                            finetune=lambda m: None, evaluate=lambda m: 0.5, n_trials=3, seed=3,
                            storage=storage, study_name="q", baselines=())
    assert [t.user_attrs["seed"] for t in other.get_trials()] == seen[:3]  # paired with "p"
    with pytest.raises(evoprune.EvopruneError, match=r"give c_flops .* or space, not both"):
        evoprune.search(net, x, c_flops=0.5, space=evoprune.PruningSpace(c_flops=0.5),
                        finetune=finetune, evaluate=lambda m: 0.5, storage=storage,
                        study_name="r")
    with pytest.raises(evoprune.EvopruneError, match="must exceed uniform_seeds"):
        evoprune.search(net, x, space=evoprune.PruningSpace(c_flops=0.5), finetune=finetune,
                        evaluate=lambda m: 0.5, n_trials=2, uniform_seeds=2, storage=storage,
                        study_name="r")
    with pytest.raises(evoprune.EvopruneError, match="objective params carries no information"):
        evoprune.search(net, x, space=evoprune.PruningSpace(c_flops=0.5, c_params=0.5),
                        finetune=finetune, evaluate=lambda m: 0.5, n_trials=2,
                        objectives=["val_drop", "params"], storage=storage, study_name="r")
    from evoprune.store.storage import find_study

    assert find_study(storage, "r") is None  # refused before anything was written


def test_prune_takes_a_recipe_or_a_trial():
    """A recipe gives its channels; a trial without channels is refused with its number."""
    net, x = _net(), torch.randn(1, 1, 8, 8)
    small = evoprune.prune(net, [0.5, 0.5], x)
    assert small[0].out_channels == 16 and small[3].out_channels == 16
    assert small(x).shape == (1, 3)
    trial = optuna.trial.create_trial(value=1.0, user_attrs={"channels": [8, 4]})
    assert evoprune.prune(net, trial, x)[3].out_channels == 4
    with pytest.raises(evoprune.EvopruneError, match="records no channels"):
        evoprune.prune(net, optuna.trial.create_trial(value=1.0), x)
