"""Multi-fidelity selection from a pilot's runs: what successive halving over rungs would pick.

A policy is a tuple of rungs (fine-tune epochs; 0 = adaptive BN only) and a keep fraction: every
recipe is measured at the first rung, the best `ceil(keep · n)` by validation drop go on to the
next rung (a fresh fine-tune of that many epochs from the pruned weights, as the pilot measured
it), and the best at the last rung is selected. `simulate` replays a policy on a pilot's
measurements: one seed per recipe, the same at every rung (a trial has one seed), drawn at random;
recipes resampled with replacement for the interval. It reports the selected recipe's long
fine-tune test drop, its regret against the best recipe of the set, and the cost in fine-tune
epochs (and measured seconds) per recipe. Pure functions of arrays: no training here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evoprune.errors import EvopruneError

Drops = Mapping[int, np.ndarray]  # rung epochs -> (recipes, seeds) validation drops, pp


@dataclass(frozen=True)
class Policy:
    """Successive halving over `rungs` (epochs each; 0: adaptive BN), keeping `keep` per rung."""

    rungs: tuple[int, ...]
    keep: float = 1.0

    def __post_init__(self) -> None:
        """Refuse a policy no search can run."""
        if not self.rungs or min(self.rungs) < 0:
            raise EvopruneError("a policy needs at least one rung of at least 0 epochs")
        if not 0 < self.keep <= 1:
            raise EvopruneError(f"keep must be in (0, 1], got {self.keep}")

    @property
    def label(self) -> str:
        """E.g. '0→1→4, keep 1/3' or 't = 2'."""
        if len(self.rungs) == 1:
            return f"t = {self.rungs[0]}"
        frac = f"1/{round(1 / self.keep)}" if abs(1 / self.keep - round(1 / self.keep)) < 1e-9 \
            else f"{self.keep:g}"
        return "→".join(str(r) for r in self.rungs) + f", keep {frac}"


def survivors(n: int, policy: Policy) -> list[int]:
    """How many recipes each rung measures, out of `n`."""
    out = [n]
    for _ in policy.rungs[1:]:
        out.append(max(1, math.ceil(out[-1] * policy.keep)))
    return out


def cost(n: int, policy: Policy, seconds: Mapping[int, float] | None = None) -> dict[str, float]:
    """Fine-tune epochs per recipe (rung 0 counts none) and, given seconds per run, seconds."""
    counts = survivors(n, policy)
    out = {"epochs": sum(c * r for c, r in zip(counts, policy.rungs, strict=True)) / n}
    if seconds is not None:
        out["seconds"] = sum(c * seconds[r] for c, r in zip(counts, policy.rungs,
                                                            strict=True)) / n
    return out


def ranking(policy: Policy, drops: Drops, recipes: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Each simulated search's slots best first: by the last rung reached, then its drop there
    (the order a search's top-k retraining reads); column 0 is the selected one.

    `recipes` and `seeds` are (sims, n) integer arrays: which recipe each slot holds and which
    seed column its runs read (taken modulo the rung's number of seeds)."""
    sims, n = recipes.shape
    alive = np.ones((sims, n), dtype=bool)
    key = np.zeros((sims, n))
    for i, rung in enumerate(policy.rungs):
        table = np.asarray(drops[rung], dtype=float)
        vals = table[recipes, seeds % table.shape[1]]
        # a later rung outranks an earlier one: offset by the rung (drops are below 1e4 pp)
        key = np.where(alive, vals - 1e4 * i, key)
        if i < len(policy.rungs) - 1:
            k = survivors(n, policy)[i + 1]
            order = np.argsort(np.where(alive, vals, np.inf), axis=1, kind="stable")
            alive = np.zeros_like(alive)
            np.put_along_axis(alive, order[:, :k], True, axis=1)
    return np.argsort(key, axis=1, kind="stable")


def select(policy: Policy, drops: Drops, recipes: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The slot each simulated search selects (the best at its last rung)."""
    return ranking(policy, drops, recipes, seeds)[:, 0]


def simulate(policies: Sequence[Policy], drops: Drops, long: np.ndarray, *,
             seconds: Mapping[int, float] | None = None, reference: Policy | None = None,
             n_boot: int = 1000, n_seed: int = 64, seed: int = 0, top_k: int = 3,
             level: float = 0.95) -> list[dict[str, Any]]:
    """Each policy's selected long test drop and regret (pp), with intervals, and its cost;
    also the regret of its `top_k` best (their mean long drop minus the best k's mean: what
    top-k retraining gets).

    The estimate averages `n_seed` random seed assignments on the recipes as measured; the
    interval resamples recipes with replacement (`n_boot` draws, each averaging `n_seed // 4`
    seed assignments). The difference from `reference` is paired: the same draws and seeds."""
    long = np.asarray(long, dtype=float)
    n = len(long)
    n_seeds = max(np.asarray(d).shape[1] for d in drops.values())
    rng = np.random.default_rng(seed)
    base_idx = np.tile(np.arange(n), (n_seed, 1))
    base_seeds = rng.integers(0, n_seeds, (n_seed, n))
    inner = max(1, n_seed // 4)
    boot_idx = np.repeat(rng.integers(0, n, (n_boot, n)), inner, axis=0)
    boot_seeds = rng.integers(0, n_seeds, (n_boot * inner, n))
    a = (1 - level) / 2

    def regret(policy: Policy, idx: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, ...]:
        order = np.take_along_axis(idx, ranking(policy, drops, idx, seeds), axis=1)
        chosen = long[order[:, 0]]
        best = np.sort(long[idx], axis=1)
        top = long[order[:, :top_k]].mean(1) - best[:, :top_k].mean(1)
        return chosen, chosen - best[:, 0], top

    def boot(policy: Policy) -> tuple[np.ndarray, np.ndarray]:
        _, reg, top = regret(policy, boot_idx, boot_seeds)
        return reg.reshape(n_boot, inner).mean(1), top.reshape(n_boot, inner).mean(1)

    ref, ref_top = boot(reference) if reference is not None else (None, None)
    ref_est = regret(reference, base_idx, base_seeds) if reference is not None else None
    rows = []
    for policy in policies:
        chosen, reg, top = regret(policy, base_idx, base_seeds)
        draws, top_draws = boot(policy)
        lo, hi = np.quantile(draws, [a, 1 - a])
        row = {"policy": policy.label, "rungs": list(policy.rungs), "keep": policy.keep,
               "measured": survivors(n, policy), **cost(n, policy, seconds),
               "test_drop": float(chosen.mean()), "regret": float(reg.mean()),
               "regret_lo": float(lo), "regret_hi": float(hi),
               "p_best": float(np.mean(reg == 0)), "top_k": top_k,
               "top_regret": float(top.mean())}
        t_lo, t_hi = np.quantile(top_draws, [a, 1 - a])
        row.update(top_lo=float(t_lo), top_hi=float(t_hi))
        if ref is not None and ref_top is not None and ref_est is not None \
                and reference is not None:
            for name, mine, theirs, est, ref_e in (
                    ("vs_reference", draws, ref, reg, ref_est[1]),
                    ("top_vs_reference", top_draws, ref_top, top, ref_est[2])):
                d_lo, d_hi = np.quantile(mine - theirs, [a, 1 - a])
                row[name] = {"reference": reference.label,
                             "diff": float(est.mean() - ref_e.mean()),
                             "lo": float(d_lo), "hi": float(d_hi)}
        rows.append(row)
    return rows


def random_regret(long: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """Regret of picking a recipe at random (no proxy at all): mean minus best, with interval."""
    long = np.asarray(long, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(long), (n_boot, len(long)))
    draws = long[idx].mean(1) - long[idx].min(1)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"regret": float(long.mean() - long.min()), "regret_lo": float(lo),
            "regret_hi": float(hi)}


def default_policies(available: Sequence[int]) -> list[Policy]:
    """Single rungs and successive-halving ladders over the rungs a pilot measured."""
    have = set(available)
    singles = [Policy((t,)) for t in sorted(have)]
    ladders = [(0, 1), (0, 2), (0, 4), (0, 8), (1, 4), (2, 8), (0, 1, 4), (0, 2, 8), (1, 2, 8),
               (0, 1, 2, 8), (0, 1, 4, 8)]
    out = list(singles)
    for rungs in ladders:
        if set(rungs) <= have:
            out += [Policy(rungs, 1 / 2), Policy(rungs, 1 / 3)]
    return out


def verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Which policies the paired intervals show better or worse than the reference (lower or
    higher regret, the 95% interval of the difference excluding 0); the rest are not shown."""
    paired = [r for r in rows if "vs_reference" in r]
    if not paired:
        return {"reference": None, "better": [], "worse": [], "top_better": [],
                "top_worse": [], "supports": None}
    ref = paired[0]["vs_reference"]["reference"]
    ref_row = next((r for r in rows if r["policy"] == ref), None)
    better = [r["policy"] for r in paired if r["vs_reference"]["hi"] < 0]
    worse = [r["policy"] for r in paired if r["vs_reference"]["lo"] > 0]
    top_better = [r["policy"] for r in paired
                  if "top_vs_reference" in r and r["top_vs_reference"]["hi"] < 0]
    top_worse = [r["policy"] for r in paired
                 if "top_vs_reference" in r and r["top_vs_reference"]["lo"] > 0]
    cheaper = [r["policy"] for r in paired if ref_row is not None and r["policy"] != ref
               and r["epochs"] < ref_row["epochs"] and r["policy"] not in worse]
    if better:
        best = min((r for r in paired if r["policy"] in better), key=lambda r: r["epochs"])
        supports = f"{best['policy']}: lower regret than {ref}, shown (paired 95% interval)"
    else:
        supports = (f"keeping {ref}: no policy's regret is shown lower (not shown either way "
                    f"for {len(paired) - len(worse) - 1} of {len(paired) - 1})")
    return {"reference": ref, "better": better, "worse": worse, "top_better": top_better,
            "top_worse": top_worse,
            "cheaper_not_shown_worse": cheaper, "supports": supports}
