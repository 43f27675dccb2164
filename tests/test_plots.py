"""The figures: every plot function writes a legible PNG, also for tiny, empty or missing inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evoprune.analysis import plots
from evoprune.analysis.edf import best_subnetworks, regime_edfs, winning_recipe
from evoprune.analysis.fit import Fidelity, fit_law, optimal_mcb
from evoprune.analysis.load import StudyData

UNITS = 6


def make_study(name: str, regime: tuple[str, float], m: int = 30, *, c_std: float | None = None,
               uniform: bool = True, seed: int = 0) -> StudyData:
    """A synthetic study of `m` trials (the first one the uniform baseline when `uniform`)."""
    rng = np.random.default_rng(seed)
    kind, c = regime
    recipes = rng.uniform(0.1, 0.8, size=(m, UNITS))
    mcb = rng.normal(1.0, 0.1, m)
    is_uniform = np.zeros(m, dtype=bool)
    if uniform:
        recipes[0] = 1 - np.sqrt(c)
        mcb[0] = 1.0
        is_uniform[0] = True
    target = np.full(m, c) + rng.normal(0, 0.005, m)
    other = c * mcb if kind == "params" else c / mcb
    space = {"kind": "flops" if kind == "flops" else "params", f"c_{kind}": c, "c_std": c_std}
    return StudyData(
        name=name, model="resnet20", dataset="cifar10", space=space,
        proxy={"epochs": 1, "lr": 0.01, "batch_size": 128}, sampler="nsga2", base_acc=0.9,
        units=[f"u{i}" for i in range(UNITS)], numbers=np.arange(m),
        acc_drop=np.abs(rng.normal(3.0, 1.0, m)) + 5 * (mcb - 1.0) ** 2,
        flops_ratio=target if kind == "flops" else other,
        params_ratio=other if kind == "flops" else target,
        mcb=mcb, recipe_std=recipes.std(axis=1), recipes=recipes, is_uniform=is_uniform)


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
        drops = np.concatenate([s.acc_drop for s in g])
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


def test_plot_edfs(groups, tmp_path):
    """One EDF panel per regime, with bands and the uniform baseline."""
    edfs = [regime_edfs(g, n_boot=50) for g in groups.values()]
    assert_png(plots.plot_edfs(edfs, tmp_path / "edfs.png"), tmp_path)


def test_plot_distributions(groups, tmp_path):
    """A grid of histograms, quantities by regimes."""
    assert_png(plots.plot_distributions(groups, tmp_path / "dist.png"), tmp_path)


def test_plot_winning_recipes(groups, tmp_path):
    """Each space's winning recipe per regime."""
    winners = {r: [winning_recipe(s) for s in g] for r, g in groups.items()}
    assert_png(plots.plot_winning_recipes(winners, tmp_path / "win.png"), tmp_path)


def test_plot_best(groups, tmp_path):
    """The best-k subnetworks' cost ratio and mCB per regime, flops and params regimes."""
    best = {r: best_subnetworks(g, 10) for r, g in groups.items()}
    assert_png(plots.plot_best(best, tmp_path / "best.png"), tmp_path)


def test_plot_mcb_curve(optimal, curve, tmp_path):
    """The optimal mCB against the FLOPs reduction with the fitted curve (flops regimes only)."""
    assert_png(plots.plot_mcb_curve(optimal, curve, tmp_path / "curve.png"), tmp_path)


def test_plot_law(optimal, law, tmp_path):
    """Best drop against optimal mCB with the law and a retrained law."""
    retrained = fit_law([0.8, 0.9, 1.0, 1.1, 1.2], [1.0, 1.3, 1.5, 1.9, 2.2], n_boot=50)
    out = plots.plot_law(optimal, law, str(tmp_path / "law.png"), retrained=retrained)
    assert isinstance(out, str)
    assert_png(out, tmp_path)


def test_plot_fidelity(tmp_path):
    """Proxy against retrained drops, annotated, with τ and ρ in the title."""
    fid = Fidelity(4, 0.67, 0.33, 0.8, 0.2)
    out = plots.plot_fidelity([1.0, 2.0, 3.0, 2.5], [0.5, 0.9, 1.4, 1.0], ["a", "b", "c", "d"],
                              fid, tmp_path / "fid.png")
    assert_png(out, tmp_path)


def test_tiny_inputs(tmp_path):
    """One regime, one space of 1–2 points, no laws: every function still draws."""
    r = ("flops", 0.25)
    for m in (1, 2):
        s = make_study(f"tiny{m}", r, m=m, uniform=m == 2, seed=m)
        g = {r: [s]}
        opt = [optimal_mcb(s.mcb, s.acc_drop, regime=r, n_boot=50,
                           uniform_mcb=s.uniform_mcb)]
        paths = [
            plots.plot_edfs([regime_edfs([s], n_boot=50)], tmp_path / f"e{m}.png"),
            plots.plot_distributions(g, tmp_path / f"d{m}.png"),
            plots.plot_winning_recipes({r: [winning_recipe(s)]}, tmp_path / f"w{m}.png"),
            plots.plot_best({r: best_subnetworks([s], 40)}, tmp_path / f"b{m}.png"),
            plots.plot_mcb_curve(opt, None, tmp_path / f"c{m}.png"),
            plots.plot_law(opt, None, tmp_path / f"l{m}.png"),
            plots.plot_fidelity([1.0] * m, [0.5] * m, ["x"] * m, None, tmp_path / f"f{m}.png"),
        ]
        for p in paths:
            assert_png(p, tmp_path)


def test_empty_inputs_say_no_data(tmp_path):
    """Empty lists and dicts and None laws give a "no data" figure rather than an error."""
    paths = [
        plots.plot_edfs([], tmp_path / "e.png"),
        plots.plot_distributions({}, tmp_path / "d.png"),
        plots.plot_distributions({("flops", 0.5): []}, tmp_path / "d1.png"),
        plots.plot_winning_recipes({}, tmp_path / "w.png"),
        plots.plot_winning_recipes({("flops", 0.5): []}, tmp_path / "w1.png"),
        plots.plot_best({}, tmp_path / "b.png"),
        plots.plot_best({("flops", 0.5): []}, tmp_path / "b1.png"),
        plots.plot_mcb_curve([], None, tmp_path / "c.png"),
        plots.plot_law([], None, tmp_path / "l.png"),
        plots.plot_fidelity([], [], [], None, tmp_path / "f.png"),
    ]
    for p in paths:
        assert_png(p, tmp_path)


def test_mcb_curve_keeps_only_flops_regimes(optimal, law, tmp_path):
    """A params-only optimum list draws "no data"; a curve alone is still drawn."""
    params_only = [o for o in optimal if o.regime[0] == "params"]
    assert_png(plots.plot_mcb_curve(params_only, None, tmp_path / "p.png"), tmp_path)
    assert_png(plots.plot_law([], law, tmp_path / "lawonly.png"), tmp_path)


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
