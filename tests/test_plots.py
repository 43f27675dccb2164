"""The figures: every plot function writes a legible PNG, also for tiny, empty or missing inputs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evoprune.analysis import plots
from evoprune.analysis.edf import best_subnetworks, regime_edfs, winning_recipe
from evoprune.analysis.fit import Fidelity, fit_law, optimal_mcb
from evoprune.analysis.load import StudyData

UNITS = 6


def make_study(name: str, regime: tuple[str, float], m: int = 30, *, c_std: float | None = None,
               uniform: int = 3, seed: int = 0) -> StudyData:
    """A synthetic study of `m` trials, the first `uniform` of them the uniform recipe (one per
    proxy seed, as `uniform_seeds` makes them: one recipe, drops that differ by seed noise)."""
    rng = np.random.default_rng(seed)
    kind, c = regime
    recipes = rng.uniform(0.1, 0.8, size=(m, UNITS))
    mcb = rng.normal(1.0, 0.1, m)
    is_uniform = np.arange(m) < uniform
    recipes[is_uniform] = 1 - np.sqrt(c)
    mcb[is_uniform] = 1.0
    target = np.full(m, c) + rng.normal(0, 0.005, m)
    other = c * mcb if kind == "params" else c / mcb
    space = {"kind": "flops" if kind == "flops" else "params", f"c_{kind}": c, "c_std": c_std}
    return StudyData(
        name=name, model="resnet20", dataset="cifar10", space=space,
        proxy={"epochs": 1, "lr": 0.01, "batch_size": 128}, sampler="nsga2", base_acc=0.9,
        units=[f"u{i}" for i in range(UNITS)], numbers=np.arange(m),
        val_drop=np.abs(rng.normal(3.0, 1.0, m)) + 5 * (mcb - 1.0) ** 2,
        flops_ratio=target if kind == "flops" else other,
        params_ratio=other if kind == "flops" else target,
        mcb=mcb, recipe_std=recipes.std(axis=1), recipes=recipes, is_uniform=is_uniform,
        seeds=np.arange(m) + 1000 * seed, split="val", base_test_acc=0.89)


def assert_png(path: str, tmp_path: Path, min_width: int = 300) -> None:
    """The file lies under tmp_path, is a PNG and matplotlib reads a sensible size from it."""
    import matplotlib.image as mpimg

    p = Path(path)
    assert p.is_file() and p.parent == tmp_path
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h, w = mpimg.imread(p).shape[:2]
    assert w > min_width and h > 200


REGIMES = [("flops", 0.5), ("flops", 0.25), ("params", 0.3)]


@pytest.fixture(scope="module")
def groups() -> dict[tuple[str, float], list[StudyData]]:
    """Three regimes of two spaces each (an initial space and an STD space)."""
    out = {}
    for i, r in enumerate(REGIMES):
        out[r] = [make_study(f"init-{i}", r, seed=10 * i),
                  make_study(f"std-{i}", r, c_std=0.1, seed=10 * i + 1)]
    return out


@pytest.fixture(scope="module")
def optimal(groups) -> list:
    """The optimal mCB of each regime, with the uniform recipe's mCB."""
    out = []
    for r, g in groups.items():
        mcb = np.concatenate([s.mcb for s in g])
        drops = np.concatenate([s.val_drop for s in g])
        out.append(optimal_mcb(mcb, drops, regime=r, best=5, n_boot=50, uniform_mcb=1.0))
    return out


@pytest.fixture(scope="module")
def law():
    """A power law fitted to 5 points of y = 2·x^1.5."""
    x = np.array([0.8, 0.9, 1.0, 1.1, 1.2])
    return fit_law(x, 2 * x ** 1.5, n_boot=50)


@pytest.fixture(scope="module")
def curve():
    """An optimal-mCB curve fitted against the FLOPs reduction (as a fraction)."""
    x = np.array([0.3, 0.5, 0.6, 0.75, 0.9])
    return fit_law(x, 1.0 - 0.3 * x + 0.01 * np.sin(7 * x), n_boot=50,
                   forms=("exponential", "linear", "inverse"))


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every figure a test built."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def panels(fig) -> list:
    """The figure's visible axes, in order."""
    return [ax for ax in fig.axes if ax.get_visible()]


def legend(ax) -> list[str]:
    """The axes' legend entries (none without a legend)."""
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


def texts(fig) -> list[str]:
    """Every non-empty text in the figure: titles, labels, annotations, legends, ticks."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def points(ax) -> np.ndarray:
    """The (x, y) of every scattered or error-barred marker of the axes, row by row."""
    rows = [c.get_offsets() for c in ax.collections if hasattr(c, "get_offsets")
            and type(c).__name__ == "PathCollection"]
    rows = [np.asarray(r) for r in rows if len(r)]
    return np.concatenate(rows) if rows else np.empty((0, 2))


def line(ax, label: str):
    """The one line (or error-bar data line) of the axes whose label starts with `label`."""
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(label)]
    found += [c.lines[0] for c in ax.containers if c.get_label().startswith(label)]
    assert len(found) == 1, [a.get_label() for a in [*ax.get_lines(), *ax.containers]]
    return found[0]


def test_plot_edfs(groups):
    """One EDF panel per regime, with bands and the uniform baseline."""
    edfs = [regime_edfs(g, n_boot=50) for g in groups.values()]
    fig = plots.figure_edfs(edfs)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["c_flops = 0.5", "c_flops = 0.25", "c_params = 0.3"]
    for ax, r in zip(axes, edfs):
        assert len(ax.collections) == len(r.spaces) == 2  # one bootstrap band per space
        for s in r.spaces:
            edf_line = line(ax, f"{s.label} (n={s.n})")
            assert np.allclose(edf_line.get_xdata(), s.grid)
            assert np.allclose(edf_line.get_ydata(), s.F)
            band = ax.collections[r.spaces.index(s)].get_paths()[0].vertices[:, 1]
            assert band.min() == pytest.approx(s.lo.min()) and band.max() == pytest.approx(s.hi.max())
        base = line(ax, "uniform (")
        # each study's uniform drop is the mean over its seeds; the regime's their median
        g = groups[r.regime]
        assert r.uniform_drop == pytest.approx(float(np.median(
            [s.val_drop[:3].mean() for s in g])))
        assert all(s.uniform_drops.std() > 0 for s in g)  # seed noise, not one value thrice
        assert base.get_label() == f"uniform ({r.uniform_drop:.2f} pp)"
        assert list(base.get_xdata()) == [r.uniform_drop] * 2
        assert legend(ax) == [ln.get_label() for ln in ax.get_lines()]


def test_plot_distributions(groups):
    """A grid of histograms, quantities by regimes."""
    fig = plots.figure_distributions(groups)
    grid = np.array(fig.axes).reshape(4, 3)
    assert [ax.get_title() for ax in grid[0]] == ["c_flops = 0.5", "c_flops = 0.25",
                                                  "c_params = 0.3"]
    for i, q in enumerate(plots.QUANTITY_LABELS):
        for j, studies in enumerate(groups.values()):
            ax = grid[i, j]
            assert ax.get_xlabel() == plots.QUANTITY_LABELS[q]
            assert len(ax.patches) == len(studies)  # one step histogram per space
            for patch, s in zip(ax.patches, studies):  # its outline spans the space's values
                xs = patch.get_xy()[:, 0]
                v = getattr(s, q)[s.searched]
                assert xs.min() <= v.min() + 1e-9 and xs.max() >= v.max() - 1e-9
        assert grid[i, 0].get_ylabel() == "density"
    # 30 trials less the 3 of the uniform recipe
    assert legend(grid[0, 0]) == [f"{s.label} (n=27)" for s in groups[REGIMES[0]]]


def test_plot_winning_recipes(groups):
    """Each space's winning recipe per regime."""
    winners = {r: [winning_recipe(s) for s in g] for r, g in groups.items()}
    fig = plots.figure_winning_recipes(winners)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["c_flops = 0.5", "c_flops = 0.25", "c_params = 0.3"]
    for ax, ws in zip(axes, winners.values()):
        assert len(ax.get_lines()) == len(ws) == 2
        for ln, w in zip(ax.get_lines(), ws):
            assert list(ln.get_xdata()) == list(range(UNITS))
            assert np.allclose(ln.get_ydata(), w.recipe)
            assert ln.get_label() == f"{w.label}: drop {w.val_drop:.2f} pp"
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("unit index", "pruning ratio")


def test_plot_best(groups):
    """The best-k subnetworks' cost ratio and mCB per regime, flops and params regimes."""
    best = {r: best_subnetworks(g, 10) for r, g in groups.items()}
    fig = plots.figure_best(best)
    grid = np.array(fig.axes).reshape(2, 2)  # rows: cost ratio, mCB; columns: flops, params
    assert [ax.get_title() for ax in grid[0]] == ["best subnetworks per regime (c_flops)",
                                                  "best subnetworks per regime (c_params)"]
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["params ratio", "mCB"]
    assert [ax.get_ylabel() for ax in grid[:, 1]] == ["FLOPs ratio", "mCB"]
    assert [t.get_text() for t in grid[1, 0].get_xticklabels()] == ["0.5\n(n=10)",
                                                                     "0.25\n(n=10)"]
    for j, kind in enumerate(("flops", "params")):
        regimes = [r for r in REGIMES if r[0] == kind]
        ratio = "params_ratio" if kind == "flops" else "flops_ratio"
        for i, attr in enumerate((ratio, "mcb")):
            xy = points(grid[i, j])
            want = sorted(getattr(w, attr) for r in regimes for w in best[r])
            assert np.allclose(sorted(xy[:, 1]), want)
            regime_of = np.rint(xy[:, 0]).astype(int)  # jitter within ±0.15 of the position
            assert np.abs(xy[:, 0] - regime_of).max() <= 0.15
            assert np.bincount(regime_of).tolist() == [10] * len(regimes)


def test_plot_mcb_curve(optimal, curve):
    """The optimal mCB against the FLOPs reduction with the fitted curve (flops regimes only)."""
    fig = plots.figure_mcb_curve(optimal, curve)
    (ax,) = fig.axes
    flops = sorted((o for o in optimal if o.regime[0] == "flops"), key=lambda o: -o.regime[1])
    marker = line(ax, "optimal mCB")
    assert list(marker.get_xdata()) == [50.0, 75.0]  # 1 − c_flops in %; no params regime
    assert np.allclose(marker.get_ydata(), [o.center.estimate for o in flops])
    assert ax.get_title() == f"optimal mCB against FLOPs reduction: {curve.form}, R² {curve.r2:.2f}"
    fitted = line(ax, "fit: ")
    xs = np.asarray(fitted.get_xdata())
    assert np.allclose(fitted.get_ydata(), curve(xs / 100.0))
    assert xs.min() < 30 and xs.max() > 90  # it spans the fitted points (in %)
    assert "uniform recipe" in legend(ax) and "winners' mCB range" in legend(ax)


def test_plot_law(optimal, law):
    """Best drop against optimal mCB with the law and a retrained law."""
    retrained = fit_law([0.8, 0.9, 1.0, 1.1, 1.2], [1.0, 1.3, 1.5, 1.9, 2.2], n_boot=50)
    fig = plots.figure_law(optimal, law, retrained=retrained)
    (ax,) = fig.axes
    assert ax.get_title() == (f"{law.form} law, R² {law.r2:.2f}; retrained: {retrained.form} "
                              f"law, R² {retrained.r2:.2f}")
    names = [a.get_text() for a in ax.texts]
    assert sorted(names) == sorted(f"c_{k} = {c:g}" for k, c in REGIMES)
    for kind in ("flops", "params"):
        sel = [o for o in optimal if o.regime[0] == kind]
        marker = line(ax, f"best proxy drop ({kind} regimes)")
        assert np.allclose(marker.get_xdata(), [o.center.estimate for o in sel])
        assert np.allclose(marker.get_ydata(), [o.best_drop.estimate for o in sel])
    for fit, prefix in ((law, "law: "), (retrained, "retrained law: ")):
        drawn = line(ax, prefix)
        assert np.allclose(drawn.get_ydata(), fit(np.asarray(drawn.get_xdata())))
    assert np.allclose(points(ax), np.column_stack([retrained.x, retrained.y]))


def test_plot_fidelity():
    """Proxy against retrained drops, annotated, with τ and ρ in the title."""
    fid = Fidelity(4, 0.67, 0.33, 0.8, 0.2)
    proxy, retrained = [1.0, 2.0, 3.0, 2.5], [0.5, 0.9, 1.4, 1.0]
    fig = plots.figure_fidelity(proxy, retrained, ["a", "b", "c", "d"], fid)
    (ax,) = fig.axes
    assert ax.get_title() == ("proxy fidelity: Kendall τ 0.67 (p 0.33), Spearman ρ 0.80 (p 0.2), "
                              "n=4")
    assert np.allclose(points(ax), np.column_stack([proxy, retrained]))
    assert [(a.get_text(), a.xy) for a in ax.texts] == list(zip("abcd", zip(proxy, retrained)))


def test_plot_sampler_race():
    """One best-so-far line per run, coloured by sampler, and the random runs' 10% threshold."""
    from evoprune.analysis.observations import best_so_far

    studies = [make_study(f"evo{i}", ("flops", 0.5), m=20, seed=i) for i in range(2)]  # nsga2
    studies += [replace(make_study(f"rnd{i}", ("flops", 0.5), m=20, seed=5 + i), sampler="random",
                        numbers=np.arange(20)[::-1].copy()) for i in range(2)]
    fig = plots.figure_sampler_race(studies, quantile=0.1)
    (ax,) = fig.axes
    runs = [ln for ln in ax.get_lines() if ln.get_linestyle() != "--"]
    assert len(runs) == 4
    for ln, s in zip(runs, studies):
        assert list(ln.get_xdata()) == list(range(1, 21))
        assert np.allclose(ln.get_ydata(), best_so_far(s))
        assert ln.get_color() == ("C3" if s.sampler == "nsga2" else "C0")
    rnd = np.concatenate([s.val_drop[~s.is_uniform] for s in studies[2:]])
    t = float(np.quantile(rnd, 0.1))
    threshold = line(ax, "random runs' best 10%")
    assert list(threshold.get_ydata()) == [t, t]
    assert legend(ax) == ["nsga2", "random", f"random runs' best 10% ({t:.2f} pp)"]


def test_sampler_race_draws_observations_best_so_far(monkeypatch):
    """The sampler race's lines are observations.best_so_far (one computation, not a copy)."""
    from evoprune.analysis import observations

    monkeypatch.setattr(observations, "best_so_far", lambda s: np.full(len(s.numbers), 7.0))
    (ax,) = plots.figure_sampler_race([make_study("evo", ("flops", 0.5), m=5)]).axes
    assert list(ax.get_lines()[0].get_ydata()) == [7.0] * 5


def test_tiny_inputs(tmp_path):
    """One regime, one space of 1–2 points, no laws: every function still draws."""
    r = ("flops", 0.25)
    for m in (1, 2):
        s = make_study(f"tiny{m}", r, m=m, uniform=int(m == 2), seed=m)
        g = {r: [s]}
        opt = [optimal_mcb(s.mcb, s.val_drop, regime=r, n_boot=50,
                           uniform_mcb=s.uniform_mcb)]
        figures = {
            "e": (plots.figure_edfs, plots.plot_edfs, ([regime_edfs([s], n_boot=50)],)),
            "d": (plots.figure_distributions, plots.plot_distributions, (g,)),
            "w": (plots.figure_winning_recipes, plots.plot_winning_recipes,
                  ({r: [winning_recipe(s)]},)),
            "b": (plots.figure_best, plots.plot_best, ({r: best_subnetworks([s], 40)},)),
            "c": (plots.figure_mcb_curve, plots.plot_mcb_curve, (opt, None)),
            "l": (plots.figure_law, plots.plot_law, (opt, None)),
            "f": (plots.figure_fidelity, plots.plot_fidelity,
                  ([1.0] * m, [0.5] * m, ["x"] * m, None)),
        }
        for key, (figure, plot, args) in figures.items():
            fig = figure(*args)
            drawn = [ax for ax in panels(fig) if ax.get_lines() or ax.collections or ax.patches]
            assert drawn and "no data" not in texts(fig), (key, m)
            assert_png(plot(*args, tmp_path / f"{key}{m}.png"), tmp_path)


def test_empty_inputs_say_no_data(tmp_path):
    """Empty lists and dicts and None laws give a "no data" figure rather than an error."""
    cases = [
        ("e", plots.figure_edfs, plots.plot_edfs, ([],)),
        ("d", plots.figure_distributions, plots.plot_distributions, ({},)),
        ("d1", plots.figure_distributions, plots.plot_distributions, ({("flops", 0.5): []},)),
        ("w", plots.figure_winning_recipes, plots.plot_winning_recipes, ({},)),
        ("w1", plots.figure_winning_recipes, plots.plot_winning_recipes, ({("flops", 0.5): []},)),
        ("b", plots.figure_best, plots.plot_best, ({},)),
        ("b1", plots.figure_best, plots.plot_best, ({("flops", 0.5): []},)),
        ("c", plots.figure_mcb_curve, plots.plot_mcb_curve, ([], None)),
        ("l", plots.figure_law, plots.plot_law, ([], None)),
        ("f", plots.figure_fidelity, plots.plot_fidelity, ([], [], [], None)),
        ("s", plots.figure_sampler_race, plots.plot_sampler_race, ([],)),
    ]
    for key, figure, plot, args in cases:
        fig = figure(*args)
        for ax in panels(fig):  # every panel says so, and plots nothing
            assert [t.get_text() for t in ax.texts] == ["no data"], key
            assert not (ax.get_lines() or ax.collections or ax.patches), key
        assert_png(plot(*args, tmp_path / f"{key}.png"), tmp_path)


def test_mcb_curve_keeps_only_flops_regimes(optimal, curve, law):
    """A params-only optimum list draws "no data"; a curve alone is still drawn."""
    params_only = [o for o in optimal if o.regime[0] == "params"]
    (ax,) = plots.figure_mcb_curve(params_only, None).axes
    assert [t.get_text() for t in ax.texts] == ["no data"] and not ax.get_lines()
    (ax,) = plots.figure_mcb_curve(params_only, curve).axes  # params optima dropped, curve kept
    assert [ln.get_label()[:5] for ln in ax.get_lines()] == ["fit: "] and not ax.texts
    (ax,) = plots.figure_law([], law).axes
    assert [ln.get_label()[:5] for ln in ax.get_lines()] == ["law: "] and not ax.texts
    assert ax.get_title() == f"{law.form} law, R² {law.r2:.2f}"


def test_creates_missing_folder(tmp_path):
    """A path in a folder that does not exist yet is written."""
    out = plots.plot_edfs([], tmp_path / "sub" / "e.png")
    assert Path(out).is_file()


def test_import_does_not_load_pyplot():
    """Importing the plots module does not import matplotlib.pyplot."""
    code = "import evoprune.analysis.plots, sys; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
