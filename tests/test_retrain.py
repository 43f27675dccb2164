"""Top-k retraining: selection, results written back to the trials, resumable, exported models."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution

from evoprune.cli import main
from evoprune.retrain import retrain_results, select_top_k
from evoprune.storage import open_storage

NAME = "resnet20-digits-mCB-1-f0.25"


def fake(number: int, drop: float, params: float, *, uniform: bool = False,
         channels: list[int] | None = None, state: str = "COMPLETE") -> optuna.trial.FrozenTrial:
    """A finished trial with the attrs selection reads."""
    t = optuna.create_trial(
        state=optuna.trial.TrialState[state], values=[drop, params] if state == "COMPLETE" else None,
        params={"g000": number / 10}, distributions={"g000": FloatDistribution(0, 1)},
        user_attrs={"acc_drop": drop, "params_ratio": params, "is_uniform": uniform,
                    "channels": channels or [number]})
    t.number = number
    return t


def test_top_k_ranks_by_drop_then_params_once_per_network():
    """Best drops first, params break ties; uniform, failed and repeated networks left out."""
    trials = [fake(0, 0.5, 0.3, uniform=True), fake(1, 2.0, 0.3), fake(2, 1.0, 0.4),
              fake(3, 1.0, 0.2), fake(4, 1.0, 0.2, channels=[3]), fake(5, 0.1, 0.3, state="FAIL"),
              fake(6, 3.0, 0.1)]
    assert [t.number for t in select_top_k(trials, 3)] == [3, 2, 1]
    assert [t.number for t in select_top_k(trials, 10)] == [3, 2, 1, 6]
    assert select_top_k(trials, 0) == []


def search(storage: str, ckpt: str, *extra: str) -> int:
    """A 4-trial search on digits with top-k retraining options."""
    return main(["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--checkpoint", ckpt,
                 "--storage", storage, "--proxy-epochs", "1", "--population", "4",
                 "--n-trials", "4", "--device", "cpu", *extra])


def test_search_top_k_retrains_winners_and_baseline_and_skips_done_work(tmp_path, base_ckpt,
                                                                        monkeypatch, capsys):
    """--top-k 2: 3 trials get `retrain`, models saved; a rerun skips; new settings retrain."""
    from evoprune import load_pruned
    from evoprune.cost import params_of

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    assert search(storage, base_ckpt, "--top-k", "2", "--retrain-epochs", "1") == 0
    study = optuna.load_study(study_name=NAME, storage=storage)
    base_acc = study.user_attrs["base_acc"]
    done = {t.number: t for t in study.get_trials() if "retrain" in t.user_attrs}
    assert len(done) == 3 and 0 in done  # two winners and the uniform baseline
    for t in done.values():
        r = t.user_attrs["retrain"]
        assert (r["mode"], r["epochs"], r["lr"]) == ("finetune", 1, 0.01)
        assert r["acc_drop"] == pytest.approx(100 * (base_acc - r["acc"]))
        assert r["seconds"] > 0
        assert study.user_attrs[f"retrain:{t.number}"] == r
        assert params_of(load_pruned(r["model_path"])) == t.user_attrs["params"]
    capsys.readouterr()
    assert main(["retrain", "--storage", storage, "--study-name", NAME, "--top-k", "2",
                 "--epochs", "1", "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["skipped"] for r in rows] == [True, True, True]
    assert [r["is_uniform"] for r in rows] == [True, False, False]  # sorted: trial 0 first
    assert main(["retrain", "--storage", storage, "--study-name", NAME, "--top-k", "1",
                 "--epochs", "2", "--mode", "rewind", "--no-baseline", "--device", "cpu",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and not rows[0]["skipped"] and rows[0]["mode"] == "rewind"
    assert rows[0]["lr"] == 0.1 and rows[0]["epochs"] == 2


def test_journal_storage_keeps_results_in_the_study(tmp_path, base_ckpt, monkeypatch):
    """A journal cannot change a finished trial: results live in the study's user_attrs."""
    monkeypatch.chdir(tmp_path)
    storage = f"journal:{tmp_path}/s.log"
    assert search(storage, base_ckpt) == 0
    assert main(["retrain", "--storage", storage, "--study-name", NAME, "--top-k", "1",
                 "--epochs", "1", "--device", "cpu"]) == 0
    study = optuna.load_study(study_name=NAME, storage=open_storage(storage))
    results = retrain_results(study)
    assert len(results) == 2 and 0 in results
    assert all(r.epochs == 1 and 0 <= r.acc <= 1 for r in results.values())


@pytest.mark.parametrize(("argv", "words"), [
    (["--study-name", "nope"], "no study named 'nope'"),
    (["--study-name", NAME, "--epochs", "0"], "--epochs"),
])
def test_retrain_bad_input(tmp_path, base_ckpt, capsys, monkeypatch, argv, words):
    """An unknown study or a bad setting: exit 2, one line."""
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    assert search(storage, base_ckpt) == 0
    capsys.readouterr()
    assert main(["retrain", "--storage", storage, "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_retrain_without_storage_creates_nothing(tmp_path, capsys):
    """A storage that does not exist is refused, not created."""
    db = tmp_path / "none.db"
    assert main(["retrain", "--storage", f"sqlite:///{db}", "--study-name", "x"]) == 2
    assert "no study storage" in capsys.readouterr().err
    assert not db.exists()
