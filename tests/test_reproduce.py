"""The study set runner: TOML configs, the plan, and `scripts/reproduce.py --quick` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evoprune.analysis import observations as obs
from evoprune.errors import EvopruneError
from evoprune.experiments.reproduce import ReproduceConfig, load_config, plan, winner_pairs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "studies" / "digits.toml"
VERDICTS = {obs.HOLDS, obs.NOT_SHOWN, obs.FAILS, obs.UNTESTED}


def test_the_committed_study_set_plans_the_papers_design():
    """studies/digits.toml: 3 STD spaces + mCB-1 at 4 regimes and the held-out one (20 studies of
    32 recipes + 3 uniform trials), STD spaces at 2 params regimes, then NSGA-II and random at
    0.05 over 4 paired seeds (8 studies); every space study shares one seed (paired trials)."""
    config = load_config(CONFIG)
    assert config.regimes == (0.25, 0.1, 0.05, 0.02) and config.held_out == 0.035
    planned = plan(config)
    roles = [p.role for p in planned]
    assert roles.count("space") == 16 and roles.count("held_out") == 4
    assert roles.count("params") == 6 and roles.count("compare") == 8
    compare = [p.search for p in planned if p.role == "compare"]
    assert sorted({s.sampler.name for s in compare}) == ["nsga2", "random"]
    assert {s.space.c_flops for s in compare} == {0.05} and {s.n_trials for s in compare} == {35}
    assert len({p.search.name() for p in planned}) == 34
    assert {p.search.seed for p in planned if p.role != "compare"} == {0}
    assert {p.search.base.val_size for p in planned} == {360}
    assert {p.search.uniform_seeds for p in planned} == {3}
    assert {p.search.n_trials for p in planned if p.role == "space"} == {35}
    assert all(p.search.proxy.epochs == 2 and p.search.proxy.batch_size == 32 for p in planned)


def test_quick_overrides_nested_tables():
    """--quick applies [quick], dotted keys included (proxy.epochs → proxy_epochs)."""
    quick = load_config(CONFIG, quick=True, out="elsewhere")
    assert quick.proxy_epochs == 1 and quick.n_trials == 4 and quick.compare_seeds == (1, 2)
    assert quick.stds == (0.1, 0.01) and quick.n_boot == 100 and quick.out == "elsewhere"
    assert len(plan(quick)) == 5 * 3 + 2 + 4


def test_the_fashion_set_plans_issue_15s_design_and_its_gpu_plan():
    """studies/fashion-mnist.toml: 3 STD spaces at 4 regimes (n 32, 2 uniform seeds), mCB-1 at
    0.25 and 0.1 only, the held-out 0.035, 2 params regimes (n 16), on a stratified 10,000-image
    subset with 5,000 for validation; --full trains on every image; the top 2 are retrained."""
    config = load_config(ROOT / "studies" / "fashion-mnist.toml")
    planned = plan(config)
    roles = [p.role for p in planned]
    assert roles.count("space") == 12 + 2 and roles.count("held_out") == 3
    assert roles.count("params") == 6 and roles.count("compare") == 4
    mcb = [p.search.space.c_flops for p in planned if p.search.space.c_mcb is not None
           and p.role != "compare"]
    assert sorted(mcb) == [0.1, 0.25]
    assert {p.search.n_trials for p in planned if p.role == "space"} == {34}
    assert {(p.search.base.train_size, p.search.base.val_size) for p in planned} == {(10000, 5000)}
    assert {p.search.base.dataset for p in planned} == {"fashion-mnist"}
    assert config.retrain_top == 2 and config.retrain_seeds == 3 and config.precision == "auto"
    assert {p.search.proxy.epochs for p in planned} == {1}  # the pilot's choice
    full = load_config(ROOT / "studies" / "fashion-mnist.toml", full=True)
    assert full.train_size is None and full.n_trials == 64 and len(full.compare_seeds) == 8
    assert full.storage != config.storage and full.out != config.out
    with pytest.raises(EvopruneError, match="choose one"):
        load_config(ROOT / "studies" / "fashion-mnist.toml", full=True, quick=True)
    with pytest.raises(EvopruneError, match=r"no \[full\] table for `full`"):
        load_config(CONFIG, full=True)


def test_the_winner_of_the_top_k_is_chosen_on_validation_and_paired_on_test():
    def rec(number, seed, val, test, chosen="top-k"):
        return {"number": number, "seed": seed, "val_drop": val, "test_drop": test,
                "chosen_as": chosen}

    retrained = [
        {"c_flops": 0.1, "study": "a", "source": "std",
         "records": [rec(3, 0, 2.0, 9.0), rec(3, 1, 2.2, 9.5), rec(0, 0, 4.0, 5.0, "uniform"),
                     rec(0, 1, 4.1, 5.5, "uniform")]},
        {"c_flops": 0.1, "study": "b", "source": "std",
         "records": [rec(7, 0, 1.0, 3.0), rec(7, 1, 1.5, 3.5)]},  # lower val: the winner
        {"c_flops": 0.1, "study": "m", "source": "mcb", "records": [rec(2, 0, 3.0, 4.0)]},
    ]
    assert winner_pairs(retrained, "std") == [(0.1, 0, 3.0, 5.0), (0.1, 1, 3.5, 5.5)]
    assert winner_pairs(retrained, "mcb") == [(0.1, 0, 4.0, 5.0)]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"regimes": (0.25, 0.1, 0.05)}, "at least 4"),
    ({"mcb_regimes": (0.3,)}, "mcb_regimes"),
    ({"retrain_top": 0}, "retrain.top"),
    ({"held_out": 0.25}, "held_out"),
    ({"compare_regime": 0.3}, "compare.regime"),
    ({"moderate": (0.3,)}, "moderate"),
    ({"compare_seeds": (1,)}, "two seeds"),
])
def test_a_study_set_that_cannot_test_the_observations_is_refused(kwargs, words):
    """Each impossible setting raises one EvopruneError naming the key."""
    with pytest.raises(EvopruneError, match=words):
        ReproduceConfig(**kwargs)


@pytest.mark.slow  # 2+ minutes on 2 cores: CI's budget; run with -m slow
def test_reproduce_quick_runs_end_to_end_and_resumes(tmp_path):
    """`python scripts/reproduce.py --quick`: every study complete, six verdicts with evidence,
    report and figures written; (e)'s numbers match the storage; a rerun adds no trial."""
    import optuna

    from evoprune.analysis.load import load_studies

    db, out = tmp_path / "q.db", tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--config", str(CONFIG),
           "--quick", "--storage", f"sqlite:///{db}", "--out", str(out), "--device", "cpu",
           "--compare-with", str(ROOT / "studies" / "digits" / "summary.json")]
    out.mkdir()
    (out / "discussion.md").write_text("why\n")
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [o["key"] for o in summary["observations"]] == list("abcdef")
    assert all(o["verdict"] in VERDICTS and o["evidence"] for o in summary["observations"])
    assert summary["command"].startswith("python scripts/reproduce.py --config")
    assert summary["machine"] and summary["wall_seconds"] > 0
    report = (out / "report.md").read_text()
    assert all(f"## ({k})" in report for k in "abcdef")
    assert "## Beside digits" in report and "[discussion.md](discussion.md)" in report
    assert summary["compared_with"].endswith("summary.json")
    for name in ("edfs_all_spaces.png", "sampler_race.png", "analysis/report.md",
                 "analysis/law.png", "analysis/mcb_curve.png"):
        assert (out / name).is_file(), name

    config = load_config(CONFIG, quick=True)
    planned = plan(config)
    storage = f"sqlite:///{db}"
    counts = {}
    for p in planned:
        study = optuna.load_study(study_name=p.search.name(), storage=storage)
        states = [t.state.name for t in study.get_trials()]
        counts[p.search.name()] = states.count("COMPLETE")
        assert states.count("COMPLETE") == p.search.n_trials, (p.search.name(), states)
        assert "RUNNING" not in states
    studies, _ = load_studies(storage, [p.search.name() for p in planned if p.role == "compare"])
    e = next(o for o in summary["observations"] if o["key"] == "e")
    def by_seed(sampler: str) -> list:
        runs = [s for s in studies if s.sampler == sampler]
        return sorted(runs, key=lambda s: int(s.name.rsplit("seed", 1)[1]))

    race = obs.sampler_efficiency(by_seed("nsga2"), by_seed("random"),
                                  prefix=config.compare_population)
    assert race.numbers["nsga2"] == e["numbers"]["nsga2"]
    assert race.numbers["random"] == e["numbers"]["random"]
    f = next(o for o in summary["observations"] if o["key"] == "f")
    pairs = f["numbers"]["pairs"]  # the winner across STD spaces and the uniform, per seed
    assert len(pairs) == 5 * config.retrain_seeds
    assert sorted({p[0] for p in pairs}) == sorted((*config.regimes, config.held_out))

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for p in planned:
        study = optuna.load_study(study_name=p.search.name(), storage=storage)
        assert [t.state.name for t in study.get_trials()].count("COMPLETE") == counts[
            p.search.name()]


def test_a_rerun_of_the_digits_set_chooses_the_networks_its_run_retrained():
    """Equal validation drops across STD spaces go to the space listed first, as when the set
    ran: every regime's winner study is the one its summary.json retrained (nothing to redo)."""
    from evoprune.experiments.reproduce import _regime_studies, _top_studies

    config = load_config(CONFIG)
    planned = plan(config)
    summary = json.loads((ROOT / "studies" / "digits" / "summary.json").read_text())
    retrained = {r["c_flops"]: r["study"] for r in summary["retrained"] if r["source"] == "std"}
    storage = f"sqlite:///{ROOT / 'studies' / 'digits' / 'digits.db'}"
    for c, study in retrained.items():
        stds, _ = _regime_studies(planned, c)
        assert _top_studies(storage, stds, 1) == [(study, 1)], c
    assert retrained[0.25].startswith("resnet20-digits-STD-0.1-")  # a tie at 0.00 pp with STD-0.05
