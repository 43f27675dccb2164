"""Accuracy-drop EDFs per space with bootstrap bands, KS tests between spaces, distributions.

F(e) = (1/n) Σ 1[e_i < e] over the n subnetworks of a space (the paper's Eq. 1): the fraction of
a space better than drop e. A space whose EDF lies higher is cheaper to search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from evoprune.analysis.load import StudyData


def edf(values: Sequence[float] | np.ndarray, at: Sequence[float] | np.ndarray) -> np.ndarray:
    """F(e) = (1/n) Σ 1[e_i < e] of `values`, evaluated at each point of `at` (Eq. 1)."""
    v = np.sort(np.asarray(values, dtype=float))
    return np.searchsorted(v, np.asarray(at, dtype=float), side="left") / len(v)


def edf_band(values: Sequence[float] | np.ndarray, at: Sequence[float] | np.ndarray, *,
             n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bootstrap interval (percentile) of the EDF at `at`: (lower, upper)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.sort(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
    at = np.asarray(at, dtype=float)
    f = np.stack([np.searchsorted(row, at, side="left") for row in draws]) / len(v)
    a = (1 - level) / 2
    return np.quantile(f, a, axis=0), np.quantile(f, 1 - a, axis=0)


class KS(NamedTuple):
    """Two-sample Kolmogorov–Smirnov test between two spaces' drops (scipy.stats.ks_2samp)."""

    a: str
    b: str
    n_a: int
    n_b: int
    statistic: float
    pvalue: float


def ks_test(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> KS:
    """KS statistic and p-value of two drop samples."""
    from scipy.stats import ks_2samp

    r = ks_2samp(a, b)
    return KS(a_name, b_name, len(a), len(b), float(r.statistic), float(r.pvalue))


class SpaceEDF(NamedTuple):
    """One space's EDF in a regime: grid, F, bootstrap band, and its share beating the baseline."""

    study: str
    label: str
    n: int
    grid: np.ndarray
    F: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    beats_uniform: float | None  # fraction of the space with a lower drop than the uniform recipe


class RegimeEDFs(NamedTuple):
    """The EDFs of every space of one regime, their pairwise KS tests and the uniform baseline."""

    regime: tuple[str, float]
    uniform_drop: float | None
    spaces: list[SpaceEDF]
    ks: list[KS]


def regime_edfs(studies: list[StudyData], *, points: int = 200, n_boot: int = 1000,
                level: float = 0.95, seed: int = 0) -> RegimeEDFs:
    """EDFs on a common grid for the studies of one regime, KS tests between every pair."""
    if not studies or len({s.regime for s in studies}) != 1:
        raise ValueError("regime_edfs takes the studies of exactly one regime")
    pops = [s.val_drop[population(s)] for s in studies]
    allv = np.concatenate(pops)
    span = max(float(allv.max() - allv.min()), 1e-9)
    grid = np.linspace(allv.min() - 0.02 * span, allv.max() + 0.02 * span, points)
    uniform = [s.uniform_drop for s in studies if s.uniform_drop is not None]
    u = float(np.median(uniform)) if uniform else None
    spaces = []
    for i, (s, v) in enumerate(zip(studies, pops)):
        lo, hi = edf_band(v, grid, n_boot=n_boot, level=level, seed=seed + i)
        spaces.append(SpaceEDF(s.name, s.label, len(v), grid, edf(v, grid), lo, hi,
                               float(np.mean(v < u)) if u is not None else None))
    ks = [ks_test(studies[i].name, pops[i], studies[j].name, pops[j])
          for i in range(len(studies)) for j in range(i + 1, len(studies))]
    return RegimeEDFs(studies[0].regime, u, spaces, ks)


class Distribution(NamedTuple):
    """Quantiles (5, 25, 50, 75, 95%) of one quantity over one space's population."""

    study: str
    label: str
    quantity: str
    n: int
    mean: float
    quantiles: list[float]


QUANTITIES = ("recipe_std", "flops_ratio", "params_ratio", "mcb")


def distributions(study: StudyData) -> list[Distribution]:
    """Recipe std, FLOPs ratio, params ratio and mCB distributions of a space (Fig. 2 rows 2–5)."""
    out = []
    for q in QUANTITIES:
        v = getattr(study, q)[population(study)]
        out.append(Distribution(study.name, study.label, q, len(v), float(v.mean()),
                                [float(x) for x in np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])]))
    return out


class Winner(NamedTuple):
    """A winning subnetwork: its study, trial, drop, cost and recipe."""

    study: str
    label: str
    number: int
    val_drop: float
    flops_ratio: float
    params_ratio: float
    mcb: float
    recipe_std: float
    recipe: list[float]


def _winner(s: StudyData, i: int) -> Winner:
    return Winner(s.name, s.label, int(s.numbers[i]), float(s.val_drop[i]),
                  float(s.flops_ratio[i]), float(s.params_ratio[i]), float(s.mcb[i]),
                  float(s.recipe_std[i]), [float(r) for r in s.recipes[i]])


def population(study: StudyData) -> np.ndarray:
    """Indices of a space's population: its distinct sampled networks, neither the uniform recipe
    nor a heuristic baseline nor a repeat of an earlier trial's network (all if none is left)."""
    idx = np.flatnonzero(study.distinct)
    return idx if len(idx) else np.arange(len(study.val_drop))


def winning_recipe(study: StudyData) -> Winner:
    """The best subnetwork of a space's population (the paper's last figure row)."""
    idx = population(study)
    return _winner(study, int(idx[np.argmin(study.val_drop[idx])]))


def best_subnetworks(studies: list[StudyData], k: int = 40) -> list[Winner]:
    """The k best subnetworks across the spaces of one regime (Fig. 3), best first."""
    rows = [(float(s.val_drop[i]), s.name, int(i), s) for s in studies for i in population(s)]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [_winner(s, i) for _, _, i, s in rows[:k]]
