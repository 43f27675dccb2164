"""The payoff experiment's plan, its winners chosen on validation, and its regime-level verdicts."""

from __future__ import annotations

import optuna
import pytest

from evoprune.errors import EvopruneError
from evoprune.experiments.payoff import (
    PayoffConfig,
    load_payoff,
    regime_table,
    searches,
    write_report,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _plan(tmp_path, **kw) -> PayoffConfig:
    from evoprune.training.retraining import RetrainSettings

    plan = {"regimes": (0.25, 0.1), "replicates": (1, 2), **kw}
    return PayoffConfig(storage=f"sqlite:///{tmp_path}/p.db", out=str(tmp_path / "out"),
                        retrain=RetrainSettings(top_k=1, seeds=2), n_boot=200, **plan)


def test_winners_are_chosen_on_validation_and_compared_per_regime_and_replicate(tmp_path, finished_study):
    """The best heuristic and each winner are the lowest validation mean; the verdict's unit is
    the regime × replicate (4 clusters), its estimate the mean of the clusters' mean gains."""
    config = _plan(tmp_path)
    heur = [({"role": "baseline", "criterion": c}, [v, v], [t, t + 0.2])
            for c, v, t in (("l2", 2.0, 3.0), ("taylor", 1.0, 4.0), ("lamp", 3.0, 2.0),
                            ("bn_scale", 5.0, 1.0))]
    for c in (0.25, 0.1):
        for s in (1, 2):
            fixed = [({"is_uniform": True}, [4.0, 4.0], [5.0, 5.0]), *heur] if s == 1 else []
            gain = 1.0 if c == 0.25 else 0.5  # searched test drop below taylor's (4.0, 4.2)
            net = {"channels": [s, 3]}  # each search's winner its own network
            finished_study(config.storage, f"wide-f{c:g}-s{s}", [
                *fixed, (net, [0.5, 0.5], [4.0 - gain, 4.2 - gain]),
                ({"channels": [9, 9]}, [9.0, 9.0], [0.0, 0.0])])
            finished_study(config.storage, f"mcb-f{c:g}-s{s}", [(net, [0.8, 0.8], [4.5, 4.7])])
    rows, done = regime_table(config)
    assert done == 8
    for row in rows:
        assert row["best_heuristic"] == "taylor"  # lowest validation, not lowest test (bn_scale)
        for rep in row["replicates"]:
            assert rep["wide"]["val_mean"] == 0.5 and rep["wide"]["role"] == "searched"
            assert rep["mcb"]["test_mean"] == pytest.approx(4.6)
            # compute at the median paces: 2 seeds × 60 s a network retrained (+ ~0 s trials);
            # the wide search reads its 2 retrained trials, the uniform recipe and 4 heuristics
            assert rep["mcb"]["cpu_seconds"] == pytest.approx(120, abs=1)
            assert rep["wide"]["cpu_seconds"] == pytest.approx(7 * 120, abs=1)
        assert row["heuristic_cpu_seconds"]["l2"] == pytest.approx(120, abs=1)
    summary = write_report(config)
    v = {(x["a"], x["b"]): x for x in summary["verdicts"]}
    assert v[("wide", "best")]["n_clusters"] == 4
    assert v[("wide", "best")]["estimate"] == pytest.approx(-0.75)
    assert v[("mcb", "best")]["estimate"] == pytest.approx(0.5)
    assert v[("wide", "uniform")]["estimate"] == pytest.approx(-0.75 - 0.9)
    # the heuristic against uniform: one network pair per regime, counted once
    assert (v[("best", "uniform")]["n_clusters"], v[("best", "uniform")]["regimes"]) == (2, 2)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 0.25 | 5.00 ± 0.00 |" in report and "8 of 8 studies" in report
    # the reproduction's report quotes it: the table and the regime-level verdicts
    import json

    from evoprune.experiments.reproduce import payoff_section

    path = str(tmp_path / "out" / "summary.json")
    section = payoff_section(path, json.loads((tmp_path / "out" / "summary.json").read_text()))
    assert "## Does the search pay?" in section and "### Regime-level comparisons" in section
    assert "| 0.25 | 5.00 ± 0.00 |" in section and "wide-space winner − best heuristic: -0.75" in section
    assert "Pending" in payoff_section(str(tmp_path / "none.json"), None)


def test_the_wide_winner_can_be_a_heuristic(tmp_path, finished_study):
    """A search whose top-k is worse on validation than a heuristic returns that heuristic."""
    config = _plan(tmp_path, regimes=(0.25,), replicates=(1,))
    finished_study(config.storage, "wide-f0.25-s1", [
        ({"is_uniform": True}, [4.0, 4.0], [5.0, 5.0]),
        ({"role": "baseline", "criterion": "l2"}, [1.0, 1.0], [2.0, 2.0]),
        ({}, [3.0, 3.0], [1.0, 1.0])])
    rows, _ = regime_table(config)
    win = rows[0]["replicates"][0]["wide"]
    assert (win["role"], win["criterion"], win["test_mean"]) == ("baseline", "l2", 2.0)


def test_limits_read_the_proxy_the_selection_and_the_start_inside_a_regime(tmp_path, finished_study):
    """τ of the proxy and of the retrained validation against test over the distinct networks
    retrained in a regime (a network met in two studies counts once), the headroom over the
    chosen winner, the search's proxy gain over its start, and whether it returned its start."""
    from evoprune.experiments.payoff import limits, limits_digest, readme_block

    config = _plan(tmp_path, regimes=(0.1,), replicates=(1,))

    def net(ch, proxy, val, test, **kw):
        return ({"channels": ch, "val_drop": proxy, **kw}, [val, val], [test, test + 0.2])

    a = net([6, 2], 1.0, 2.5, 1.5)  # the searched network best on proxy and test
    finished_study(config.storage, "wide-f0.1-s1", [
        net([4, 4], 2.0, 3.0, 3.0, is_uniform=True), net([5, 3], 4.0, 2.0, 2.0, role="baseline",
                                                         criterion="l2"),
        a, net([3, 5], 3.0, 4.0, 4.0)])
    finished_study(config.storage, "mcb-f0.1-s1", [a, net([7, 1], 5.0, 5.0, 5.0)])
    rows, _ = regime_table(config)
    (e,) = limits(config, rows)
    assert e["networks"] == 5  # a, met in both studies, once
    # proxy order a, uniform, [3, 5], l2, [7, 1] against test order a, l2, uniform, [3, 5],
    # [7, 1]: 8 concordant pairs of 10, 2 discordant
    assert e["tau_proxy_test"] == pytest.approx(0.6)
    assert e["tau_val_test"] == pytest.approx(0.8)  # only l2 and a swap
    assert e["from_start"] == [True]  # l2's retrained validation (2.0) beats a's (2.5)
    assert e["best_on_test"] == {"label": "wide s1 #2", "test_mean": pytest.approx(1.6)}
    assert e["headroom"] == pytest.approx(2.1 - 1.6)
    assert e["proxy_gain"] == [pytest.approx(1.0 - 2.0)]
    d = limits_digest([e])
    assert (d["from_start"], d["replicates"], d["proxy_beaten"], d["searches"]) == (1, 1, 1, 1)
    summary = write_report(config)
    assert summary["limits"][0]["networks"] == 5
    assert "| 0.1 | 5 | 0.60 | 0.80 | wide s1 #2 (1.60) | 0.50 | -1.00 | yes |" in \
        (tmp_path / "out" / "report.md").read_text()
    assert "Kendall τ 0.60, their retrained validation with τ 0.80; the wide search returned " \
        "its start (uniform or a heuristic) in 1 of 1 replicates" in readme_block(summary)


def test_the_plan_reads_its_toml_and_refuses_what_cannot_answer(tmp_path):
    """The committed plan loads (and its quick table); each replicate searches two spaces."""
    config = load_payoff("studies/fashion-mnist-payoff.toml")
    assert config.regimes == (0.1, 0.02, 0.25, 0.05, 0.035) and config.replicates == (1, 2)
    assert config.retrain.top_k == 2 and config.retrain.seeds == 3
    plan = searches(config)
    assert len(plan) == 20 and {p[3].space.kind for p in plan} == {"initial", "mcb"}
    wide = [p[3] for p in plan if p[2] == "wide"]
    assert all(s.baselines == ("l2", "taylor", "lamp", "bn_scale") for s in wide)
    assert {p[3].name() for p in plan if p[0] == 0.1} == {"wide-f0.1-s1", "mcb-f0.1-s1",
                                                          "wide-f0.1-s2", "mcb-f0.1-s2"}
    quick = load_payoff("studies/fashion-mnist-payoff.toml", quick=True)
    assert quick.retrain.epochs == 1 and quick.regimes == (0.25, 0.1)
    bad = tmp_path / "bad.toml"
    bad.write_text("regimes = [0.1]\nreplicates = [1, 1]\n")
    with pytest.raises(EvopruneError, match="distinct search seeds"):
        load_payoff(bad)
    bad.write_text("regimes = [0.1]\nbudget = 3\n")
    with pytest.raises(EvopruneError, match="unknown keys budget"):
        load_payoff(bad)


def test_the_committed_report_is_its_storage(tmp_path):
    """studies/fashion-mnist-payoff: the summary recomputed from the committed storage is the
    committed summary.json (every retrained drop, winner and verdict)."""
    import json
    import shutil
    from dataclasses import replace
    from pathlib import Path

    folder = Path("studies/fashion-mnist-payoff")
    if not (folder / "payoff.db").is_file():
        pytest.skip("the payoff run has not written its storage")
    committed = json.loads((folder / "summary.json").read_text())
    shutil.copy(folder / "payoff.db", tmp_path / "payoff.db")  # read a copy: nothing is written
    config = replace(load_payoff("studies/fashion-mnist-payoff.toml"),
                     storage=f"sqlite:///{tmp_path}/payoff.db", out=str(tmp_path / "out"))
    again = write_report(config)
    assert again["done"] == committed["done"]
    keys = ("test", "val", "number", "role", "criterion", "channels")
    for new, old in zip(again["rows"], committed["rows"]):
        assert new.get("best_heuristic") == old.get("best_heuristic")
        for name in ("uniform",):
            assert (new[name] and {k: new[name][k] for k in keys}) == \
                (old[name] and {k: old[name][k] for k in keys})
        for crit, e in new["heuristics"].items():
            assert {k: e[k] for k in keys} == {k: old["heuristics"][crit][k] for k in keys}
        for rn, ro in zip(new["replicates"], old["replicates"]):
            for kind in ("wide", "mcb"):
                assert (kind in rn) == (kind in ro)
                if kind in rn:
                    assert {k: rn[kind][k] for k in keys} == {k: ro[kind][k] for k in keys}
    assert [(v["a"], v["b"], v.get("estimate"), v["verdict"]) for v in again["verdicts"]] == \
        [(v["a"], v["b"], v.get("estimate"), v["verdict"]) for v in committed["verdicts"]]


def test_the_readme_table_is_the_committed_summary(tmp_path):
    """README.md's first-screen block is readme_block(summary.json) exactly; the writer replaces
    only the block, and a file without the markers is refused before anything is written."""
    import json
    from pathlib import Path

    from evoprune.cli.commands import main
    from evoprune.experiments.payoff import README_BEGIN, README_END, readme_block, update_readme

    summary = json.loads(Path("studies/fashion-mnist-payoff/summary.json").read_text())
    block = readme_block(summary)
    readme = Path("README.md").read_text()
    assert block.rstrip("\n") in readme, "README's payoff table is stale: rerun --report-only --readme"
    assert f"{summary['done']} of {summary['planned']} studies done" in block
    doc = tmp_path / "r.md"
    doc.write_text(f"top\n{README_BEGIN}\nold\n{README_END}\nbottom\n")
    assert update_readme(doc, block)
    assert doc.read_text() == "top\n" + block.rstrip("\n") + "\nbottom\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    out = tmp_path / "out"
    plan = tmp_path / "plan.toml"
    plan.write_text(f'storage = "sqlite:///{tmp_path}/p.db"\nout = "{out}"\nregimes = [0.1]\n')
    assert main(["payoff", "--config", str(plan), "--report-only", "--readme", str(plain)]) == 2
    assert not out.exists() and plain.read_text() == "no markers\n"
