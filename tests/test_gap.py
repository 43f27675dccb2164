"""What closes the gap: arms on copies of the payoff's wide studies, winners chosen on
validation as the payoff's, compared with the best heuristic paired by seed."""

from __future__ import annotations

import optuna
import pytest

from evoprune.errors import EvopruneError
from evoprune.experiments.gap import GapConfig, gap_table, load_gap, resolved, write_gap
from evoprune.experiments.payoff import PayoffConfig
from evoprune.store.schema import retrain_results
from evoprune.store.storage import copy_study, find_study
from evoprune.training.retraining import RetrainSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


def net(ch, proxy, val=None, test=None, **kw):
    """A trial: its channels and proxy drop; retrained (2 seeds) where val and test are given."""
    got = ([val, val], [test, test + 0.2]) if val is not None else ([], [])
    return ({"channels": ch, "val_drop": proxy, **kw}, *got)


def _plan(tmp_path) -> PayoffConfig:
    return PayoffConfig(storage=f"sqlite:///{tmp_path}/p.db", out=str(tmp_path / "out"),
                        regimes=(0.1,), replicates=(1, 2), n_trials=7, n_boot=200,
                        retrain=RetrainSettings(top_k=1, seeds=2))


def test_each_arm_is_chosen_like_the_payoff_and_compared_with_the_best_heuristic(tmp_path, finished_study):
    """retrain_more finds a network the proxy ranked second and the payoff never retrained:
    it wins on validation and beats l2 on test by 1 pp at both replicates; search_longer is
    done only where its study reached n_trials; the verdict's unit is the replicate."""
    payoff = _plan(tmp_path)
    gap = GapConfig(top_k=2, n_trials=9)
    start = [net([4, 4], 2.0, 3.0, 3.0, is_uniform=True),
             net([5, 3], 4.0, 2.0, 2.0, role="baseline", criterion="l2")]
    for s in (1, 2):
        a, c = net([6, s], 1.0, 2.5, 2.5), net([7, s], 1.5)  # the payoff retrained a only
        finished_study(payoff.storage, f"wide-f0.1-s{s}", (start if s == 1 else []) + [a, c])
        better = net([7, s], 1.5, 1.5, 1.0)  # retrain_more retrains c too
        finished_study(gap_storage := resolved(payoff, gap).storage, f"wide-f0.1-s{s}-retrain_more",
               (start if s == 1 else []) + [a, better])
    finished_study(gap_storage, "wide-f0.1-s1-search_longer",
           [*start, net([6, 1], 1.0, 2.5, 2.5), net([7, 1], 1.5),
            *[net([8, k], 3.0 + k) for k in range(4)], net([9, 1], 0.5, 1.8, 1.9)])
    optuna.load_study(study_name="wide-f0.1-s1-search_longer", storage=gap_storage).add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # a dead worker's, rerun
    finished_study(gap_storage, "wide-f0.1-s2-search_longer",  # 9 trials, its new top-1 not retrained
           [net([6, 2], 1.0, 2.5, 2.5), *[net([8, k], 3.0 + k) for k in range(7)],
            net([9, 2], 0.5)])
    assert gap_storage == f"sqlite:///{tmp_path}/gap.db"  # beside the payoff's
    table = {(e["seed"], e["arm"]): e for e in gap_table(payoff, gap)}
    for s in (1, 2):
        e = table[(s, "retrain_more")]
        assert e["done"] and e["winner"]["label"] == f"wide s{s} #{1 if s == 2 else 3}"
        assert e["vs_best"] == pytest.approx([-1.0, -1.0])  # 1.0 − 2.0, 1.2 − 2.2
        assert e["vs_payoff"] == pytest.approx([-1.0, -1.0])  # the payoff chose l2 (val 2.0)
        assert e["retrained"] == 2
    e = table[(1, "search_longer")]
    assert e["done"] and e["trials"] == 9 and e["winner"]["label"] == "wide s1 #8"
    assert e["vs_best"] == pytest.approx([-0.1, -0.1])  # 1.9 − 2.0, 2.1 − 2.2
    assert not table[(2, "search_longer")]["done"]  # its top-1 not retrained: pending
    summary = write_gap(payoff, gap)
    v = {x["arm"]: x for x in summary["verdicts"]}
    assert v["retrain_more"]["n_clusters"] == 2
    assert v["retrain_more"]["estimate"] == pytest.approx(-1.0)
    assert v["search_longer"]["verdict"] == "pending"
    report = (tmp_path / "out" / "gap.md").read_text()
    assert "| 0.1 | s1 | retrain_more | wide s1 #3 | 1.10 | 2.10 | 2.10 | -1.00 | 2 |" in report
    assert "| 0.1 | s2 | search_longer | pending |" in report


def test_the_plan_s_gap_table_is_checked_before_anything_runs(tmp_path):
    """The committed plan's [gap] loads; arms, regimes and knobs that turn nothing are refused."""
    payoff, gap = load_gap("studies/fashion-mnist-payoff.toml")
    assert gap.regimes == (0.1,) and gap.top_k > payoff.retrain.top_k
    assert gap.n_trials > payoff.n_trials
    assert gap.storage == "sqlite:///studies/fashion-mnist-payoff/gap.db"
    plan = tmp_path / "p.toml"
    for table, message in (("arms = ['more']", "arms are one or more of"),
                           ("regimes = [0.3]", r"regimes \[0.3\] are not in the payoff plan"),
                           ("top_k = 2", "must exceed the payoff's \\(2\\)"),
                           ("budget = 1", "unknown keys budget")):
        plan.write_text(f"regimes = [0.1]\n[retrain]\ntop_k = 2\n[gap]\n{table}\n")
        with pytest.raises(EvopruneError, match=message):
            load_gap(plan)


def test_copy_study_copies_trials_and_retrainings_and_leaves_the_source(tmp_path, finished_study):
    """An arm starts from the payoff's study as it was: its trials and retrained results."""
    src, dst = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    finished_study(src, "wide", [net([1, 2], 1.0, 2.0, 3.0), net([2, 1], 2.0)])
    copy = copy_study(src, "wide", dst, "wide-arm")
    assert [t.user_attrs["channels"] for t in copy.get_trials()] == [[1, 2], [2, 1]]
    assert {n: [r.test_drop for r in rs] for n, rs in retrain_results(copy).items()} == \
        {0: [3.0, 3.2]}
    copy.set_user_attr("extra", 1)
    assert "extra" not in find_study(src, "wide").user_attrs
