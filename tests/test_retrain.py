"""Top-k retraining: selection, results written back to the trials, resumable, exported models."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution

from evoprune.cli.commands import main
from evoprune.store.schema import RetrainRecord, retrain_key
from evoprune.store.storage import open_storage
from evoprune.training.retraining import retrain_results, select_random, select_top_k

NAME = "resnet20-digits-mCB-1-f0.25"


def fake(number: int, drop: float, params: float, *, uniform: bool = False,
         channels: list[int] | None = None, state: str = "COMPLETE") -> optuna.trial.FrozenTrial:
    """A finished trial with the attrs selection reads."""
    t = optuna.create_trial(
        state=optuna.trial.TrialState[state], values=[drop, params] if state == "COMPLETE" else None,
        params={"g000": number / 10}, distributions={"g000": FloatDistribution(0, 1)},
        user_attrs={"val_drop": drop, "params_ratio": params, "is_uniform": uniform,
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
    legacy = fake(7, 0.05, 0.3)  # a version-2 trial: acc_drop is its (test-split) drop
    legacy.user_attrs = {"acc_drop": 0.05, "params_ratio": 0.3, "channels": [7]}
    assert [t.number for t in select_top_k([*trials, legacy], 2)] == [7, 3]


def test_random_k_draws_unselected_trials_seeded_and_never_the_top_or_uniform():
    """select_random: COMPLETE, non-uniform, not in `exclude`; the same seed, the same draw."""
    trials = [fake(0, 0.5, 0.3, uniform=True), *(fake(n, float(n), 0.3) for n in range(1, 9)),
              fake(9, 0.1, 0.3, state="FAIL")]
    top = select_top_k(trials, 2)
    drawn = select_random(trials, 3, top, seed=0)
    numbers = [t.number for t in drawn]
    assert len(numbers) == 3 and numbers == sorted(numbers)
    assert not set(numbers) & {0, 1, 2, 9}  # uniform, the top 2 and the failed one
    assert [t.number for t in select_random(trials, 3, top, seed=0)] == numbers
    assert {tuple(t.number for t in select_random(trials, 3, top, seed=s)) for s in range(8)} \
        != {tuple(numbers)}  # another seed draws another set (8 tries)
    assert [t.number for t in select_random(trials, 99, top, seed=0)] == list(range(3, 9))
    assert select_random(trials, 0, top, seed=0) == []


def test_retrain_results_read_one_record_per_seed_and_the_legacy_keys():
    """Trial attrs (a list) and the study's retrain:N:SEED copies, by seed; version 2's single
    dict and retrain:N key with acc, acc_drop read as test_acc, test_drop."""
    study = optuna.create_study()
    new = [RetrainRecord(test_drop=1.0 + s, test_acc=0.9, val_drop=0.5, seed=s) for s in (0, 1)]
    study.add_trial(optuna.create_trial(value=0.0, user_attrs={
        "retrain": [r.to_attrs() for r in new]}))
    study.add_trial(optuna.create_trial(value=0.0, user_attrs={
        "retrain": {"acc": 0.8, "acc_drop": 2.5, "mode": "finetune", "epochs": 3}}))
    study.add_trial(optuna.create_trial(value=0.0))
    study.set_user_attr(retrain_key(2, 4), RetrainRecord(test_drop=3.0, seed=4).to_attrs())
    study.set_user_attr("retrain:2", {"acc": 0.7, "acc_drop": 4.0})  # version 2, seed 0
    assert retrain_key(2, 4) == "retrain:2:4"
    results = retrain_results(study)
    assert sorted(results) == [0, 1, 2]
    assert results[0] == new
    assert (results[1][0].test_acc, results[1][0].test_drop, results[1][0].epochs) == (0.8, 2.5, 3)
    assert [(r.seed, r.test_drop) for r in results[2]] == [(0, 4.0), (4, 3.0)]


def search(storage: str, ckpt: str, *extra: str) -> int:
    """A 4-trial search on digits (1 uniform trial) with top-k retraining options."""
    return main(["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--checkpoint", ckpt,
                 "--storage", storage, "--proxy-epochs", "1", "--population", "4",
                 "--n-trials", "4", "--uniform-seeds", "1", "--device", "cpu",
                 "--baselines", "none", *extra])


def test_search_top_k_retrains_winners_and_baseline_and_skips_done_work(tmp_path, base_ckpt,
                                                                        monkeypatch, capsys):
    """--top-k 2 --retrain-seeds 2: 3 trials get `retrain` (one record per seed, val and test
    drops), models saved; a rerun skips; a third seed retrains only it; new settings retrain;
    --random-k retrains the trial no selection chose."""
    from evoprune import load_pruned
    from evoprune.network.cost import params_of

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    assert search(storage, base_ckpt, "--top-k", "2", "--retrain-epochs", "1",
                  "--retrain-seeds", "2") == 0
    study = optuna.load_study(study_name=NAME, storage=storage)
    base_val, base_test = study.user_attrs["base_val_acc"], study.user_attrs["base_test_acc"]
    done = {t.number: t for t in study.get_trials() if "retrain" in t.user_attrs}
    assert len(done) == 3 and 0 in done  # two winners and the uniform baseline
    for t in done.values():
        records = t.user_attrs["retrain"]
        assert [r["seed"] for r in records] == [0, 1]  # paired across networks
        for r in records:
            assert (r["mode"], r["epochs"], r["lr"]) == ("finetune", 1, 0.01)
            assert r["test_drop"] == pytest.approx(100 * (base_test - r["test_acc"]))
            assert r["val_drop"] == pytest.approx(100 * (base_val - r["val_acc"]))
            assert r["test_acc"] * 360 == pytest.approx(round(r["test_acc"] * 360))  # test split
            assert r["val_acc"] * 287 == pytest.approx(round(r["val_acc"] * 287))  # val split
            assert r["seconds"] > 0
            assert study.user_attrs[retrain_key(t.number, r["seed"])] == r
            assert params_of(load_pruned(r["model_path"])) == t.user_attrs["params"]
        assert records[0]["model_path"] != records[1]["model_path"]
    capsys.readouterr()
    retrain = ["retrain", "--storage", storage, "--study-name", NAME, "--device", "cpu", "--json"]
    assert main([*retrain, "--top-k", "2", "--epochs", "1", "--seeds", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["skipped"] for r in rows] == [True] * 6
    assert [(r["number"], r["seed"]) for r in rows] == [(n, s) for n in sorted(done)
                                                        for s in (0, 1)]
    assert [r["is_uniform"] for r in rows] == [True, True] + [False] * 4  # trial 0 first
    assert [r["chosen_as"] for r in rows] == ["uniform"] * 2 + ["top-k"] * 4
    assert main([*retrain, "--top-k", "2", "--epochs", "1", "--seeds", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["seed"], r["skipped"]) for r in rows] == [(0, True), (1, True), (2, False)] * 3
    study = optuna.load_study(study_name=NAME, storage=storage)
    assert all(len(rs) == 3 for rs in retrain_results(study).values())
    assert main([*retrain, "--top-k", "1", "--epochs", "2", "--mode", "rewind", "--no-baseline",
                 "--seeds", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and not rows[0]["skipped"] and rows[0]["mode"] == "rewind"
    assert rows[0]["lr"] == 0.1 and rows[0]["epochs"] == 2 and rows[0]["chosen_as"] == "top-k"
    best = rows[0]["number"]
    study = optuna.load_study(study_name=NAME, storage=storage)
    # new settings replace the trial's results: its seeds never mix two modes
    assert [(r.mode, r.seed) for r in retrain_results(study)[best]] == [("rewind", 0)]
    assert study.user_attrs[retrain_key(best, 1)] is None
    assert main([*retrain, "--top-k", "2", "--epochs", "1", "--seeds", "1", "--no-baseline",
                 "--random-k", "5"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (drawn,) = [r for r in rows if r["chosen_as"] == "random"]  # the one trial left: 3 searched
    assert drawn["number"] not in done and not drawn["skipped"] and not drawn["is_uniform"]
    # finetune seed 0 again: the best trial's rewind result is replaced, the other's was kept
    assert {r["number"]: r["skipped"] for r in rows if r["chosen_as"] == "top-k"} == \
        {n: n != best for n in done if n != 0}
    assert retrain_results(optuna.load_study(study_name=NAME, storage=storage))[best][0].mode \
        == "finetune"


def test_journal_storage_keeps_results_in_the_study(tmp_path, base_ckpt, monkeypatch):
    """A journal cannot change a finished trial: results live in the study's user_attrs."""
    monkeypatch.chdir(tmp_path)
    storage = f"journal:{tmp_path}/s.log"
    assert search(storage, base_ckpt) == 0
    assert main(["retrain", "--storage", storage, "--study-name", NAME, "--top-k", "1",
                 "--epochs", "1", "--seeds", "2", "--device", "cpu"]) == 0
    study = optuna.load_study(study_name=NAME, storage=open_storage(storage))
    results = retrain_results(study)
    assert len(results) == 2 and 0 in results
    assert all([r.seed for r in rs] == [0, 1] for rs in results.values())
    assert all(r.epochs == 1 and 0 <= r.test_acc <= 1 and 0 <= r.val_acc <= 1
               for rs in results.values() for r in rs)
    assert sorted(k for k in study.user_attrs if k.startswith("retrain:")) == sorted(
        retrain_key(n, s) for n in results for s in (0, 1))


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
