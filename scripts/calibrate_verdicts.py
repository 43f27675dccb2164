"""Calibrate the verdicts of observations (a)–(f) on simulated populations.

`python scripts/calibrate_verdicts.py [--draws 200] [--boot 400] [--seed 0]` draws populations
with a planted null and with a planted effect for each test, runs the test as the reproduction
does, and prints, per case and truth, how often it says holds / not shown / does not hold.
Wanted: under a planted null at most 5% holds and at most 5% does not hold; under the planted
effect at least 80% holds. Sizes are the reproduction's: 48 trials per space and regime (32 for
the small-sample rows), 3 STD spaces, 4–6 regimes, 5 regimes × 3 retraining seeds.

Planted effects (the paper gives few numbers; where it gives none, the choice is stated):
- (a) moderate: the paper finds no difference between STD spaces at c_flops 0.25: planted
  shift 0; null: STD-0.01 shifted by the margin (1 pp) against the others.
- (a) extreme: "STD spaces progressively differ ... STD-0.01 higher consistently" and "many
  STD-0.01 subnetworks beat STD-0.1's winner" at 0.02 (Sec. 3.1, Fig. 2): planted STD-0.01
  drops lower by 1.0, 1.5, 2.5 SD at c_flops 0.1, 0.05, 0.02 (our reading of Fig. 2); null: none.
- (b) winners concentrate (Fig. 3, 5 right): drop grows with (mCB − optimum)², sized so the
  winners' mCB spread is about half that of random subsets (as in our digits run: 0.08 against
  0.17 at c_flops 0.02); null: drop independent of mCB within a space, STD-0.01 1 SD better at
  extreme regimes (the confound the stratified test must see through).
- (c) optimal mCB ≈ 1.0, "rises significantly when the reduction is above 90%", close to the
  uniform recipe's curve "in most regimes" (Sec. 3.2, Fig. 5 right; no numbers): planted optimum
  1.00, 1.00, 1.06, 1.15 at c_flops 0.25, 0.1, 0.05, 0.02, the uniform recipe 0.02 below it
  except at 0.02 (0.12 below); nulls: no rise (all 1.00), or the uniform recipe one margin
  (0.1) away everywhere.
- (d) Conjecture 4 (Fig. 5 left; no numbers): limit = exp(12.3 (mCB − 1.024)) pp through an
  optimal-mCB curve 1 + 0.006 / c_flops (0.5 to 30 pp), 4 FLOPs + 2 params regimes, held-out
  c_flops 0.035; drops log-normal around the limit (SD 0.3 in logs); null: the held-out
  regime's drops 30% (the tolerance) above the law, or 1/1.3 of it.
- (d) beyond the budget: the same planted law against the budget-only null (a log–log line of
  the limit against c_flops); null-budget: every limit exactly 30 (c/0.02)^−1.3 pp, the mCB as
  planted (the budget alone is right): "holds" (the law better) at most 5%; "does not hold"
  (the line better) is then the truth, not an error.
- (f) the paper: the uniform recipe at c_flops 0.259 drops 0.3 pp and the best subnetworks
  none (Sec. 3.1); planted gains 0.3–0.7 pp (mean 0.5) over 5 regimes, each search's winner
  off by N(0, 0.15) pp, retraining noise SD 0.5 pp per network (half of it shared by the pair's
  seed), test drops in steps of 1/360; the unit is the regime × search replicate (t over their
  means, the seeds inside): 2 searches a regime (10 units, the issue-24 plan) must reach 80%;
  with one search a regime (5 units, the Fashion-MNIST run) the power is printed, not required;
  nulls: no gain, or gains −0.4 to +0.4 pp averaging 0.
- Kendall τ inside one regime of 8 retrained networks: null, independent drops; effect,
  retrained = proxy + 0.3 N(0, 1) (correlation ≈ 0.96); the verdict is the sign of τ where
  scipy's two-sided p < α.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from evoprune.analysis import observations as obs
from evoprune.analysis.load import StudyData, by_regime

STEP = 100 / 360  # one test image of 360, in pp
STDS = (0.1, 0.05, 0.01)
SD_FACTOR = {0.1: 1.2, 0.05: 1.0, 0.01: 0.8}  # drop SD of each space, times the regime's
MCB_SD = {0.1: 0.10, 0.05: 0.06, 0.01: 0.02}  # mCB SD of each space, times the regime's
REGIMES = {0.25: (3.0, 1.0, 0.6), 0.1: (10.0, 3.0, 1.0), 0.05: (22.0, 5.0, 1.4),
           0.02: (45.0, 7.0, 1.5)}  # c_flops: (mean drop, drop SD, mCB spread factor)
VERDICTS = (obs.HOLDS, obs.NOT_SHOWN, obs.FAILS)


def make_study(regime: tuple[str, float], drops: np.ndarray, mcb: np.ndarray | None = None, *,
               c_std: float | None = 0.1, seeds: np.ndarray | None = None) -> StudyData:
    """A StudyData of one simulated space (no uniform row)."""
    m = len(drops)
    kind, c = regime
    return StudyData(
        name=f"sim-{c_std}-{kind}{c}", model="sim", dataset="sim",
        space={"kind": "std", f"c_{kind}": c, "c_std": c_std}, proxy={}, sampler="random",
        base_acc=0.9, units=["u"], numbers=np.arange(m), val_drop=np.asarray(drops, float),
        flops_ratio=np.full(m, c), params_ratio=np.full(m, c),
        mcb=np.ones(m) if mcb is None else np.asarray(mcb, float), recipe_std=np.zeros(m),
        recipes=np.zeros((m, 1)), is_uniform=np.zeros(m, bool), seeds=seeds)


def with_uniform(s: StudyData, mcb: float) -> StudyData:
    """The study with one uniform row of the given mCB appended (drop: the population median)."""
    return dataclasses.replace(
        s, numbers=np.append(s.numbers, len(s.numbers)),
        val_drop=np.append(s.val_drop, np.median(s.val_drop)),
        flops_ratio=np.append(s.flops_ratio, s.flops_ratio[0]),
        params_ratio=np.append(s.params_ratio, s.params_ratio[0]),
        mcb=np.append(s.mcb, mcb), recipe_std=np.append(s.recipe_std, 0.0),
        recipes=np.vstack([s.recipes, s.recipes[:1]]), is_uniform=np.append(s.is_uniform, True))


def _std_drops(rng: np.random.Generator, c: float, shifts: dict[float, float], n: int,
               paired: bool) -> list[StudyData]:
    """Three STD spaces at c_flops c: normal drops (space SDs differ), a seed effect shared by
    trial j of every space, STD-0.01 shifted by shifts[c_std] pp, in steps of one test image."""
    mean, sd, _ = REGIMES[c]
    seed_effect = rng.normal(0, 0.4 * sd, n)
    out = []
    for s in STDS:
        d = mean + shifts.get(s, 0.0) + SD_FACTOR[s] * sd * rng.normal(0, 1, n) + seed_effect
        out.append(make_study(("flops", c), np.round(d / STEP) * STEP, c_std=s,
                              seeds=np.arange(n) if paired else None))
    return out


def sim_a_moderate(rng: np.random.Generator, truth: str, n: int = 48, paired: bool = True,
                   margin: float = 1.0) -> obs.Observation:
    """(a) moderate: c_flops 0.25; null: STD-0.01 one margin above the others."""
    shifts = {0.01: margin} if truth == "null" else {}
    groups = by_regime(_std_drops(rng, 0.25, shifts, n, paired))
    return obs.std_equivalence(groups, [0.25], margin=margin)


def sim_a_extreme(rng: np.random.Generator, truth: str, n: int = 48, paired: bool = True
                  ) -> obs.Observation:
    """(a) extreme: c_flops 0.1, 0.05, 0.02; effect: STD-0.01 lower by 1.0, 1.5, 2.5 SD."""
    studies = []
    for c, k in ((0.1, 1.0), (0.05, 1.5), (0.02, 2.5)):
        shifts = {0.01: -k * REGIMES[c][1]} if truth == "effect" else {}
        studies += _std_drops(rng, c, shifts, n, paired)
    return obs.std_extreme(by_regime(studies))


def _mcb_spaces(rng: np.random.Generator, c: float, center: float, n: int, gamma: float,
                better: float) -> list[StudyData]:
    """Three STD spaces at c_flops c: mCB normal around `center` (narrow for STD-0.01), drop =
    mean + gamma·SD·((mCB − center)/pooled mCB SD)² + SD·noise; STD-0.01 `better` SD lower."""
    mean, sd, f = REGIMES[c]
    pooled = f * float(np.sqrt(np.mean([v ** 2 for v in MCB_SD.values()])))
    out = []
    for s in STDS:
        m = center + f * MCB_SD[s] * rng.normal(0, 1, n)
        d = (mean - (better * sd if s == 0.01 else 0.0) + gamma * sd * ((m - center) / pooled) ** 2
             + sd * rng.normal(0, 1, n))
        out.append(make_study(("flops", c), d, m, c_std=s))
    return out


GAMMA = 1.5  # the planted dependence of drop on mCB, in drop SDs per pooled mCB SD squared


def sim_b(rng: np.random.Generator, truth: str, n: int = 48, n_perm: int = 400
          ) -> obs.Observation:
    """(b) four regimes; effect: drop grows with (mCB − 1)²; null: no mCB dependence within a
    space, STD-0.01 better by 1 SD at c_flops ≤ 0.1 (it over-represents among the winners)."""
    studies = []
    for c in REGIMES:
        studies += _mcb_spaces(rng, c, 1.0, n, GAMMA if truth == "effect" else 0.0,
                               1.0 if c <= 0.1 else 0.0)
    return obs.winners_concentrate(by_regime(studies), n_perm=n_perm,
                                   seed=int(rng.integers(2 ** 31)))


C_OPTIMUM = {0.25: 1.0, 0.1: 1.0, 0.05: 1.06, 0.02: 1.15}
C_UNIFORM_GAP = {0.25: 0.02, 0.1: 0.02, 0.05: 0.02, 0.02: 0.12}


def sim_c(rng: np.random.Generator, truth: str, n: int = 48, n_boot: int = 400
          ) -> obs.Observation:
    """(c) four regimes; truth "effect", "null-rise" (optimum 1.0 everywhere) or "null-close"
    (the uniform recipe one margin, 0.1, below the optimum everywhere)."""
    studies = []
    for c in REGIMES:
        center = 1.0 if truth == "null-rise" else C_OPTIMUM[c]
        gap = 0.1 if truth == "null-close" else C_UNIFORM_GAP[c]
        spaces = _mcb_spaces(rng, c, center, n, GAMMA, 0.0)
        studies += [with_uniform(spaces[0], center - gap), *spaces[1:]]
    return obs.optimal_mcb_trend(by_regime(studies), n_boot=n_boot,
                                 seed=int(rng.integers(2 ** 31)))


D_FIT = (("flops", 0.25), ("flops", 0.1), ("flops", 0.05), ("flops", 0.02), ("params", 0.25),
         ("params", 0.1))
D_HELD = ("flops", 0.035)


def d_optimum(regime: tuple[str, float]) -> float:
    """The planted optimal mCB of a regime: 1 + 0.006/c for FLOPs, 0.97 + 0.004/c for params."""
    kind, c = regime
    return 1 + 0.006 / c if kind == "flops" else 0.97 + 0.004 / c


def d_limit(m: float) -> float:
    """The planted law: limit = exp(12.3 (mCB − 1.024)) pp (1 pp at c_flops 0.25, 30 at 0.02)."""
    return float(np.exp(np.log(30) / 0.276 * (m - 1.024)))


def _law_spaces(rng: np.random.Generator, regime: tuple[str, float], n: int, scale: float
                ) -> list[StudyData]:
    """Three STD spaces: mCB around the planted optimum, drops log-normal around the limit."""
    center = d_optimum(regime)
    out = []
    for s in STDS:
        m = center + 0.7 * MCB_SD[s] * rng.normal(0, 1, n)
        d = scale * d_limit(center) * np.exp(0.3 * rng.normal(0, 1, n)
                                             + 0.5 * ((m - center) / 0.05) ** 2)
        out.append(make_study(regime, d, m, c_std=s))
    return out


def d_budget_limit(regime: tuple[str, float]) -> float:
    """The budget-only truth: the limit a power of the budget, 30 · (c / 0.02)^−1.3 pp (0.25 to
    30 pp over c 0.25 to 0.02), whatever the optimal mCB."""
    return float(30 * (regime[1] / 0.02) ** -1.3)


def sim_d(rng: np.random.Generator, truth: str, n: int = 48, n_boot: int = 400,
          tolerance: float = 0.3) -> obs.Observation:
    """(d) six regimes and a held-out one; null: the held-out drops `tolerance` above the law
    (null-low: below it, by the factor 1/(1 + tolerance)); null-budget: every regime's limit a
    power of its budget (`d_budget_limit`, the budget-only null exact), the mCB as planted."""
    scale = {"null": 1 + tolerance, "null-low": 1 / (1 + tolerance)}.get(truth, 1.0)
    if truth == "null-budget":
        studies = [s for r in D_FIT for s in _law_spaces(
            rng, r, n, d_budget_limit(r) / d_limit(d_optimum(r)))]
        held = _law_spaces(rng, D_HELD, n, d_budget_limit(D_HELD) / d_limit(d_optimum(D_HELD)))
        return obs.law_prediction(by_regime(studies), held, n_boot=n_boot, tolerance=tolerance,
                                  seed=int(rng.integers(2 ** 31)))
    studies = [s for r in D_FIT for s in _law_spaces(rng, r, n, 1.0)]
    held = _law_spaces(rng, D_HELD, n, scale)
    return obs.law_prediction(by_regime(studies), held, n_boot=n_boot, tolerance=tolerance,
                              seed=int(rng.integers(2 ** 31)))


F_GAINS = {"effect": (0.3, 0.4, 0.5, 0.6, 0.7), "null": (0.0,) * 5,
           "null-mixed": (-0.4, -0.2, 0.0, 0.2, 0.4)}


def sim_f(rng: np.random.Generator, truth: str, seeds: int = 3, replicates: int = 1,
          n_boot: int = 200) -> obs.Observation:
    """(f) 5 regimes × `replicates` independent searches × `seeds` retraining seeds of the
    winner and the uniform recipe; each search's winner differs from the planted regime gain by
    N(0, 0.15) pp (a search replicate is a draw too); the regime × replicate is the unit."""
    pairs = []
    for c, base, gain in zip((0.25, 0.1, 0.05, 0.035, 0.02), (0.5, 1.0, 3.0, 6.0, 12.0),
                             F_GAINS[truth]):
        for r in range(replicates):
            g = gain + rng.normal(0, 0.15)
            for s in range(seeds):
                shared = rng.normal(0, 0.35)
                u = base + shared + rng.normal(0, 0.35)
                w = base - g + shared + rng.normal(0, 0.35)
                pairs.append((c, s, float(np.round(w / STEP) * STEP),
                              float(np.round(u / STEP) * STEP), r))
    return obs.retrained_vs_uniform(pairs, n_boot=n_boot)  # the t decides; the bootstrap shows


def sim_tau(rng: np.random.Generator, truth: str, n: int = 8, noise: float = 0.3
            ) -> obs.Observation:
    """Kendall τ inside one regime of n retrained networks: null, retrained drops independent of
    the proxy's; effect, retrained = proxy + noise·N(0, 1) (correlation ≈ 0.96 at 0.3). Verdict:
    the sign of τ where scipy's two-sided p < α."""
    from evoprune.analysis.regime_stats import tau_within_regimes

    x = rng.normal(0, 1, n)
    y = x + noise * rng.normal(0, 1, n) if truth == "effect" else rng.normal(0, 1, n)
    (row,) = tau_within_regimes({("flops", 0.1): (x, y)})
    p, tau = row["p"] if row["p"] is not None else 1.0, row["tau"] or 0.0
    verdict = obs.decide(p / 2 if tau > 0 else 1.0, p / 2 if tau < 0 else 1.0, 0.05)
    return obs.Observation("tau", "the proxy ranks inside a regime", verdict, [], {"row": row})


Reader = Callable[[obs.Observation], str]
Case = tuple[str, Callable[..., obs.Observation], dict[str, Any], dict[str, Reader]]


def _whole(o: obs.Observation) -> str:
    return o.verdict


def _part(*keys: str) -> Reader:
    def read(o: obs.Observation) -> str:
        v: Any = o.numbers
        for k in keys:
            v = v[k]
        return str(v)
    return read


def cases(boot: int) -> list[Case]:
    """(case, simulator, its keyword arguments, {reading: which verdict to read})."""
    whole = {"": _whole}
    return [
        ("(a) moderate", sim_a_moderate, {}, whole),
        ("(a) moderate, n 32", sim_a_moderate, {"n": 32}, whole),
        ("(a) moderate, unpaired", sim_a_moderate, {"paired": False}, whole),
        ("(a) extreme", sim_a_extreme, {}, whole),
        ("(a) extreme, n 32", sim_a_extreme, {"n": 32}, whole),
        ("(a) extreme, unpaired", sim_a_extreme, {"paired": False}, whole),
        ("(b)", sim_b, {"n_perm": boot}, {"": _whole, "stratified": _part("stratified", "verdict"),
                                          "within space": _part("within", "verdict")}),
        ("(c)", sim_c, {"n_boot": boot}, {"": _whole, "close": _part("close_verdict"),
                                          "rise": _part("rise_verdict")}),
        ("(d)", sim_d, {"n_boot": boot}, {"": _whole,
                                          "beyond budget": _part("budget_null", "verdict")}),
        ("(f)", sim_f, {"replicates": 2}, whole),
        ("(f), one search a regime", sim_f, {}, whole),
        ("τ within a regime", sim_tau, {}, whole),
    ]


TRUTHS = {sim_c: ("null-close", "null-rise", "effect"),
          sim_d: ("null", "null-low", "null-budget", "effect"),
          sim_f: ("null", "null-mixed", "effect")}


def rates(case: Case, truth: str, draws: int, seed: int) -> dict[str, dict[str, float]]:
    """Per reading, the fractions of holds / not shown / does not hold over `draws` populations."""
    name, sim, kwargs, readers = case
    counts = {r: dict.fromkeys(VERDICTS, 0) for r in readers}
    for i in range(draws):
        o = sim(np.random.default_rng([seed, sum(map(ord, name + truth)), i]), truth, **kwargs)
        for r, read in readers.items():
            counts[r][read(o)] += 1
    return {r: {v: c / draws for v, c in cs.items()} for r, cs in counts.items()}


def calibrate(draws: int = 200, boot: int = 400, seed: int = 0, only: str = ""
              ) -> list[dict[str, Any]]:
    """Every case's rates under each truth, with the seconds each took."""
    out = []
    for case in cases(boot):
        if only and not case[0].startswith(only):
            continue
        for truth in TRUTHS.get(case[1], ("null", "effect")):
            tic = time.perf_counter()
            r = rates(case, truth, draws, seed)
            sec = time.perf_counter() - tic
            out += [{"case": f"{case[0]} {reading}".strip(), "truth": truth, **v, "seconds": sec}
                    for reading, v in r.items()]
    return out


def expected(row: dict[str, Any]) -> str | None:
    """What a row's truth is for the verdict it reads: "null", "effect" (or None: neither)."""
    case, truth = row["case"], row["truth"]
    if case == "(c) close":
        return "null" if truth == "null-close" else "effect"
    if case == "(c) rise":
        return "null" if truth == "null-rise" else "effect"
    if case == "(d) beyond budget":  # the law adds to the budget only where it is planted
        return {"null-budget": "null", "effect": "effect"}.get(truth)
    if case == "(d)" and truth == "null-budget":
        return None  # the law may or may not predict a power of the budget: neither truth
    return "null" if truth.startswith("null") else "effect"


ONE_SIDED = {"(d) beyond budget"}  # under the null the budget is right: only "holds" is an error
POWER_REPORTED = {"(f), one search a regime"}  # its power is printed, not required: 5 units


def violations(rows: list[dict[str, Any]], null_max: float = 0.05, effect_min: float = 0.8
               ) -> list[str]:
    """Rows outside the wanted rates: under a null, holds or does not hold above `null_max`;
    under the effect, holds below `effect_min`."""
    bad = []
    for r in rows:
        want = expected(r)
        wrong = r[obs.HOLDS] if r["case"] in ONE_SIDED else max(r[obs.HOLDS], r[obs.FAILS])
        if want == "null" and wrong > null_max + 1e-9:
            bad.append(f"{r['case']} under {r['truth']}: holds {r[obs.HOLDS]:.3f}, does not hold "
                       f"{r[obs.FAILS]:.3f} (wanted ≤ {null_max:g})")
        if want == "effect" and r[obs.HOLDS] < effect_min - 1e-9 and (
                r["case"] not in POWER_REPORTED):
            bad.append(f"{r['case']} under {r['truth']}: holds {r[obs.HOLDS]:.3f} (wanted ≥ "
                       f"{effect_min:g})")
    return bad


def table(rows: list[dict[str, Any]], draws: int) -> str:
    """The rates as a markdown table."""
    lines = ["| case | truth | holds | not shown | does not hold | s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['truth']} | {r[obs.HOLDS]:.3f} | "
                     f"{r[obs.NOT_SHOWN]:.3f} | {r[obs.FAILS]:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + f"\n\n{draws} draws per row."


def main(argv: list[str] | None = None) -> int:
    """Run the calibration and print the table, the machine and the seconds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--boot", type=int, default=400, help="bootstrap / permutation draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="cases whose name starts with this")
    args = ap.parse_args(argv)
    tic = time.perf_counter()
    rows = calibrate(args.draws, args.boot, args.seed, args.only)
    from evoprune.core.machine import machine

    print(table(rows, args.draws))
    print(f"machine: {machine()}; {time.perf_counter() - tic:.0f} s in all")
    bad = violations(rows)
    print("\n".join(["outside the wanted rates:", *bad]) if bad else
          "every row within the wanted rates (null: ≤ 5% each way; effect: ≥ 80% holds)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
