"""Successive-halving rungs in the proxy: promotion, PRUNED trials with their rung accuracies,
the last rung's value, resume, the flags and old studies' identity."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

import evoprune.searching.objective
from evoprune.errors import EvopruneError
from evoprune.searching.objective import Objective, ProxyConfig, TrialContext, trial_seed
from evoprune.spaces import Decoder, PruningSpace

# scripted validation accuracies of trial n at rungs 0, 1, 2 epochs (the first 4 always promoted)
ACC = {0: (0.50, 0.60, 0.70), 1: (0.52, 0.62, 0.72), 2: (0.54, 0.64, 0.74),
       3: (0.56, 0.66, 0.76),
       4: (0.10, 0.90, 0.95),  # worst at rung 0: PRUNED there
       5: (0.58, 0.20, 0.95),  # best at rung 0, worst at rung 1: PRUNED at rung 1
       6: (0.59, 0.69, 0.80),  # best at both: COMPLETE with rung 2's accuracy
       7: (0.05, 0.05, 0.05)}  # resumed study: still judged against the stored trials


@pytest.fixture
def scripted(resnet20, resnet20_units, resnet20_cost, monkeypatch):
    """An Objective whose rung accuracies come from ACC by the trial's seed (no training)."""
    by_seed = {trial_seed(0, n): n for n in ACC}
    current = {"seed": -1}
    calls: list[tuple[int, int]] = []

    def fake_bn(model, data, seed=0, **_kw):
        current["seed"] = seed
        calls.append((by_seed[seed], 0))
        return model

    def finetune_epochs(model, seed, epochs):
        calls.append((by_seed[seed], epochs))
        return SimpleNamespace(val_acc=ACC[by_seed[seed]][epochs])

    monkeypatch.setattr(evoprune.searching.objective, "adaptive_bn", fake_bn)  # where trials call it
    decoder = Decoder(PruningSpace(c_flops=0.5), resnet20_cost)
    ctx = TrialContext(resnet20, resnet20_units, decoder, resnet20.conv1.weight.device,
                       finetune=lambda m, s: pytest.fail("rungs fine-tune by epochs"),
                       evaluate=lambda m: ACC[by_seed[current["seed"]]][0], data=object(),
                       finetune_epochs=finetune_epochs)

    def make() -> Objective:
        return Objective(ctx, base_acc=0.9, proxy=ProxyConfig(rungs=(0, 1, 2), rung_keep=0.5),
                         objectives=("val_drop",), draw=True)
    return make, calls


def test_rungs_prune_below_the_keep_fraction_and_complete_with_the_last_rung(scripted, tmp_path):
    make, calls = scripted
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(storage=storage, study_name="r")
    study.optimize(make(), n_trials=7)
    t = {x.number: x for x in study.get_trials()}
    assert [t[n].state for n in range(4)] == [TrialState.COMPLETE] * 4
    assert t[4].state == TrialState.PRUNED and t[4].user_attrs["rung_acc"] == [0.10]
    assert t[4].user_attrs["rung_out"] == 0 and "val_drop" not in t[4].user_attrs
    assert t[5].state == TrialState.PRUNED and t[5].user_attrs["rung_acc"] == [0.58, 0.20]
    assert t[5].user_attrs["rung_out"] == 1
    assert t[6].state == TrialState.COMPLETE and t[6].user_attrs["rung_acc"] == [0.59, 0.69, 0.80]
    assert t[6].values[0] == pytest.approx(100 * (0.9 - 0.80))  # the last rung's val drop
    assert t[6].user_attrs["val_acc"] == 0.80 and "rung_out" not in t[6].user_attrs
    assert [c for c in calls if c[0] in (4, 5, 6)] == [(4, 0), (5, 0), (5, 1), (6, 0), (6, 1),
                                                      (6, 2)]  # pruned trials train no further
    # resumed in a new process: trial 7 is judged against the stored trials' rung accuracies
    again = optuna.load_study(study_name="r", storage=storage)
    again.optimize(make(), n_trials=1)
    last = again.get_trials()[-1]
    assert last.number == 7 and last.state == TrialState.PRUNED
    assert last.user_attrs["rung_acc"] == [0.05] and last.user_attrs["rung_out"] == 0


def test_rung_settings_are_checked_and_the_last_rung_is_the_proxy_epochs():
    p = ProxyConfig(rungs=(0, 1, 4), rung_keep=1 / 3)
    assert p.epochs == 4 and p.to_dict()["rungs"] == (0, 1, 4)
    assert ProxyConfig().rungs == () and ProxyConfig().epochs == 2  # the default is unchanged
    for bad, match in (({"rungs": (1, 0)}, "must increase"), ({"rungs": (0,)}, "must increase"),
                       ({"rungs": (0, 2), "screen": "adaptive-bn"}, "`screen` is rung 0"),
                       ({"rungs": (0, 2), "rung_keep": 1.0}, "`rung_keep`")):
        with pytest.raises(EvopruneError, match=match):
            ProxyConfig(**bad)


def test_an_own_finetune_cannot_run_rungs(resnet20, resnet20_units, resnet20_cost):
    ctx = TrialContext(resnet20, resnet20_units, Decoder(PruningSpace(c_flops=0.5), resnet20_cost),
                       resnet20.conv1.weight.device, finetune=lambda m, s: None,
                       evaluate=lambda m: 0.5)
    with pytest.raises(EvopruneError, match="`rungs` need the built-in"):
        Objective(ctx, base_acc=0.9, proxy=ProxyConfig(rungs=(1, 2)), objectives=("val_drop",))


def test_studies_stored_before_rungs_keep_their_identity_and_rungs_change_it():
    """An old tree (no rungs keys) resumes under the new defaults; other rungs are refused."""
    from evoprune.core.config import diff
    from evoprune.searching import SearchConfig
    from evoprune.store.schema import identity_of

    now = SearchConfig(space=PruningSpace(c_flops=0.25)).stored_tree()
    assert now["proxy"]["rungs"] == [] and now["proxy"]["rung_keep"] == 0.5
    old = {**now, "proxy": {k: v for k, v in now["proxy"].items()
                            if k not in ("rungs", "rung_keep")}}
    assert diff(identity_of(old), identity_of(now)) == []
    rungs = SearchConfig(space=PruningSpace(c_flops=0.25),
                         proxy=ProxyConfig(rungs=(0, 1, 4))).stored_tree()
    assert any(c.startswith("proxy.rungs") for c in diff(identity_of(old), identity_of(rungs)))
    assert any(c.startswith("proxy.rungs") for c in diff(identity_of(rungs), identity_of(now)))


def test_search_flags_reach_the_proxy():
    from evoprune.cli.commands import build_parser

    args = build_parser().parse_args(["search", "--c-flops", "0.25", "--rungs", "0,1,4",
                                      "--rung-keep", "0.33"])
    assert getattr(args, "proxy.rungs") == (0, 1, 4) and getattr(args, "proxy.rung_keep") == 0.33
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--rungs", "0,x"])


def _search(storage: str, ckpt: str, *extra: str) -> list[str]:
    return ["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--checkpoint", ckpt,
            "--storage", storage, "--population", "4", "--device", "cpu", "--baselines", "none",
            "--sampler", "random", "--uniform-seeds", "1", *extra]


@pytest.mark.slow  # digits searches end to end: about 25 s on 2 cores
def test_a_rung_search_counts_complete_trials_and_resumes(tmp_path, base_ckpt, capsys):
    """`--rungs 0,1` end to end on digits: n COMPLETE with both rungs' accuracies, the PRUNED
    with theirs; the study resumes with the same rungs and refuses others."""
    from evoprune.cli.commands import main
    from evoprune.store.storage import open_storage

    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert main(_search(storage, base_ckpt, "--n-trials", "7", "--rungs", "0,1",
                        "--rung-keep", "0.3")) == 0
    study = optuna.load_study(study_name="resnet20-digits-mCB-1-f0.25",
                              storage=open_storage(storage))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) == 7 and len(pruned) >= 1
    assert all(len(t.user_attrs["rung_acc"]) == 2 for t in complete)
    assert all(t.user_attrs["val_acc"] == t.user_attrs["rung_acc"][1] for t in complete)
    assert all(len(t.user_attrs["rung_acc"]) == 1 and t.user_attrs["rung_out"] == 0
               for t in pruned)
    assert study.user_attrs["config"]["proxy"]["rungs"] == [0, 1]
    assert main(_search(storage, base_ckpt, "--n-trials", "8", "--rungs", "0,1",
                        "--rung-keep", "0.3")) == 0
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 8
    capsys.readouterr()
    assert main(_search(storage, base_ckpt, "--n-trials", "9")) == 2  # no rungs: refused
    assert "proxy.rungs: stored [0, 1], now []" in capsys.readouterr().err
