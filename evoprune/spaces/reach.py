"""Reachability of a bound space: in-band recipes found (witnesses) or emptiness proved.

`explore` decides whether any recipe lies in every band after channel rounding, and never
calls a space empty without a proof:

1. exact enumeration of every kept-count vector when there are at most ENUM_LIMIT of them;
2. else the greedy repair of the neutral genotype's recipe (the usual witness, as cheap as the
   check it replaces);
3. else a termwise interval bound on the whole box of kept counts (the FLOPs or params floor);
4. else a branch and bound over boxes of kept-count levels: a box is refuted by the termwise
   interval bound of each band's quadratic form (sound whatever the signs) or, while the LP
   budget lasts, by the LP relaxation of the bands with McCormick envelopes for the products
   (scipy's HiGHS); a box of one point is judged on the exact integer cost, and each LP's
   solution rounded to levels is a candidate witness;
5. if the budgets ran out, the greedy repair from many starts: random and extreme genotypes
   through the space's own map, tilted recipes at both ends of the second band's reach,
   uniform random ratios, the all-0 and all-r_max recipes and the rounded LP solutions.

A space is *proven empty* only when enumeration or the branch and bound closes every box.
Witnesses become the bound's anchors: `repair` walks a row it cannot fix toward the nearest.
When the budgets run out before either, the space is undecided (no anchors, not empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from evoprune.network.units import kept_channels
from evoprune.spaces.repair import ratios_for, repair
from evoprune.spaces.solvers import continuous, tilt_one, tilt_pair

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound

ENUM_LIMIT = 1 << 18  # kept-count vectors enumerated exactly (about 0.1 s at this size)
ENUM_CHUNK = 1 << 16  # vectors judged at once
MAX_ANCHORS = 256  # witnesses kept (spread evenly over the enumerated in-band set)
MAX_BOXES = 20_000  # boxes the branch and bound judges before giving up (undecided)
MAX_LP = 48  # LP relaxations it solves (each a few ms)
LP_MIN_POINTS = 4096  # a box with fewer level combinations is left to the interval bound
BOX_BATCH = 256  # boxes judged at once
LP_SLACK = 1e-7  # the LP's bands widened by this (ratio units): HiGHS's tolerances never refute
MARGIN = 1e-12  # an interval bound refutes a band only by more than this (float sums)


@dataclass(frozen=True)
class Reach:
    """What `explore` found: witnesses, or a proof that none exists, or neither (undecided)."""

    anchors: np.ndarray  # (A, N) in-band recipes (A = 0 when none was found)
    empty: bool  # proven: no recipe lies in every band
    how: str  # enumeration, interval, search, branch and bound, undecided
    nearest: tuple[float, float] | None = None  # enumerated, single band: nearest primary ratios


@dataclass(frozen=True)
class Forms:
    """The bands as constraints lo ≤ const + lin·k + Σ coef·k_i·k_j ≤ hi on kept counts k."""

    pi: np.ndarray  # (P,) first unit of each product (pi ≤ pj; pi == pj for squares)
    pj: np.ndarray  # (P,) second unit
    coef: np.ndarray  # (C, P) each constraint's product coefficients (ratio units)
    lin: np.ndarray  # (C, N)
    const: np.ndarray  # (C,)
    lo: np.ndarray  # (C,) -inf where open
    hi: np.ndarray  # (C,) +inf where open
    weight: np.ndarray  # (N,) how much the FLOPs and params ratios move per kept channel (at most)


def unit_levels(c: int, rt: int, r_max: float) -> np.ndarray:
    """Kept counts one unit reaches for ratios in [0, r_max], ascending.

    `kept_channels` itself is the oracle: it is asked at 0, r_max and around every ratio
    1 - m·rt/c where a count m·rt sits, so the levels follow its rounding rule whatever it is.
    """
    m = np.arange(c // rt + 2)[:, None] + np.array([-0.25, 0.0, 0.25])
    r = np.append((1.0 - m * rt / c).ravel(), [0.0, r_max])
    r = r[(r >= 0.0) & (r <= r_max)]
    return np.unique(kept_channels(np.array([c]), r[:, None], rt)).astype(np.int64)


def all_levels(b: Bound) -> list[np.ndarray]:
    """Every unit's levels (see `unit_levels`)."""
    return [unit_levels(int(c), int(rt), b.space.r_max) for c, rt in zip(b.cost.channels, b.rt)]


def recipes_of(b: Bound, kept: np.ndarray) -> np.ndarray:
    """Ratios keeping exactly `kept` (M, N), each at its level's centre where it can."""
    return ratios_for(b, kept, 1.0 - kept / b.c)


def in_band(b: Bound, kept: np.ndarray) -> np.ndarray:
    """Whether kept-count rows (M, N) lie inside every band (the exact integer cost)."""
    return b.violation(kept, kept.astype(np.float64)) == 0


def enumerate_inside(b: Bound, levels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every in-band kept vector (lexicographic order) and the primary ratio of every vector."""
    counts = [len(k) for k in levels]
    total = math.prod(counts)
    inside, primary = [], []
    for start in range(0, total, ENUM_CHUNK):
        idx = np.unravel_index(np.arange(start, min(start + ENUM_CHUNK, total)), counts)
        kept = np.stack([k[i] for k, i in zip(levels, idx, strict=True)], axis=1)
        flops, params = b.cost.batch(kept)
        primary.append(params / b.cost.base_params if b.use_params else flops / b.cost.base_flops)
        inside.append(kept[b.violation(kept, kept.astype(np.float64)) == 0])
    return np.concatenate(inside), np.concatenate(primary)


def spread(rows: np.ndarray, m: int) -> np.ndarray:
    """At most m rows, evenly spaced over `rows` (all of them when there are fewer)."""
    if len(rows) <= m:
        return rows
    return rows[np.linspace(0, len(rows) - 1, m).round().astype(np.int64)]


def forms(b: Bound) -> Forms:
    """The bands as quadratic constraints, read off `cost.batch` by polarisation (exact)."""
    s, cost, n = b.space, b.cost, b.n
    eye = np.eye(n, dtype=np.int64)
    iu, ju = np.triu_indices(n, 1)
    rows = np.concatenate([np.zeros((1, n), np.int64), eye, 2 * eye, eye[iu] + eye[ju]])
    parts = []
    for v, base in zip(cost.batch(rows), (cost.base_flops, cost.base_params), strict=True):
        zero, one, two, pair = v[0], v[1: n + 1], v[n + 1: 2 * n + 1], v[2 * n + 1:]
        square = (two - 2 * one + zero) // 2
        parts.append(((one - zero - square) / base,
                      np.concatenate([square, pair - one[iu] - one[ju] + zero]) / base,
                      zero / base))
    (lf, qf, cf), (lp, qp, cp) = parts
    pi, pj = np.concatenate([np.arange(n), iu]), np.concatenate([np.arange(n), ju])
    lin, coef, const, lo, hi = [], [], [], [], []

    def add(weights: tuple[float, float], low: float, high: float) -> None:
        lin.append(weights[0] * lf + weights[1] * lp)
        coef.append(weights[0] * qf + weights[1] * qp)
        const.append(weights[0] * cf + weights[1] * cp)
        lo.append(low)
        hi.append(high)

    if s.c_flops is not None:
        top = s.c_flops_max if s.c_flops_max is not None else s.c_flops
        add((1.0, 0.0), s.c_flops - s.delta, top + s.delta)
    if s.c_params is not None:
        add((0.0, 1.0), s.c_params - s.delta, s.c_params + s.delta)
    if s.c_mcb is not None:  # (c - tol)·p ≤ f ≤ (c + tol)·p
        add((1.0, -(s.c_mcb + s.mcb_tol)), -np.inf, 0.0)
        add((1.0, -(s.c_mcb - s.mcb_tol)), 0.0, np.inf)
    coef_all = np.array(coef)
    used = (coef_all != 0).any(0)
    c = b.c
    reach = np.abs(lf) + np.abs(lp)
    np.add.at(reach, pi, (np.abs(qf) + np.abs(qp)) * c[pj])
    np.add.at(reach, pj, (np.abs(qf) + np.abs(qp)) * c[pi])
    return Forms(pi[used], pj[used], coef_all[:, used], np.array(lin), np.array(const),
                 np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64), reach)


def refuted(f: Forms, a: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Boxes (M, N) of kept counts [a, z] where some band's termwise bound excludes every point.

    Each term is bounded alone over the box (a product at its four corners, k ≥ 0), so the
    bound holds whatever the signs (mCB mixes them) and is exact on a box of one point.
    """
    ai, aj, zi, zj = a[:, f.pi], a[:, f.pj], z[:, f.pi], z[:, f.pj]
    corners = np.stack([ai * aj, ai * zj, zi * aj, zi * zj], axis=-1)  # (M, P, 4)
    terms = f.coef[None, :, :, None] * corners[:, None]  # (M, C, P, 4)
    ends = np.stack([a, z], axis=-1)[:, None] * f.lin[None, :, :, None]  # (M, C, N, 2)
    top = terms.max(-1).sum(-1) + ends.max(-1).sum(-1) + f.const
    bottom = terms.min(-1).sum(-1) + ends.min(-1).sum(-1) + f.const
    return ((top < f.lo - MARGIN) | (bottom > f.hi + MARGIN)).any(1)


def lp_relaxation(b: Bound, f: Forms, a: np.ndarray, z: np.ndarray) -> np.ndarray | None:
    """Real kept counts in [a, z] meeting the bands' McCormick LP relaxation, or None if none.

    Each product k_i·k_j becomes a variable between its McCormick envelopes over the box, so
    every integer point of the box meets the LP: infeasible proves the box holds no recipe.
    Variables are scaled to u = k / c. A solver failure counts as feasible (no proof).
    """
    n, c = b.n, b.c
    lo_u, hi_u = a / c, z / c
    npair = len(f.pi)
    pi, pj = f.pi, f.pj
    ci, cj = c[pi], c[pj]
    lin = f.lin * c  # per u
    coef = f.coef * ci * cj  # per w = u_i·u_j
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    for k in range(len(f.const)):  # the bands, widened by LP_SLACK
        for sign, bound in ((1.0, f.hi[k]), (-1.0, f.lo[k])):
            if np.isfinite(bound):
                rows += [r] * (n + npair)
                cols += list(range(n + npair))
                vals += list(sign * np.concatenate([lin[k], coef[k]]))
                rhs.append(sign * (bound - f.const[k]) + LP_SLACK)
                r += 1
    ai, bi, aj, bj = lo_u[pi], hi_u[pi], lo_u[pj], hi_u[pj]
    w = n + np.arange(npair)
    for ui_c, uj_c, wc, const in ((aj, ai, -1.0, ai * aj), (bj, bi, -1.0, bi * bj),
                                  (-bj, -ai, 1.0, -ai * bj), (-aj, -bi, 1.0, -bi * aj)):
        rr = r + np.arange(npair)
        rows += list(rr) * 3
        cols += list(pi) + list(pj) + list(w)
        vals += list(ui_c) + list(uj_c) + [wc] * npair
        rhs += list(const)
        r += npair
    a_ub = sparse.coo_matrix((vals, (rows, cols)), shape=(r, n + npair)).tocsr()
    corners = np.stack([ai * aj, ai * bj, bi * aj, bi * bj])
    bounds = list(zip(lo_u, hi_u, strict=True)) + list(zip(corners.min(0), corners.max(0), strict=True))
    out = linprog(np.zeros(n + npair), A_ub=a_ub, b_ub=np.array(rhs), bounds=bounds, method="highs")
    if out.status == 2:  # infeasible
        return None
    return out.x[:n] * c if out.status == 0 else (a + z) / 2.0


def nearest_levels(levels: list[np.ndarray], k: np.ndarray, lo: np.ndarray, hi: np.ndarray
                   ) -> np.ndarray:
    """Per unit, the level nearest to real k within the box's level range [lo, hi] (indices)."""
    out = np.empty(len(levels), np.int64)
    for i, lv in enumerate(levels):
        window = lv[lo[i]: hi[i] + 1]
        out[i] = window[np.abs(window - k[i]).argmin()]
    return out


def branch_and_bound(b: Bound, levels: list[np.ndarray], f: Forms, max_boxes: int = MAX_BOXES,
                     max_lp: int = MAX_LP) -> tuple[np.ndarray | None, bool, np.ndarray]:
    """Search the boxes of levels: (an in-band kept vector or None, whether every box closed,
    the LP solutions rounded to levels, as recipes: starts for the repair)."""
    n = b.n
    width = max(len(v) for v in levels)
    table = np.stack([np.concatenate([v, np.full(width - len(v), v[-1])]) for v in levels])
    units = np.arange(n)
    stack_lo = np.zeros((1, n), np.int64)
    stack_hi = np.array([[len(v) - 1 for v in levels]], np.int64)
    judged = lps = 0
    rounded: list[np.ndarray] = []

    def found(kept: np.ndarray | None, closed: bool) -> tuple[np.ndarray | None, bool, np.ndarray]:
        starts = recipes_of(b, np.array(rounded)) if rounded else np.empty((0, n))
        return kept, closed, starts

    while len(stack_lo):
        if judged >= max_boxes:
            return found(None, False)
        lo, hi = stack_lo[-BOX_BATCH:], stack_hi[-BOX_BATCH:]
        stack_lo, stack_hi = stack_lo[:-BOX_BATCH], stack_hi[:-BOX_BATCH]
        judged += len(lo)
        a, z = table[units, lo], table[units, hi]
        keep = ~refuted(f, a.astype(np.float64), z.astype(np.float64))
        point = keep & (lo == hi).all(1)
        hits = np.flatnonzero(point)[in_band(b, a[point])] if point.any() else []
        if len(hits):
            return found(a[hits[0]], False)
        open_ = np.flatnonzero(keep & ~point)
        big = np.prod(hi - lo + 1, axis=1, dtype=np.float64) >= LP_MIN_POINTS
        for row in open_[big[open_]][: max(max_lp - lps, 0)]:
            lps += 1
            k = lp_relaxation(b, f, a[row].astype(np.float64), z[row].astype(np.float64))
            if k is None:
                keep[row] = False
                continue
            kept = nearest_levels(levels, k, lo[row], hi[row])
            if in_band(b, kept[None])[0]:
                return found(kept, False)
            rounded.append(kept)
        open_ = open_[keep[open_]]
        if not len(open_):
            continue
        lo, hi = lo[open_], hi[open_]
        span = (table[units, hi] - table[units, lo]) * f.weight
        split = span.argmax(1)
        rows = np.arange(len(open_))
        mid = (lo[rows, split] + hi[rows, split]) // 2
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[rows, split] = mid
        right_lo[rows, split] = mid + 1
        stack_lo = np.concatenate([stack_lo, right_lo, lo])
        stack_hi = np.concatenate([stack_hi, hi, left_hi])
    return found(None, True)


def _kept_of(b: Bound, r: np.ndarray) -> np.ndarray:
    """Kept counts of recipes r (M, N) under the bound's steps."""
    return kept_channels(b.cost.channels, r, b.rt)


def many_starts(b: Bound, rng: np.random.Generator) -> np.ndarray:
    """Start recipes for the repair beyond the neutral one: random and extreme genotypes through
    the space's map, tilted recipes (both ends of the second band's reach), uniform random
    ratios, every unit at 0 and every unit at r_max."""
    n, g = b.n, b.n_genes
    more = [continuous(b, np.concatenate([rng.random((24, g)), np.zeros((1, g)), np.ones((1, g))]), 1.0),
            continuous(b, rng.random((8, g)), 0.5),
            tilt_one(b, rng.random((8, n)), b.target),
            rng.uniform(0.0, b.space.r_max, (8, n)),
            np.zeros((1, n)), np.full((1, n), b.space.r_max)]
    if b.space.c_mcb is not None or b.space.kind == "flops+params":
        ladder = np.linspace(-b.tilt_max, b.tilt_max, 9)
        more.append(tilt_pair(b, np.full((9, n), 0.5), ladder))
        more.append(tilt_pair(b, rng.random((9, n)), ladder))
    return np.concatenate(more)


def search(b: Bound, starts: np.ndarray) -> np.ndarray:
    """In-band recipes the greedy repair reaches from `starts` (empty (0, N) if none)."""
    fixed, ok = repair(b, starts)
    return np.unique(fixed[ok], axis=0)[:MAX_ANCHORS]


def explore(b: Bound, enum_limit: int = ENUM_LIMIT, max_boxes: int = MAX_BOXES,
            max_lp: int = MAX_LP) -> Reach:
    """Witnesses of the bound space, or a proof that it is empty, or neither (see the module)."""
    b = replace(b, reach=None)  # the greedy repair alone: no walk toward earlier witnesses
    levels = all_levels(b)
    none = np.empty((0, b.n))
    if math.prod(len(v) for v in levels) <= enum_limit:
        inside, primary = enumerate_inside(b, levels)
        if len(inside):
            return Reach(_anchors(b, spread(inside, MAX_ANCHORS)), False, "enumeration")
        lo, hi = (b.lo, b.hi) if not b.use_params else (b.target, b.target)
        below, above = primary[primary < lo], primary[primary > hi]
        nearest = (float(below.max()) if len(below) else math.nan,
                   float(above.min()) if len(above) else math.nan)
        return Reach(none, True, "enumeration", nearest)
    found = search(b, continuous(b, np.full((1, b.n_genes), 0.5), 1.0))  # as cheap as before
    if len(found):
        return Reach(found, False, "search")
    f = forms(b)
    a = np.array([v[0] for v in levels], np.float64)[None]
    z = np.array([v[-1] for v in levels], np.float64)[None]
    if refuted(f, a, z)[0]:
        return Reach(none, True, "interval")
    kept, closed, lp_starts = branch_and_bound(b, levels, f, max_boxes, max_lp)
    if kept is not None:
        return Reach(_anchors(b, kept[None]), False, "branch and bound")
    if closed:
        return Reach(none, True, "branch and bound")
    found = search(b, np.concatenate([many_starts(b, np.random.default_rng(0)), lp_starts]))
    return Reach(found, False, "search") if len(found) else Reach(none, False, "undecided")


def _anchors(b: Bound, kept: np.ndarray) -> np.ndarray:
    """Recipes keeping `kept` (M, N), those that round back to it and lie in every band."""
    r = recipes_of(b, kept)
    ok = (_kept_of(b, r) == kept).all(1) & in_band(b, kept)
    return r[ok]
