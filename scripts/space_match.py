"""How the spaces' samplers match the paper: `python scripts/space_match.py [--n N] [--out FILE]`.

On resnet20 (digits, 1x8x8, residual units), for the initial, mCB-1 and STD-x spaces at
c_flops 0.25, 0.1, 0.05 and 0.02, prints (and writes as markdown with --out):

1. the random sampler against exact rejection (initial and mCB): KS p-values of the Gibbs
   sampler (what `Decoder.sample` uses where rejection is slow) against uniform ratios kept
   when every band holds, where rejection gets n draws within --budget seconds (min over the
   units, recipe std, mCB), and a two-start check everywhere: Gibbs chains all started at the
   neutral genotype's recipe against chains started at decoded uniform genotypes; and the
   decode of uniform genotypes (NSGA-II's map) against rejection, for scale;
2. the share of units at r_max, at r_max's channel count and with at most one channel (a
   draw from the paper's distribution is never exactly at r_max), for the decode
   before issue 13 (rebuilt below: an additive common offset, mCB's second offset along log
   FLOPs-per-param, STD's scale solved so every recipe's std is c_std), the decode now (the
   map NSGA-II uses, of uniform genotypes) and `sample` (the random sampler), with the
   milliseconds of one `sample(1, seed)`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import ks_2samp

from evoprune.core.machine import machine
from evoprune.network.cost import CostModel
from evoprune.network.models import build_model
from evoprune.network.units import find_units
from evoprune.spaces import Decoder, PruningSpace
from evoprune.spaces.repair import repair
from evoprune.spaces.sampling import reject
from evoprune.spaces.solvers import bisect, relaxed, solve_offset

REGIMES = (0.25, 0.1, 0.05, 0.02)
SPACES: dict[str, dict[str, float]] = {
    "initial": {}, "mCB-1": {"c_mcb": 1.0},
    "STD-0.1": {"c_std": 0.1}, "STD-0.05": {"c_std": 0.05}, "STD-0.01": {"c_std": 0.01}}


def cost_model() -> CostModel:
    """resnet20 at the digits' input size, residual-coupled groups searched too (12 units)."""
    model = build_model("resnet20", 10, (1, 8, 8))
    return CostModel(model, find_units(model, (1, 8, 8), residual=True))


# ---------------------------------------------------------------- the decode before issue 13
def old_continuous(d: Decoder, g: np.ndarray) -> np.ndarray:
    """The relaxed map before issue 13 (solvers.py at e44af35), for the three space kinds."""
    b, r_max = d.bound, d.space.r_max
    if d.space.c_std is not None:
        return _old_std(d, g)
    base = r_max * g
    if d.space.c_mcb is None:
        return np.clip(base + solve_offset(b, base, b.target, False)[:, None], 0.0, r_max)
    fm, pm = d.cost.marginals()
    dens = np.log(np.maximum(fm, 1e-12) / np.maximum(pm, 1e-12))
    direction = (dens - dens.mean()) / dens.std()

    def mcb_at(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shifted = base + s[:, None] * direction
        r = np.clip(shifted + solve_offset(b, shifted, b.target, False)[:, None], 0.0, r_max)
        f, p = relaxed(b, r)
        return f / p, r

    span, goal = np.full(len(g), 8.0 * r_max), d.space.c_mcb
    (h_lo, r_lo), (h_hi, r_hi) = mcb_at(-span), mcb_at(span)
    rising = h_hi >= h_lo
    r = mcb_at(bisect(-span, span, lambda mid: (mcb_at(mid)[0] < goal) == rising, 20))[1]
    low_end, high_end = np.where(rising[:, None], r_lo, r_hi), np.where(rising[:, None], r_hi, r_lo)
    r = np.where(np.where(rising, goal <= h_lo, goal <= h_hi)[:, None], low_end, r)
    return np.where(np.where(rising, goal >= h_hi, goal >= h_lo)[:, None], high_end, r)


def _old_std(d: Decoder, g: np.ndarray) -> np.ndarray:
    """STD before issue 13: z standardised per row, scale σ ≥ c_std so that std = c_std."""
    b, goal, r_max = d.bound, d.space.c_std, d.space.r_max
    z = ndtri(np.clip(g, 1e-6, 1 - 1e-6))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)

    def at(sigma: np.ndarray, rows: np.ndarray) -> np.ndarray:
        base = sigma[:, None] * z[rows]
        return np.clip(base + solve_offset(b, base, b.target, False)[:, None], 0.0, r_max)

    every = np.arange(len(g))
    r = at(np.full(len(g), goal), every)
    short = np.flatnonzero(r.std(1) < goal * (1 - 1e-6))
    if len(short):
        lo, hi = np.full(len(short), goal), np.full(len(short), 8.0 * goal + r_max)
        r[short] = at(bisect(lo, hi, lambda s: at(s, short).std(1) < goal, 20), short)
    return r


def old_decode(d: Decoder, g: np.ndarray) -> np.ndarray:
    """The old map, then the exact repair (the std band is gone from the repair's violation)."""
    r, inside = repair(d.bound, old_continuous(d, g))
    return r[inside]


# --------------------------------------------------------------------------- measurements
def shares(d: Decoder, recipes: np.ndarray) -> str:
    """Shares of units 'at r_max / keeping r_max's channel count / keeping ≤ 1 channel'."""
    out = d.describe(recipes)
    return (f"{(recipes >= d.space.r_max - 1e-9).mean():.1%} / "
            f"{(out.kept == d.bound.kmin).mean():.1%} / {(out.kept <= 1).mean():.1%}")


def ks_min(d: Decoder, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Smallest KS p-value over the units' ratios, and the p of recipe std and of mCB."""
    da, db = d.describe(a), d.describe(b)
    units = min(ks_2samp(a[:, u], b[:, u]).pvalue for u in range(a.shape[1]))
    return units, ks_2samp(da.std, db.std).pvalue, ks_2samp(da.mcb, db.mcb).pvalue


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn() and its seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def match_row(d: Decoder, n: int, budget: float) -> dict[str, str]:
    """Gibbs against rejection where rejection fits the budget, and the two-start check."""
    pilot, pilot_s = timed(lambda: reject(d.bound, 10**9, np.random.default_rng(0), 32768, 32768))
    rate = len(pilot[0]) / max(pilot_s, 1e-9)  # accepted per second
    starts = d.decode(np.random.default_rng(2).random((n, d.n_genes))).recipes
    gibbs, gibbs_s = timed(lambda: d.sampler.gibbs(starts, seed=3))
    row = {"acceptance": f"{len(pilot[0]) / 32768:.1e}", "gibbs": f"n {n}, {gibbs_s:.1f} s"}
    if rate > 0 and n / rate <= budget:
        (exact, draws), reject_s = timed(
            lambda: reject(d.bound, n, np.random.default_rng(1), 10**10, 65536))
        units, std, mcb = ks_min(d, exact, gibbs)
        row["reject"] = f"n {n} of {draws:,} draws, {reject_s:.1f} s"
        row["ks"] = f"{units:.3f} / {std:.3f} / {mcb:.3f}"
        row["decode_ks"] = "{:.2g} / {:.2g} / {:.2g}".format(*ks_min(d, exact, starts))
    else:
        row["reject"] = f"> {budget:g} s (skipped)"
        row["ks"] = row["decode_ks"] = "–"
    neutral = d.decode(np.full((1, d.n_genes), 0.5)).recipes
    one_start = d.sampler.gibbs(np.repeat(neutral, n, 0), seed=4)
    row["two_start"] = "{:.3f} / {:.3f} / {:.3f}".format(*ks_min(d, one_start, gibbs))
    return row


def share_row(d: Decoder, n: int) -> dict[str, str]:
    """Shares at r_max / ≤ 1 channel: old decode, new decode, sample; and sample(1)'s ms."""
    g = np.random.default_rng(0).random((n, d.n_genes))
    drawn, sample_s = timed(lambda: d.sample(n, seed=0).recipes)
    d.sample(1, seed=1)  # warm: the sampler's tables are built once per decoder
    _, one_s = timed(lambda: [d.sample(1, seed=s) for s in range(5)])
    return {"old": shares(d, old_decode(d, g[:, : d.n])), "decode": shares(d, d.decode(g).recipes),
            "sample": shares(d, drawn), "sample_s": f"{sample_s:.1f}",
            "one_ms": f"{one_s / 5 * 1000:.0f}"}


def report(n: int, budget: float) -> str:
    """Run every space and regime; return the markdown."""
    cost = cost_model()
    match = ["| space | c_flops | acceptance | rejection | Gibbs | KS p: units / std / mCB "
             "| two starts p | decode now vs rejection p |", "|---|---|---|---|---|---|---|---|"]
    share = ["| space | c_flops | before: at r_max / r_max's width / ≤1 ch | decode now | sample "
             "| sample(n) s | sample(1) ms |", "|---|---|---|---|---|---|---|"]
    for name, extra in SPACES.items():
        for c_flops in REGIMES:
            d = Decoder(PruningSpace(c_flops=c_flops, **extra), cost)
            if d.space.c_std is None:
                m = match_row(d, n, budget)
                match.append(f"| {name} | {c_flops} | {m['acceptance']} | {m['reject']} | "
                             f"{m['gibbs']} | {m['ks']} | {m['two_start']} | {m['decode_ks']} |")
            s = share_row(d, n)
            share.append(f"| {name} | {c_flops} | {s['old']} | {s['decode']} | {s['sample']} | "
                         f"{s['sample_s']} | {s['one_ms']} |")
            print(match[-1] if d.space.c_std is None else "", share[-1], sep="\n", flush=True)
    return "\n".join([
        "## Sampler against exact rejection (resnet20, digits, residual units)", "",
        f"machine: {machine()}; n = {n} per sample, rejection budget {budget:g} s", "",
        *match, "", "## Unit shares at r_max / at r_max's channel count / with at most one "
        "channel", "", *share, ""])


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print and write the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="draws per sample (default 1000)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds rejection may take for n draws (default 20)")
    parser.add_argument("--out", help="write the markdown here")
    args = parser.parse_args(argv)
    text = report(args.n, args.budget)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
