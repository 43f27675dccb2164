"""Analysis on synthetic studies written straight into a storage: exact EDFs, scipy's KS,
recovered laws with covering intervals, and the analyze command's outputs and refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from scipy.stats import kendalltau, ks_2samp

from evoprune.analysis.edf import edf, regime_edfs
from evoprune.analysis.fit import fidelity, fit_law, optimal_mcb, predict
from evoprune.analysis.load import load_studies
from evoprune.analysis.report import AnalyzeConfig, compute
from evoprune.cli.commands import main

PROXY = {"epochs": 1, "lr": 0.01, "batch_size": 32, "augment": True, "importance": "l2"}


def add_study(storage: str, name: str, space: dict, drops, mcb, *,
              uniform: int | tuple[int, ...] | None = 0, proxy: dict | None = None,
              retrained: dict[int, list[float]] | None = None, seed: int = 0,
              legacy: bool = False, attrs_of: dict[int, dict] | None = None) -> None:
    """Write a study the way evoprune search does (schema 3: val drops, trial seeds, retrained
    test drops one per seed), with given drops and mCBs; `legacy`: the flat version-1 attrs,
    test-split drops and one retraining per trial."""
    from evoprune.store.schema import retrain_key

    rng = np.random.default_rng(seed)
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize"] * 2)
    c = space.get("c_flops") or 0.5
    uniform = (uniform,) if isinstance(uniform, int) else uniform or ()
    space = {"kind": "std", "c_flops": None, "c_params": None, "c_mcb": None, "c_std": None,
             "delta": 0.002, "r_max": 0.95, **space}
    units = [{"name": f"u{i}", "channels": 16} for i in range(3)]
    sampler = {"name": "random", "population": 16}
    if legacy:
        attrs = {"model": "resnet20", "dataset": "digits", "residual": True, "space": space,
                 "proxy": proxy or PROXY, "sampler": sampler, "base_acc": 0.98, "units": units}
    else:
        attrs = {"config": {"base": {"model": "resnet20", "dataset": "digits", "residual": True,
                                     "val_size": 0.2},
                            "space": space, "proxy": proxy or PROXY, "sampler": sampler,
                            "objectives": ["acc_drop", "params"], "seed": seed},
                 "checkpoint": {"path": "base.pt", "sha256": "ab"}, "base_val_acc": 0.98,
                 "base_flops": 1000, "base_params": 100, "units": units, "base_test_acc": 0.97,
                 "split_sizes": {"train": 1150, "val": 287, "test": 360}, "schema": 3,
                 "created": True}
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    for i, (d, m) in enumerate(zip(drops, mcb)):
        recipe = list(rng.uniform(0, 0.9, 3))
        result = ({"acc_drop": float(d), "proxy_acc": 0.98 - d / 100} if legacy else
                  {"val_drop": float(d), "val_acc": 0.98 - d / 100, "seed": 100 + i})
        study.add_trial(optuna.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[float(d), c / m],
            params={"g000": float(rng.random())}, distributions={"g000": FloatDistribution(0, 1)},
            user_attrs={**result, "mcb": float(m), "flops_ratio": c,
                        "params_ratio": c / float(m), "recipe_std": float(np.std(recipe)),
                        "recipe": recipe, "is_uniform": i in uniform,
                        "channels": [8, 8, 8] if i in uniform else [100 + i, 16, 16],
                        **(attrs_of or {}).get(i, {})}))
    for n, ds in (retrained or {}).items():
        for s, d in enumerate(ds):
            if legacy:
                study.set_user_attr(f"retrain:{n}", {"mode": "finetune", "epochs": 10,
                                                     "lr": 0.01, "acc": 0.98 - d / 100,
                                                     "acc_drop": d})
            else:
                study.set_user_attr(retrain_key(n, s), {
                    "mode": "finetune", "epochs": 10, "lr": 0.01, "seed": s,
                    "test_acc": 0.97 - d / 100, "test_drop": d, "val_acc": 0.98 - d / 100,
                    "val_drop": d})


def test_a_version_1_study_loads_with_its_test_split_drops_and_one_retraining(tmp_path):
    """Flat attrs, acc_drop and proxy_acc, retrain:N with acc and acc_drop: read as drops on the
    test split (no validation split then), no seeds, one retraining (seed 0) per trial."""
    storage = f"sqlite:///{tmp_path}/a.db"
    add_study(storage, "old", {"c_flops": 0.25, "c_std": 0.1}, [5.0, 1.0, 2.0], [1.0] * 3,
              retrained={1: [0.75]}, legacy=True)
    add_study(storage, "new", {"c_flops": 0.25, "c_std": 0.05}, [4.0, 1.5, 2.5], [1.0] * 3,
              retrained={1: [0.5, 1.0]})
    (old, new), warnings = load_studies(storage)
    assert warnings == []
    assert (old.split, old.base_acc, old.base_test_acc, old.seeds) == ("test", 0.98, 0.98, None)
    assert list(old.val_drop) == [5.0, 1.0, 2.0] and old.retrained == {1: {0: 0.75}}
    assert (new.split, new.base_acc, new.base_test_acc) == ("val", 0.98, 0.97)
    assert list(new.seeds) == [100, 101, 102] and new.retrained == {1: {0: 0.5, 1: 1.0}}
    a = compute([old, new], AnalyzeConfig(storage=storage, n_boot=20))
    assert sorted((p, r) for p, r, _ in a.fidelity_pairs) == [(1.0, 0.75), (1.5, 0.75)]


def test_baselines_and_repeated_networks_stay_out_of_edfs_laws_and_tests(tmp_path):
    """Trial 0 uniform, 1 a heuristic baseline (role "baseline"), 3 and 5 repeat the networks of
    trials 0 and 2: the population is trials 2, 4, 6, 7 (each network once, its first trial);
    the EDF's n and its median follow; the report quotes τ per regime, never pooled."""
    from evoprune.analysis.edf import population
    from evoprune.analysis.report import markdown

    storage = f"sqlite:///{tmp_path}/a.db"
    drops = [5.0, 0.1, 2.0, 9.0, 9.5, 3.0, 4.0, 1.0]
    add_study(storage, "A", {"c_flops": 0.25, "c_std": 0.01}, drops, [1.0] * 8,
              attrs_of={1: {"role": "baseline", "criterion": "l2"},
                        3: {"channels": [8, 8, 8]}, 5: {"channels": [102, 16, 16]}},
              retrained={0: [1.0, 1.2], 1: [0.1], 2: [0.8], 4: [1.5]})
    (s,), _ = load_studies(storage)
    assert s.is_baseline.tolist() == [False, True] + [False] * 6
    assert s.is_duplicate.tolist() == [False] * 3 + [True, False, True, False, False]
    assert population(s).tolist() == [2, 4, 6, 7]
    assert s.duplicates() == {"trials": 8, "distinct": 6, "most": 2, "uniform_copies": 2,
                              "dropped": 2}
    r = regime_edfs([s], n_boot=50)
    assert r.spaces[0].n == 4
    a = compute([s], AnalyzeConfig(storage=storage, n_boot=20))
    (row,) = a.fidelity_regimes  # trials 0, 2, 4 (the baseline left out): one regime
    assert (row["n"], row["tau"]) == (3, pytest.approx(kendalltau([5.0, 2.0, 9.5],
                                                                  [1.1, 0.8, 1.5]).statistic))
    text = markdown(a, AnalyzeConfig(storage=storage, n_boot=20), {
        k: f"{k}.png" for k in ("edfs", "distributions", "winning_recipes", "best", "mcb_curve",
                                "law", "fidelity")}, 0.0)
    assert "inside each regime only" in text and "retrained trials: Kendall" not in text


def test_edf_is_the_fraction_strictly_below():
    """F(e) = (1/n) Σ 1[e_i < e] at chosen points, ties excluded."""
    v = [1.0, 2.0, 2.0, 3.0]
    assert list(edf(v, [0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 10.0])) == [0, 0, 0.25, 0.25, 0.75, 0.75, 1]


def test_regime_edfs_ks_and_beats_uniform_from_the_storage(tmp_path):
    """EDF values on the grid, KS equal to scipy's, share beating the uniform recipe exact."""
    storage = f"sqlite:///{tmp_path}/a.db"
    a = [4.5, 5.5, 1.0, 2.0, 3.0, 4.0, 6.0]  # trials 0-1 are the uniform recipe (two seeds)
    b = [5.0, 0.5, 0.7, 1.5, 2.5, 0.2]  # trial 0 is the uniform recipe (one seed)
    add_study(storage, "A", {"c_flops": 0.25, "c_std": 0.1}, a, [1.0] * 7, uniform=(0, 1))
    add_study(storage, "B", {"c_flops": 0.25, "c_std": 0.01}, b, [1.0] * 6)
    studies, warnings = load_studies(storage)
    assert warnings == [] and [s.label for s in studies] == ["STD-0.1", "STD-0.01"]
    assert list(studies[0].uniform_drops) == [4.5, 5.5] and studies[0].uniform_drop == 5.0
    assert all(s.split == "val" and s.base_test_acc == 0.97 for s in studies)
    assert list(studies[0].seeds) == [100 + i for i in range(7)]
    r = regime_edfs(studies, n_boot=200)
    assert r.regime == ("flops", 0.25) and r.uniform_drop == 5.0  # the median of 5.0 and 5.0
    pa, pb = np.array(a[2:]), np.array(b[1:])
    for sp, pop in zip(r.spaces, (pa, pb)):
        assert sp.n == 5
        assert np.array_equal(sp.F, [np.mean(pop < g) for g in sp.grid])
        assert np.all(sp.lo <= sp.F + 1e-12) and np.all(sp.hi + 1e-12 >= sp.F)
    assert r.spaces[0].beats_uniform == pytest.approx(4 / 5)
    assert r.spaces[1].beats_uniform == 1.0
    ref = ks_2samp(pa, pb)
    assert r.ks[0].statistic == pytest.approx(ref.statistic)
    assert r.ks[0].pvalue == pytest.approx(ref.pvalue)


@pytest.mark.parametrize(("form", "law", "truth"), [
    ("power", lambda x: 2.0 * x ** 1.5, (2.0, 1.5)),
    ("exponential", lambda x: 0.5 * np.exp(1.2 * x), (0.5, 1.2)),
])
def test_law_parameters_are_recovered_and_covered(form, law, truth):
    """Noisy points of a known law: its form is chosen, parameters within 5%, intervals cover."""
    rng = np.random.default_rng(3)
    x = np.linspace(0.8, 2.0, 8)
    y = law(x) * (1 + 0.01 * rng.standard_normal(len(x)))
    fit = fit_law(x, y, n_boot=400, seed=1)
    assert fit.form == form
    assert fit.r2 > 0.99
    for p, t in zip(fit.params, truth):
        assert p.estimate == pytest.approx(t, rel=0.05)
        assert p.lo <= t <= p.hi


def test_law_intervals_cover_the_truth_in_most_repetitions():
    """Over 30 noise draws the 95% interval of the exponent covers the true 1.5 at least 80%."""
    x = np.linspace(0.8, 2.0, 8)
    covered = 0
    for seed in range(30):
        y = 2.0 * x ** 1.5 + 0.05 * np.random.default_rng(seed).standard_normal(len(x))
        b = fit_law(x, y, forms=("power",), n_boot=200, seed=seed).params[1]
        covered += b.lo <= 1.5 <= b.hi
    assert covered >= 24


def test_too_few_regimes_say_how_many_are_needed():
    """Three regimes cannot fit a two-parameter law with AICc: the message says 4."""
    from evoprune.errors import EvopruneError

    with pytest.raises(EvopruneError, match="needs at least 4 regimes"):
        fit_law([1.0, 1.1, 1.2], [0.1, 0.2, 0.4])


def test_optimal_mcb_finds_the_winners_mcb():
    """Drops rising with the distance to mCB 1.1: the winners' median is 1.1 within 0.03."""
    rng = np.random.default_rng(0)
    mcb = rng.uniform(0.7, 1.5, 400)
    drops = 20 * (mcb - 1.1) ** 2 + 0.05 * rng.standard_normal(400)
    o = optimal_mcb(mcb, drops, best=40, n_boot=300, uniform_mcb=0.98)
    assert o.n == 400 and o.n_winners == 40
    assert o.center.estimate == pytest.approx(1.1, abs=0.03)
    assert o.center.lo <= 1.1 <= o.center.hi
    assert o.winners_range[0] < 1.1 < o.winners_range[1]
    assert o.best_drop.estimate == pytest.approx(drops.min())


def test_fidelity_matches_scipy():
    """Kendall τ of proxy against retrained drops equals scipy's."""
    proxy, retrained = [1.0, 2.0, 3.0, 4.0, 5.0], [1.2, 1.9, 3.5, 3.1, 5.5]
    f = fidelity(proxy, retrained)
    assert f.n == 5
    assert f.kendall_tau == pytest.approx(kendalltau(proxy, retrained).statistic)


def synthetic_regimes(storage: str, cs=(0.5, 0.25, 0.1, 0.05, 0.02), n: int = 60) -> None:
    """Studies at several regimes whose winners sit at mCB*(c) and whose best drops follow a law.

    mCB*(x) = 0.9 + 0.3·x² (x = 1 − c) and best drop = 0.2·exp(2·mCB*).
    """
    for k, c in enumerate(cs):
        rng = np.random.default_rng(k)
        opt = 0.9 + 0.3 * (1 - c) ** 2
        floor = 0.2 * math.exp(2 * opt)
        mcb = rng.uniform(opt - 0.3, opt + 0.3, n)
        drops = floor + 40 * (mcb - opt) ** 2
        add_study(storage, f"r{c}", {"c_flops": c, "c_mcb": 1.0, "kind": "mcb"}, drops, mcb,
                  uniform=None, seed=k,
                  retrained={0: [float(drops[0]) * 0.4, float(drops[0]) * 0.6],  # two seeds
                             1: [float(drops[1]) * 0.5],
                             2: [float(drops[2]) * 0.5, float(drops[2]) * 0.7]})


def test_compute_recovers_the_laws_of_synthetic_regimes_and_predicts(tmp_path):
    """Five regimes from known curves: optimal mCB, law and a held-out prediction all cover."""
    storage = f"sqlite:///{tmp_path}/a.db"
    synthetic_regimes(storage)
    studies, _ = load_studies(storage)
    a = compute(studies, AnalyzeConfig(storage=storage, winners=5, n_boot=300, predict=(0.15,)))
    assert [o.regime for o in a.optimal] == [("flops", c) for c in (0.5, 0.25, 0.1, 0.05, 0.02)]
    for o in a.optimal:
        truth = 0.9 + 0.3 * (1 - o.regime[1]) ** 2
        assert o.center.estimate == pytest.approx(truth, abs=0.05)
    assert a.law is not None and a.mcb_curve is not None
    assert a.law.form == "exponential"
    assert a.law.params[1].estimate == pytest.approx(2.0, rel=0.15)
    p = a.predictions[0]
    true_m = 0.9 + 0.3 * 0.85 ** 2
    assert p.mcb.lo <= true_m <= p.mcb.hi
    assert p.drop.lo <= 0.2 * math.exp(2 * true_m) <= p.drop.hi
    assert a.fidelity is not None and a.fidelity.n == 15
    assert a.retrained_law is not None
    # a retrained network's drop is the mean over its seeds (paired with its proxy drop)
    for s in studies:
        assert s.retrained[0] == {0: pytest.approx(s.val_drop[0] * 0.4),
                                  1: pytest.approx(s.val_drop[0] * 0.6)}
    ratios = sorted(drop / proxy for proxy, drop, _ in a.fidelity_pairs)
    assert ratios == pytest.approx([0.5] * 10 + [0.6] * 5)  # trials 0, 1: 0.5; trial 2: 0.6


def test_analyze_all_writes_report_summary_and_figures(tmp_path, capsys):
    """`evoprune analyze --all`: report.md embeds the figures, summary.json holds their data."""
    storage = f"sqlite:///{tmp_path}/a.db"
    synthetic_regimes(storage, n=30)
    add_study(storage, "std", {"c_flops": 0.25, "c_std": 0.1}, np.linspace(0.5, 3, 20),
              np.linspace(0.8, 1.2, 20), proxy={**PROXY, "epochs": 3})
    out = tmp_path / "out"
    assert main(["analyze", "--storage", storage, "--all", "--out", str(out), "--n-boot", "100",
                 "--predict", "0.15"]) == 0
    captured = capsys.readouterr()
    assert "different proxy budgets" in captured.err
    import re

    assert re.search(r"drop-limit law: (power|exponential|linear), R² 0\.\d{3}", captured.out)
    data = json.loads((out / "summary.json").read_text())
    assert set(data) >= {"studies", "regimes", "mcb_curve", "law", "retrained_law", "predictions",
                         "fidelity", "figures", "warnings", "settings"}
    r25 = next(r for r in data["regimes"] if r["target"] == 0.25)
    assert {s["label"] for s in r25["spaces"]} == {"mCB-1", "STD-0.1"}
    assert len(r25["ks"]) == 1 and 0 <= r25["ks"][0]["pvalue"] <= 1
    assert len(r25["best"]) == 40
    report = (out / "report.md").read_text()
    for name in data["figures"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in report
    assert "Kendall τ" in report


def test_analyze_bad_inputs(tmp_path, capsys):
    """Missing storage, empty storage, unknown study, no COMPLETE trials: exit 2, one line."""
    db = tmp_path / "a.db"
    out = str(tmp_path / "out")
    assert main(["analyze", "--storage", f"sqlite:///{db}", "--all", "--out", out]) == 2
    assert "no study storage" in capsys.readouterr().err and not db.exists()
    optuna.create_study(storage=f"sqlite:///{db}")  # storage schema, no evoprune study
    optuna.delete_study(study_name=optuna.get_all_study_names(f"sqlite:///{db}")[0],
                        storage=f"sqlite:///{db}")
    assert main(["analyze", "--storage", f"sqlite:///{db}", "--all", "--out", out]) == 2
    assert "holds no studies" in capsys.readouterr().err
    optuna.create_study(study_name="empty", storage=f"sqlite:///{db}")
    optuna.load_study(study_name="empty", storage=f"sqlite:///{db}").set_user_attr(
        "space", {"c_flops": 0.5})
    assert main(["analyze", "--storage", f"sqlite:///{db}", "--study-name", "nope",
                 "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and len(err.strip().splitlines()) == 1
    assert main(["analyze", "--storage", f"sqlite:///{db}", "--all", "--out", out]) == 2
    assert "no study with COMPLETE trials" in capsys.readouterr().err


def test_too_few_regimes_still_write_a_report(tmp_path, capsys):
    """One regime: EDFs and optimal mCB are written; the laws say how many regimes they need."""
    storage = f"sqlite:///{tmp_path}/a.db"
    add_study(storage, "one", {"c_flops": 0.25, "c_mcb": 1.0}, np.linspace(0.5, 3, 10),
              np.linspace(0.9, 1.1, 10))
    out = tmp_path / "out"
    assert main(["analyze", "--storage", storage, "--study-name", "one", "--out", str(out),
                 "--n-boot", "50", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "needs at least 4 regimes" in data["law"]["error"]
    assert "needs at least 4 regimes" in (out / "report.md").read_text()
    assert data["regimes"][0]["optimal_mcb"]["n_winners"] == 1


def test_predict_needs_c_flops_in_range():
    """A prediction outside (0, 1] is refused by the config."""
    from evoprune.errors import EvopruneError

    with pytest.raises(EvopruneError, match="`predict`"):
        AnalyzeConfig(storage="sqlite:///x.db", predict=(1.5,))
    x = np.linspace(0.5, 1.0, 5)
    fit = fit_law(x, 1 + x, forms=("linear",), n_boot=20)
    with pytest.raises(EvopruneError, match="c_flops"):
        predict(fit, fit, 0.0)


def test_attach_stores_the_figures_as_study_artifacts(tmp_path, capsys):
    """--attach: every analysed study lists the figures, report and summary as artifacts."""
    from optuna.artifacts import get_all_artifact_meta

    storage = f"sqlite:///{tmp_path}/a.db"
    add_study(storage, "one", {"c_flops": 0.25, "c_mcb": 1.0}, np.linspace(0.5, 3, 10),
              np.linspace(0.9, 1.1, 10))
    out, art = tmp_path / "out", tmp_path / "artifacts"
    assert main(["analyze", "--storage", storage, "--all", "--out", str(out), "--n-boot", "20",
                 "--attach", "--artifact-dir", str(art)]) == 0
    assert f"--artifact-dir {art}" in capsys.readouterr().out
    study = optuna.load_study(study_name="one", storage=storage)
    names = sorted(m.filename for m in get_all_artifact_meta(study))
    assert "edfs.png" in names and "report.md" in names and "summary.json" in names
    assert len(list(art.iterdir())) == len(names)


def test_regime_name_is_one_function_for_report_and_plots():
    """report and plots name a regime with the one helper beside the Regime type in load."""
    from evoprune.analysis import load, plots, report

    name = getattr(load, "regime_name", None)
    assert name is not None, "evoprune.analysis.load has no regime_name"
    assert name(("flops", 0.25)) == "c_flops = 0.25"
    assert name(("params", np.float64(0.1))) == "c_params = 0.1"
    assert report.regime_name is name and plots.regime_name is name
    assert not hasattr(plots, "_regime_title")
